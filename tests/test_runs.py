"""Starting a run: the profile switch, parameters from the command line, nothing written before the data is found,
no accidental overwrite, one writer per folder (OS locks), what a finished model keeps, make run's plan, and the git
filter that keeps saved notebooks clean."""
import json
import os
import re
import subprocess
import sys
import time

import papermill
import pytest
import torch

from conftest import ROOT
from lib import cifar, config, files, models, nbclean, predict, profiles, runbook, search, train, utils

NB03 = ROOT / "notebooks" / "03_cifar10_resnet.ipynb"
STEM03 = "03_cifar10_resnet"


# ---------------------------------------------------------------- parameters

def test_list_and_dict_parameters_given_as_strings_are_parsed():
    ns = {"models": '["two_layer", "resnet34"]', "space": "{stages: [2, 3]}", "name": "[not a list]", "In": []}
    cfg = config.build_cfg(ns, {"models": list, "space": dict, "name": str})
    assert cfg == {"models": ["two_layer", "resnet34"], "space": {"stages": [2, 3]}, "name": "[not a list]"}


def test_a_list_parameter_that_is_not_a_list_says_how_to_pass_one():
    with pytest.raises(ValueError, match=r"'models' = 'two_layer' should be of type list.*-p passes a string.*-y.*-f"):
        config.build_cfg({"models": "two_layer", "In": []}, {"models": list})


def test_profile_fills_in_its_file_and_explicit_values_win():
    ns = {"profile": "demo", "epochs": 7, "val_size": 5000, "out_dir": "mine", "data_dir": "data/cifar10",
          "In": ["", '# Parameters\nprofile = "demo"\nout_dir = "mine"\n', "apply_profile(...)"]}
    applied = profiles.apply_profile(ns, STEM03)
    assert ns["data_dir"] == "data/demo/cifar10" and ns["val_size"] == 500  # from configs/03_cifar10_resnet/demo.yaml
    assert ns["out_dir"] == "mine"  # injected by papermill
    assert ns["epochs"] == 7  # differs from the notebook's default (an edit, or an injection nbval cannot show)
    assert "out_dir" not in applied and "epochs" not in applied


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ValueError, match=r"profile='dmeo'.*Choose one of \['full', 'cpu', 'demo', 'smoke'\]"):
        profiles.apply_profile({"profile": "dmeo"}, STEM03)
    assert profiles.apply_profile({"profile": "full"}, STEM03) == {}


# ---------------------------------------------------------------- notebook 03 through papermill

def _papermill(out_dir, tmp_path, name="out", **parameters):
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
    err = _papermill(out_dir, tmp_path, profile="full", device="cpu", data_dir=str(tmp_path / "cifar10"))
    assert err is not None and err.ename == "FileNotFoundError"
    assert re.search(r"no CIFAR-10 batches under .*\. To run on lib\.demo's data instead: profile = \"demo\"", err.evalue)
    assert not out_dir.exists(), "nothing may be written before the data is found"


def test_a_second_run_into_the_same_out_dir_is_refused_before_anything_is_written(demo_root, tmp_path):
    out_dir = tmp_path / "run"
    assert _papermill(out_dir, tmp_path, "first") is None
    best = out_dir / "checkpoints" / "best.pt"
    before = (best.stat().st_mtime_ns, best.read_bytes())
    cfg_before = (out_dir / "cfg.json").read_bytes()
    err = _papermill(out_dir, tmp_path, "second", seed=1)
    assert err is not None and err.ename == "FileExistsError"
    assert "already holds a run" in err.evalue and "nothing was written" in err.evalue
    assert all(way in err.evalue for way in ("resume=True", "another out_dir", "overwrite=True"))
    assert (best.stat().st_mtime_ns, best.read_bytes()) == before and (out_dir / "cfg.json").read_bytes() == cfg_before


def _hold_lock(path, tmp_path):
    """A process holding lock_file(path) until killed; returns (process, its pid) once it holds it."""
    ready = tmp_path / f"ready-{os.path.basename(path)}"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from lib import files; "
            f"files.lock_file({str(path)!r}, 'test'); open({str(ready)!r}, 'w').close(); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the lock holder did not start"
        time.sleep(0.05)
    return proc


def test_a_run_into_a_locked_out_dir_stops_at_once_naming_the_holder(demo_root, tmp_path):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    holder = _hold_lock(out_dir / ".lock", tmp_path)
    try:
        err = _papermill(out_dir, tmp_path)
        assert err is not None and err.ename == "RuntimeError"
        assert f"in use by another process (pid {holder.pid}" in err.evalue
        assert not (out_dir / "cfg.json").exists()
    finally:
        holder.kill()
        holder.wait()
    files.lock_file(out_dir / ".lock", "test")  # the holder died: its lock died with it, nothing stale is left
    files.unlock_file(out_dir / ".lock")


# ---------------------------------------------------------------- start_run, locks, checkpoints

def test_start_run_refuses_resumes_or_overwrites(tmp_path):
    out_dir = tmp_path / "run"
    utils.start_run({"seed": 0}, str(out_dir))
    (out_dir / "checkpoints").mkdir()
    (out_dir / "checkpoints" / "best.pt").write_text("old")
    with pytest.raises(FileExistsError, match="already holds a run"):
        utils.start_run({"seed": 1}, str(out_dir))  # the same process (a notebook run twice in one kernel) too
    assert json.loads((out_dir / "cfg.json").read_text()) == {"seed": 0}
    utils.start_run({"seed": 0}, str(out_dir), resume=True)
    assert (out_dir / "checkpoints" / "best.pt").exists()
    utils.start_run({"seed": 2}, str(out_dir), overwrite=True)
    assert not (out_dir / "checkpoints").exists() and json.loads((out_dir / "cfg.json").read_text()) == {"seed": 2}
    files.unlock_file(out_dir / ".lock")


def test_the_parameters_print_compactly(tmp_path, capsys):
    utils.start_run({"epochs": 3, "models": ["a", "b"], "lr": 0.1}, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "epochs=3  models=['a', 'b']  lr=0.1" in out and "{" not in out
    files.unlock_file(tmp_path / "run" / ".lock")


def test_a_second_prediction_into_the_same_file_stops_naming_the_first(tmp_path):
    out = tmp_path / "prediction.csv"
    holder = _hold_lock(files.lock_path_for(out), tmp_path)
    try:
        with pytest.raises(RuntimeError, match=rf"prediction file .*prediction.csv is in use.*pid {holder.pid}"):
            predict.predict_test_folder(tmp_path / "model.pt", tmp_path / "test", out)
    finally:
        holder.kill()
        holder.wait()


def test_a_second_search_into_the_same_trial_log_stops_naming_the_first(tmp_path):
    log = tmp_path / "trials.csv"
    holder = _hold_lock(files.lock_path_for(log), tmp_path)
    try:
        with pytest.raises(RuntimeError, match=rf"trial log .*trials.csv is in use.*pid {holder.pid}"):
            search.run_search([], {}, None, str(log))
    finally:
        holder.kill()
        holder.wait()
    assert search.run_search([], {}, None, str(log)) == []


def _tiny(seed=0):
    torch.manual_seed(seed)
    images, labels = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8), torch.arange(32) % 10
    model = models.CifarResNet((4, 8), (1, 1))
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    return model, torch.optim.AdamW(model.parameters(), lr=0.01), loader


def test_a_finished_model_keeps_best_weights_only_and_is_not_trained_again(tmp_path, capsys):
    model, optimizer, loader = _tiny()
    cfg = {"lr": 0.01, "epochs": 2}
    history = train.train_model(model, loader, loader, epochs=2, optimizer=optimizer, checkpoint_dir=tmp_path,
                                cfg=cfg, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", train.FINISHED]
    best = train.load_checkpoint(tmp_path / "best.pt")
    assert "model" in best and "optimizer" not in best and best["history"]["epoch"]
    model, optimizer, loader = _tiny(seed=1)
    again = train.train_model(model, loader, loader, epochs=2, optimizer=optimizer, checkpoint_dir=tmp_path,
                              cfg=cfg, resume=True, progress=False)
    assert again == json.loads(json.dumps(history)) and "not trained again" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), best["model"].values()))
    with pytest.raises(ValueError, match="cannot be extended to epochs=3"):
        train.train_model(model, loader, loader, epochs=3, optimizer=optimizer, checkpoint_dir=tmp_path,
                          cfg=dict(cfg, epochs=3), resume=True, progress=False)


# ---------------------------------------------------------------- make run's plan

def test_make_run_skips_finished_studies_resumes_partial_ones_and_fresh_overwrites(tmp_path):
    runs = tmp_path / "runs"
    params, skip = runbook.plan(str(NB03), "demo", str(runs))
    assert params == {"profile": "demo", "out_dir": str(runs / STEM03)} and skip is None
    (runs / STEM03).mkdir(parents=True)
    assert runbook.plan(str(NB03), "demo", str(runs))[0]["resume"] is True
    (runs / STEM03 / "metrics.json").write_text("{}")
    assert "finished earlier" in runbook.plan(str(NB03), "demo", str(runs))[1]
    assert runbook.plan(str(NB03), "demo", str(runs), fresh=True)[0]["overwrite"] is True
    report = ROOT / "notebooks" / "05_results_report.ipynb"
    assert runbook.plan(str(report), "demo", str(runs))[0]["runs_dir"] == str(runs)


# ---------------------------------------------------------------- saved notebooks and git

def _as_lab_saves_it(nb):
    """What JupyterLab writes after Run All and Save: outputs, counts, ids, widget state, nbformat 4.5."""
    saved = json.loads(json.dumps(nb))
    for i, cell in enumerate(saved["cells"]):
        cell["id"] = f"cell-{i}"
        if cell["cell_type"] == "code":
            cell["execution_count"] = i
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
            cell["metadata"]["scrolled"] = True
    saved["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    saved["metadata"]["language_info"].update(version="3.11.7", mimetype="text/x-python")
    saved["nbformat_minor"] = 5
    return json.dumps(saved, indent=1, sort_keys=True)


def test_the_clean_filter_gives_back_the_committed_notebook(tmp_path):
    committed = NB03.read_text()
    result = subprocess.run([sys.executable, str(ROOT / "lib" / "nbclean.py")], input=_as_lab_saves_it(json.loads(committed)),
                            capture_output=True, text=True, check=True)
    assert result.stdout == committed
    assert nbclean.dumps(nbclean.clean(json.loads(committed))) == committed


def test_a_saved_notebooks_outputs_never_reach_git(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / ".gitattributes").write_text((ROOT / ".gitattributes").read_text())
    (repo / "notebooks" / NB03.name).write_text(NB03.read_text())
    filter_cmd = f"{sys.executable} {ROOT / 'lib' / 'nbclean.py'}"
    git = ["git", "-c", f"filter.nbclean.clean={filter_cmd}", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=repo, check=True)
    (repo / "notebooks" / NB03.name).write_text(_as_lab_saves_it(json.loads(NB03.read_text())))
    # git lists a file whose size changed until its stat is refreshed; the content it would commit is unchanged
    assert subprocess.run(git + ["diff", "--quiet"], cwd=repo).returncode == 0
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    status = subprocess.run(git + ["status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    assert status.stdout == "", "a saved notebook's outputs would be committed"
