"""lib.publish: the reference results copied without checkpoints."""
import os
import shutil

import pytest

from lib import publish

TOLERANCES = ("03_cifar10_resnet:\n  test_acc: 0.02\n  best_val_acc: 0.02\n"
              "04_cifar10_random_search:\n  retrain_test_acc: 0.03\n")


def make_run(root):
    """A finished run folder: metrics, a figure, a checkpoint, a lock file."""
    study = root / "03_cifar10_resnet"
    os.makedirs(study / "checkpoints")
    (study / "metrics.json").write_text("{}")
    (study / "learning_curves.png").write_bytes(b"png")
    (study / "checkpoints" / "best.pt").write_bytes(b"0" * 1000)
    (study / ".lock").write_text("")
    (root / "03_cifar10_resnet.ipynb").write_text("{}")
    return str(root)


def test_publish_keeps_results_not_checkpoints_and_keeps_tolerances(tmp_path):
    runs, results = make_run(tmp_path / "runs"), tmp_path / "results"
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
    runs, results = make_run(tmp_path / "runs"), tmp_path / "results"
    os.makedirs(results)
    (results / "old.json").write_text("{}")
    with pytest.raises(SystemExit, match="over the 1e-06 MB limit"):
        publish.publish(runs, str(results), limit_mb=1e-6)
    assert os.listdir(results) == ["old.json"] and sorted(os.listdir(tmp_path)) == ["results", "runs"]


def test_publish_refuses_unfinished_studies(tmp_path):
    runs = make_run(tmp_path / "runs")
    with pytest.raises(SystemExit, match="no metrics.json for 04_cifar10_random_search"):
        publish.check_finished(runs, ["03_cifar10_resnet", "04_cifar10_random_search"])
