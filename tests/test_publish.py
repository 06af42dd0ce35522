"""lib.publish: the reference results copied without checkpoints."""
import json
import os
import shutil

import pytest

from conftest import run_folder
from lib import publish

TOLERANCES = ("03_cifar10_resnet:\n  test_acc: 0.02\n  best_val_acc: 0.02\n"
              "04_cifar10_random_search:\n  retrain_test_acc: 0.03\n")


def test_publish_keeps_results_not_checkpoints_and_keeps_tolerances(tmp_path):
    runs, results = str(run_folder(tmp_path / "runs")), tmp_path / "results"
    os.makedirs(tmp_path / "runs" / "stale")
    (tmp_path / "runs" / "stale" / "old.json").write_text("{}")
    publish.publish(runs, str(results))  # the first publish: its files, stale/old.json among them, are its own
    shutil.rmtree(tmp_path / "runs" / "stale")
    (results / "tolerances.yaml").write_text(TOLERANCES)  # written by hand: publish keeps it
    files, _ = publish.publish(runs, str(results))
    assert sorted(files) == ["03_cifar10_resnet.ipynb", "03_cifar10_resnet/learning_curves.png",
                             "03_cifar10_resnet/metrics.json"]
    assert sorted(os.listdir(results)) == [".published.json", "03_cifar10_resnet", "03_cifar10_resnet.ipynb",
                                           "tolerances.yaml"]
    assert (results / "tolerances.yaml").read_text() == TOLERANCES


def test_publish_over_the_limit_leaves_old_results(tmp_path):
    runs, results = str(run_folder(tmp_path / "runs")), tmp_path / "results"
    os.makedirs(results)
    (results / "old.json").write_text("{}")
    with pytest.raises(SystemExit, match="over the 1e-06 MB limit"):
        publish.publish(runs, str(results), limit_mb=1e-6)
    assert os.listdir(results) == ["old.json"] and sorted(os.listdir(tmp_path)) == ["results", "runs"]


def test_publish_refuses_unfinished_studies(tmp_path):
    runs = str(run_folder(tmp_path / "runs"))
    with pytest.raises(SystemExit, match="no metrics.json for 04_cifar10_random_search"):
        publish.check_finished(runs, ["03_cifar10_resnet", "04_cifar10_random_search"])


def make_run_with_paths(tmp_path):
    """A run whose notebook and metrics name its checkout and its home folder by absolute path, and a figure."""
    checkout, home = tmp_path / "checkout", tmp_path / "home" / "ana"
    runs = checkout / "runs" / "cpu"
    os.makedirs(runs / "03_cifar10_resnet")
    (runs / "03_cifar10_resnet.ipynb").write_text(
        f'{{"text": "outputs -> {checkout}/runs/cpu/03_cifar10_resnet", "cache": "{home}/.cache/torch/r.pth"}}\n')
    (runs / "03_cifar10_resnet" / "metrics.json").write_text(f'{{"runs_dir": "{checkout}/runs/cpu"}}\n')
    (runs / "03_cifar10_resnet" / "curves.png").write_bytes(f"png {checkout}".encode())
    return str(runs), publish.machine_prefixes(str(checkout), str(home))


def test_publish_writes_paths_relative_to_the_checkout_and_home(tmp_path):
    runs, prefixes = make_run_with_paths(tmp_path)
    results = tmp_path / "results"
    publish.publish(runs, str(results), prefixes=prefixes)
    assert json.loads((results / "03_cifar10_resnet.ipynb").read_text()) == {
        "text": "outputs -> runs/cpu/03_cifar10_resnet", "cache": "~/.cache/torch/r.pth"}
    assert json.loads((results / "03_cifar10_resnet" / "metrics.json").read_text()) == {"runs_dir": "runs/cpu"}
    assert (results / "03_cifar10_resnet" / "curves.png").read_bytes().startswith(b"png /")  # binary: as it was


def test_publish_refuses_a_path_of_the_machine_it_cannot_rewrite(tmp_path):
    runs, prefixes = make_run_with_paths(tmp_path)
    log = tmp_path / "checkout" / "runs" / "cpu" / "03_cifar10_resnet" / "log.txt"
    for line, found in (("saved /home/bob/x.pt", "/home/bob/x.pt"), ("from /srv/old-clone/runs/cpu", "/srv/old-clone")):
        log.write_text(f"a\n{line}\nsee https://example.org/data/x\n")
        with pytest.raises(SystemExit, match=f"03_cifar10_resnet/log.txt:2: {found}"):
            publish.publish(runs, str(tmp_path / "results"), prefixes=prefixes)
        assert not os.path.exists(tmp_path / "results")


def test_relativize_rewrites_published_files_in_place_and_keeps_the_rest(tmp_path):
    runs, prefixes = make_run_with_paths(tmp_path)
    results = tmp_path / "results"
    shutil.copytree(runs, results)  # what an earlier publish wrote: absolute paths copied as they were
    (results / publish.MANIFEST).write_text(json.dumps({"files": publish.publishable_files(runs)}))
    assert str(tmp_path / "checkout") in (results / "03_cifar10_resnet.ipynb").read_text()
    hand_written = f"# measured on {tmp_path}/checkout\n"
    (results / "tolerances.yaml").write_text(hand_written)
    changed = publish.relativize(str(results), prefixes)
    assert changed == ["03_cifar10_resnet.ipynb", "03_cifar10_resnet/metrics.json"]
    assert "outputs -> runs/cpu/03_cifar10_resnet" in (results / "03_cifar10_resnet.ipynb").read_text()
    assert (results / "tolerances.yaml").read_text() == hand_written  # not publish's: never rewritten
    assert publish.relativize(str(results), prefixes) == []  # a second pass finds nothing to do


def test_relativize_refuses_a_folder_publish_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("/home/ana/x\n")
    with pytest.raises(SystemExit, match="publish did not write"):
        publish.relativize(str(tmp_path), publish.machine_prefixes("/work/x", "/home/ana"))
    assert (tmp_path / "notes.txt").read_text() == "/home/ana/x\n"
