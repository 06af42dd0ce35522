"""Notebook 03 (CifarResNet on CIFAR-10) run by papermill: its smoke run, bad parameters and inputs refused
before training, out_dir guards, an exported design."""
import concurrent.futures
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import papermill
import pytest

from conftest import ROOT, cifar_copy, hold_lock, papermill_error, relabel, run_on_smoke_parameters
from lib import cifar, files, results, search, writeups

pytestmark = pytest.mark.slow  # every test here executes the notebook


@pytest.fixture(scope="module")
def refused_runs(demo_root, tmp_path_factory):
    """Notebooks 02 and 03 given each bad input the issue found, all at once (each should stop before training)."""
    base = tmp_path_factory.mktemp("refused")
    relabeled = base / "cifar"
    relabel(cifar_copy(demo_root, relabeled), "data_batch_3", lambda y: y.__setitem__(slice(0, None, 10), 10))
    duplicated = base / "duplicated.pkl"
    pkl = cifar.safe_unpickle(demo_root / "cifar10" / "cifar_test_nolabels.pkl", encoding="bytes")
    pkl[b"ids"] = np.zeros(len(pkl[b"ids"]), np.int64)
    duplicated.write_bytes(pickle.dumps(pkl, protocol=4))
    (base / "empty_test").mkdir()
    cases = {"edge_values": ("03_cifar10_resnet", {"val_size": 0, "batch_size": 0, "epochs": 0, "lr": -0.1}),
             "bad_labels": ("03_cifar10_resnet", {"data_dir": str(relabeled)}),
             "duplicated_ids": ("03_cifar10_resnet", {"test_pickle": str(duplicated)}),
             "empty_test_dir": ("02_resnet50_cbam_100class", {"test_dir": str(base / "empty_test")})}
    outs = {name: tmp_path_factory.mktemp(name) for name in cases}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        mp.chdir(ROOT)  # the smoke configs' data paths are relative to the repository
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {name: pool.submit(papermill_error, stem, outs[name], p) for name, (stem, p) in cases.items()}
            return {name: (f.result(), outs[name]) for name, f in futures.items()}


@pytest.mark.notebook
def test_edge_values_are_refused_by_the_parameter_check(refused_runs):
    err, out = refused_runs["edge_values"]
    assert err is not None and err.ename == "ValueError"
    for line in ("'val_size' = 0 should be >= 1", "'batch_size' = 0 should be >= 1", "'epochs' = 0 should be >= 1",
                 "'lr' = -0.1 should be > 0"):
        assert line in err.evalue
    assert not (out / "run").exists()  # stopped before anything was written


@pytest.mark.notebook
@pytest.mark.parametrize("case, message", [
    ("bad_labels", r"data_batch_3: \d+ of \d+ labels are outside 0\.\.9"),
    ("duplicated_ids", r"duplicated\.pkl: 1 ids occur more than once"),
    ("empty_test_dir", r"test folder .*empty_test.* holds no images"),
])
def test_bad_inputs_stop_the_notebook_before_training(refused_runs, case, message):
    err, out = refused_runs[case]
    assert err is not None and re.search(message, err.evalue), err and err.evalue
    assert not (out / "run" / "checkpoints").exists()  # stopped before training (the run folder may exist: the


NB03 = ROOT / "notebooks" / "03_cifar10_resnet.ipynb"


def _papermill_error(out, parameters):
    """Run notebook 03 with papermill until it fails; return the PapermillExecutionError (or None)."""
    parameters = {"out_dir": str(out / "run"), "device": "cpu", **parameters}
    try:
        papermill.execute_notebook(str(NB03), str(out / "out.ipynb"), parameters=parameters, log_output=False,
                                   progress_bar=False, cwd=str(out))
    except papermill.PapermillExecutionError as err:
        return err
    return None


@pytest.fixture(scope="module")
def papermill_failures(demo_root, tmp_path_factory):
    """Notebook 03 run by papermill with bad parameters, the three runs at once (each stops in its first cells)."""
    cases = {"wrong_type": {"epochs": "ten"}, "unknown_name": {"epoch": 3},
             "over_budget": {"data_dir": str(demo_root / "cifar10"), "val_size": 200, "max_params": 1000}}
    outs = {name: tmp_path_factory.mktemp(name) for name in cases}
    with pytest.MonkeyPatch.context() as mp:
        # the kernels must import this checkout's lib
        mp.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
            futures = {name: pool.submit(_papermill_error, outs[name], p) for name, p in cases.items()}
            return {name: (f.result(), outs[name]) for name, f in futures.items()}


def test_papermill_parameter_of_the_wrong_type_is_named(papermill_failures):
    err, out = papermill_failures["wrong_type"]
    assert err is not None and err.ename == "ValueError"
    assert "parameter 'epochs' = 'ten' should be of type int" in err.evalue
    assert "Fix the value in papermill's -p/-f arguments" in err.evalue
    assert not (out / "run").exists()  # stopped before anything was written


def test_papermill_unknown_parameter_name_is_named(papermill_failures):
    err, _ = papermill_failures["unknown_name"]
    assert err is not None and err.ename == "ValueError" and "unknown parameter 'epoch'" in err.evalue
    assert "this notebook takes: profile, data_dir" in err.evalue and "epochs" in err.evalue


def test_model_over_the_parameter_budget_is_refused(papermill_failures):
    err, out = papermill_failures["over_budget"]
    assert err is not None and err.ename == "ValueError"
    count = writeups.figure("03", "parameters")  # notebook 03's default design is the write-up's
    assert re.search(rf"the model has {count:,} parameters, over max_params=1,000: use fewer channels", err.evalue)
    assert (out / "run" / "cfg.json").exists() and not (out / "run" / "checkpoints").exists()  # refused before training


def _papermill_03(out_dir, tmp_path, name="out", **parameters):
    """Run notebook 03 on the smoke profile; return the papermill error (None if it finished)."""
    try:
        papermill.execute_notebook(str(NB03), str(tmp_path / f"{name}.ipynb"), log_output=False, progress_bar=False,
                                   parameters={"profile": "smoke", "out_dir": str(out_dir), **parameters})
    except papermill.PapermillExecutionError as err:
        return err
    return None


def test_missing_data_names_the_switch_first_and_writes_nothing(tmp_path):
    out_dir = tmp_path / "run"
    # the full profile's data_dir, pointed at an empty folder: this checkout may hold the real CIFAR-10 in data/
    err = _papermill_03(out_dir, tmp_path, profile="full", device="cpu", data_dir=str(tmp_path / "cifar10"))
    assert err is not None and err.ename == "FileNotFoundError"
    assert re.search(r"no CIFAR-10 batches under .*\. To run on lib\.demo's data instead: profile = \"demo\"",
                     err.evalue)
    assert not out_dir.exists(), "nothing may be written before the data is found"


def test_a_second_run_into_the_same_out_dir_is_refused_before_anything_is_written(demo_root, tmp_path):
    out_dir = tmp_path / "run"
    assert _papermill_03(out_dir, tmp_path, "first") is None
    best = out_dir / "checkpoints" / "best.pt"
    before = (best.stat().st_mtime_ns, best.read_bytes())
    cfg_before = (out_dir / "cfg.json").read_bytes()
    err = _papermill_03(out_dir, tmp_path, "second", seed=1)
    assert err is not None and err.ename == "FileExistsError"
    assert "already holds a run" in err.evalue and "nothing was written" in err.evalue
    assert all(way in err.evalue for way in ("resume=True", "another out_dir", "overwrite=True"))
    assert (best.stat().st_mtime_ns, best.read_bytes()) == before and (out_dir / "cfg.json").read_bytes() == cfg_before


def test_a_run_into_a_locked_out_dir_stops_at_once_naming_the_holder(demo_root, tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    holder = hold_lock(out_dir / ".lock", tmp_path)
    try:
        err = _papermill_03(out_dir, tmp_path)
        assert err is not None and err.ename == "RuntimeError"
        assert f"in use by another process (pid {holder.pid}" in err.evalue
        assert not (out_dir / "cfg.json").exists()
    finally:
        holder.kill()
        holder.wait()
    files.lock_file(out_dir / ".lock", "test")  # the holder died: its lock died with it, nothing stale is left
    files.unlock_file(out_dir / ".lock")


@pytest.mark.notebook
def test_notebook_03_runs_with_an_exported_design(demo_root, tmp_path):
    """`papermill 03 -f smoke.yaml -f best_config.yaml` trains exactly the exported design."""
    design = {"channels": [8, 16], "blocks": [1, 1], "conv_kernels": [3, 3], "skip_kernels": [3, 1],
              "pool_kernel": 4, "dropout": 0.0}
    config = search.export_design(tmp_path / "best_config.yaml", design)
    out_dir = tmp_path / "run03"
    result = subprocess.run([sys.executable, "-m", "papermill", "--log-level", "WARNING", str(NB03),
                             str(tmp_path / "03.ipynb"), "-f", str(ROOT / "configs/03_cifar10_resnet/smoke.yaml"),
                             "-f", str(config), "-p", "out_dir", str(out_dir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = results.read(out_dir)
    assert {k: saved.cfg[k] for k in design} == design
    assert saved.models["cifar_resnet"].parameters == search.parameter_count(design)


@pytest.mark.notebook
def test_notebook_runs_on_smoke_parameters(demo_root, smoke_runs, tmp_path):
    run_on_smoke_parameters("03_cifar10_resnet", smoke_runs, tmp_path)
