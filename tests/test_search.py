"""Unit tests of lib.search: the sampler, the parameter formula, rejection before training, the trial log and
resume, the export to notebook 03 (its run: test_nb03.py), one writer per trial log, and the Ray backend (skipped
when ray is not installed)."""
import contextlib
import dataclasses
import json
import random
import signal
import sys
import time
import typing

import papermill
import pytest
import torch
import yaml

from conftest import ROOT, hold_lock
from lib import config, files, models, search, search_ray, utils, writeups

# 1-2 stages of 4-8 channels: trials train in a fraction of a second. With max_params=20_000 a 1-stage design with
# 1 x 1 pooling (a head over 32 x 32 x C features) is over budget, and pool 32 does not fit a 2-stage design's 16 x 16.
TINY_SPACE = {"stages": [1, 2], "first_channels": [4, 8], "channel_growth": [2], "blocks": [1, 2],
              "conv_kernels": [3], "skip_kernels": [1, 3], "pool_kernel": [1, 2, 32], "dropout": [0.0, 0.1]}


TINY_BUDGET = 20_000


# everything the formula has to get right: 1-5 stages, odd kernels 1-7, growth 1 (no projection), odd widths, pools
WIDE_SPACE = {"stages": [1, 2, 3, 4, 5], "first_channels": [3, 4, 8, 12], "channel_growth": [1, 1.5, 2],
              "blocks": [1, 2, 3], "conv_kernels": [1, 3, 5, 7], "skip_kernels": [1, 3, 5],
              "pool_kernel": [None, 1, 2, 3, 4, 8], "dropout": [0.0, 0.2]}


SETTINGS = search.TrialSettings(epochs=1, batch_size=16, lr=0.05, momentum=0.9, weight_decay=5e-4, seed=0,
                                max_steps_per_epoch=2, num_classes=10, input_size=32, device="cpu", amp=None,
                                compile=None)


NB03 = ROOT / "notebooks" / "03_cifar10_resnet.ipynb"


@pytest.fixture(scope="module")
def tiny_tensors():
    """48 training and 32 validation images of noise: enough to run trials, not to learn anything."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (80, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (80,), generator=g)
    return images[:48], labels[:48], images[48:], labels[48:]


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_formula_gives_notebook_03s_design_the_write_ups_count():
    design = {"channels": [32, 64, 128], "blocks": [4, 4, 3], "conv_kernels": [3, 3, 3], "skip_kernels": [1, 1, 1],
              "pool_kernel": None, "dropout": 0.1}
    assert search.parameter_count(design) == writeups.figure("03", "parameters")


def test_formula_matches_numel_for_many_random_designs():
    rng, checked = random.Random(0), 0
    for _ in range(300):
        design = search.sample_design(WIDE_SPACE, rng)
        num_classes, size = rng.choice([10, 100]), rng.choice([32, 64])
        if search.infeasibility(design, float("inf"), num_classes, size):
            continue
        model = models.CifarResNet(**design, num_classes=num_classes, input_size=size)
        assert search.parameter_count(design, num_classes, size) == sum(p.numel() for p in model.parameters()), design
        checked += 1
    assert checked > 200


def test_every_feasible_design_runs_forward():
    trials, _ = search.plan_trials(WIDE_SPACE, 12, seed=3, max_params=300_000)
    for t in trials:
        model = models.CifarResNet(**t["design"]).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10), t["design"]


def test_plan_is_fixed_by_seed_and_respects_the_constraints():
    trials, rejected = search.plan_trials(TINY_SPACE, 6, seed=1, max_params=TINY_BUDGET)
    assert (trials, rejected) == search.plan_trials(TINY_SPACE, 6, seed=1, max_params=TINY_BUDGET)
    assert trials != search.plan_trials(TINY_SPACE, 6, seed=2, max_params=TINY_BUDGET)[0]
    assert [t["trial"] for t in trials] == list(range(6))
    for t in trials:
        design = t["design"]
        assert t["params"] <= TINY_BUDGET
        assert design["pool_kernel"] <= search.feature_map_size(len(design["channels"]))
    assert len({str(t["design"]) for t in trials}) == 6, "a design was planned twice"
    counts = search.skip_counts(rejected)
    assert counts["too_many_params"] > 0 and counts["pool_too_large"] > 0
    assert all(r["params"] > TINY_BUDGET for r in rejected if r["reason"] == "too_many_params")
    # asking for more trials extends the same plan
    assert search.plan_trials(TINY_SPACE, 8, seed=1, max_params=TINY_BUDGET)[0][:6] == trials


def test_infeasible_designs_are_rejected_before_any_model_is_built(monkeypatch, tiny_tensors, tmp_path):
    built, real = [], models.CifarResNet

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        built.append((kwargs, utils.count_parameters(model)))
        return model

    monkeypatch.setattr(models, "CifarResNet", spy)
    trials, rejected = search.plan_trials(TINY_SPACE, 3, seed=0, max_params=TINY_BUDGET)
    assert built == [] and len(rejected) > 0, "planning must not build models"
    search.run_search(trials, SETTINGS, tiny_tensors, tmp_path / "trials.csv", progress=False)
    assert len(built) == 3
    for kwargs, params in built:
        assert params <= TINY_BUDGET
        assert kwargs["pool_kernel"] <= search.feature_map_size(len(kwargs["channels"]))


def test_an_impossible_space_fails_clearly():
    with pytest.raises(ValueError, match="feasible designs"):
        search.plan_trials(TINY_SPACE, 2, seed=0, max_params=100)
    with pytest.raises(ValueError, match="even kernel"):
        search.plan_trials({**TINY_SPACE, "conv_kernels": [2]}, 2, seed=0, max_params=TINY_BUDGET)
    with pytest.raises(ValueError, match="missing keys"):
        search.check_space({"stages": [2]})


def test_trial_log_reads_back_exactly(tmp_path):
    row = {"trial": 0, "stages": 2, "first_channels": 4, "channels": [4, 8], "blocks": [1, 2], "conv_kernels": [3, 3],
           "skip_kernels": [1, 3], "pool_kernel": None, "dropout": 0.1, "params": 1234, "val_acc": 1 / 3,
           "train_loss": 2.302585092994046, "epochs": 1, "stopped_early": False, "seconds": 0.1 + 0.2, "key": "abc"}
    other = {**row, "trial": 1, "pool_kernel": 2, "stopped_early": True}
    search.write_trials(tmp_path / "trials.csv", [other, row])
    assert search.read_trials(tmp_path / "trials.csv") == [row, other]
    frame = search.trials_frame([row, other])
    assert frame["pool_kernel"].tolist() == [None, 2]  # not NaN and 2.0
    assert frame["stopped_early"].tolist() == [False, True]


def test_a_log_from_before_stopped_early_still_reads(tmp_path):
    """A search logged before the column existed resumes: its rows ran every epoch."""
    log = tmp_path / "trials.csv"
    row = {"trial": 0, "stages": 1, "first_channels": 4, "channels": [4], "blocks": [1], "conv_kernels": [3],
           "skip_kernels": [1], "pool_kernel": 2, "dropout": 0.0, "params": 99, "val_acc": 0.5, "train_loss": 1.5,
           "epochs": 2, "stopped_early": False, "seconds": 1.0, "key": "abc"}
    search.write_trials(log, [row])
    lines = log.read_text().splitlines()
    at = lines[0].split(",").index("stopped_early")
    log.write_text("".join(",".join(c for i, c in enumerate(line.split(",")) if i != at) + "\n" for line in lines))
    assert "stopped_early" not in log.read_text()
    assert search.read_trials(log) == [row]


def test_interrupted_search_resumes_to_the_same_table(tiny_tensors, tmp_path):
    trials, _ = search.plan_trials(TINY_SPACE, 4, seed=0, max_params=TINY_BUDGET)
    uninterrupted = search.run_search(trials, SETTINGS, tiny_tensors, tmp_path / "a" / "trials.csv", progress=False)
    log, ran = tmp_path / "b" / "trials.csv", []

    def crashing(design, settings, tensors):
        if len(ran) == 2:
            raise KeyboardInterrupt  # the job is killed during the third trial
        ran.append(design)
        return search.train_trial(design, settings, tensors)

    with pytest.raises(KeyboardInterrupt):
        search.run_search(trials, SETTINGS, tiny_tensors, log, trial_fn=crashing, progress=False)
    assert [r["trial"] for r in search.read_trials(log)] == [0, 1]
    ran.clear()

    def counting(design, settings, tensors):
        ran.append(design)
        return search.train_trial(design, settings, tensors)

    resumed = search.run_search(trials, SETTINGS, tiny_tensors, log, resume=True, trial_fn=counting, progress=False)
    assert ran == [t["design"] for t in trials[2:]], "finished trials must be skipped"
    assert without_seconds(resumed) == without_seconds(uninterrupted)
    assert search.read_trials(log) == resumed


def test_resume_refuses_a_log_of_another_search(tiny_tensors, tmp_path):
    trials, _ = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)
    log = tmp_path / "trials.csv"
    search.run_search(trials, SETTINGS, tiny_tensors, log, progress=False)
    other = dataclasses.replace(SETTINGS, lr=0.01)
    with pytest.raises(ValueError, match="different search"):
        search.run_search(trials, other, tiny_tensors, log, resume=True, progress=False)
    rows = search.run_search(trials, other, tiny_tensors, log, resume=False, progress=False)
    assert search.read_trials(log) == rows


def _annotation(type_name):
    """papermill's inferred type name ('list', 'Optional[int]') back to the annotation notebook 03 declares."""
    return eval(type_name, {"Optional": typing.Optional, "list": list, "dict": dict, "int": int, "float": float,
                            "str": str, "bool": bool})


def test_exported_design_uses_only_notebook_03_parameters_with_their_types(tmp_path):
    design = {"channels": [8, 16, 32], "blocks": [2, 1, 1], "conv_kernels": [3, 5, 3], "skip_kernels": [1, 3, 1],
              "pool_kernel": None, "dropout": 0.1}
    path = search.export_design(tmp_path / "best_config.yaml", {**design, "params": 1}, "trial 3\nval acc 0.5")
    exported = yaml.safe_load(open(path))
    assert exported == design
    declared = {p["name"]: p for p in papermill.inspect_notebook(str(NB03)).values()}
    for name, value in exported.items():
        assert name in declared, f"notebook 03 has no parameter {name!r}"
        assert config._type_ok(value, _annotation(declared[name]["inferred_type_name"])), (name, value)


def test_ray_backend_without_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what a missing package looks like to `import`
    with pytest.raises(ImportError, match=r"pip install -e \.\[ray\]"):
        search_ray.import_ray()


def test_unknown_backend_is_refused(tiny_tensors, tmp_path):
    trials, _ = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)
    with pytest.raises(ValueError, match="backend"):
        search.run_search(trials, SETTINGS, tiny_tensors, tmp_path / "t.csv", backend="dask", progress=False)


def test_asha_is_refused_by_the_local_backend_before_any_trial(tiny_tensors, tmp_path):
    trials, _ = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)
    with pytest.raises(ValueError, match=r"scheduler='asha' needs backend='ray'.*scheduler='fifo'"):
        search.run_search(trials, SETTINGS, tiny_tensors, tmp_path / "t.csv", scheduler="asha", progress=False)
    assert not (tmp_path / "t.csv").exists()
    with pytest.raises(ValueError, match=r"scheduler='hyperband': use 'fifo'.*or 'asha'"):
        search.check_backend("ray", "hyperband")
    search.check_backend("ray", "asha")


def test_a_trial_reports_after_every_epoch(tiny_tensors):
    trials, _ = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)
    reports = []
    row = search.run_trial(trials[0], dataclasses.replace(SETTINGS, epochs=3), tiny_tensors, on_epoch=reports.append)
    assert [r["epochs"] for r in reports] == [1, 2, 3]
    accuracies = [r["val_acc"] for r in reports]
    assert accuracies == sorted(accuracies), "each report carries the best validation accuracy so far"
    assert all(r["key"] == row["key"] and r["params"] == row["params"] and not r["stopped_early"] for r in reports)
    assert without_seconds([reports[-1]]) == without_seconds([row])


def test_trials_compile_only_when_asked_the_retrain_as_the_notebook_says(monkeypatch, tiny_tensors):
    """compile=None (the notebook's "the device's best") would compile every trial on CUDA: a minute each."""
    monkeypatch.setattr(utils, "auto_flag", lambda value, device: True if value is None else value)  # as on CUDA
    compiled = []
    monkeypatch.setattr(search.Run, "fit", lambda self, *a, **kw: compiled.append(self.compile) or {
        "epoch": [1], "val_acc": [0.1], "train_loss": [2.3]})
    design = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)[0][0]["design"]
    search.train_trial(design, dataclasses.replace(SETTINGS, compile=None), tiny_tensors)
    search.train_trial(design, dataclasses.replace(SETTINGS, compile=True), tiny_tensors)
    search.train_design(design, dataclasses.replace(SETTINGS, compile=None), tiny_tensors)
    assert compiled == [False, True, True]


def test_trial_resources_come_from_the_cluster_never_the_driver(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a driver with a GPU ...
    monkeypatch.setattr(utils, "resolve_device", lambda device: torch.device("cuda"))
    cpu_cluster = [{"CPU": 8.0, "memory": 1e9}]
    assert search_ray.trial_resources(2, None, cpu_cluster) == {"cpu": 2, "gpu": 0}  # ... before a CPU cluster
    gpu_cluster = [{"CPU": 4.0}, {"CPU": 16.0, "GPU": 2.0}]  # a CPU-only head node, GPU workers
    assert search_ray.trial_resources(4, None, gpu_cluster) == {"cpu": 4, "gpu": 1}
    assert search_ray.trial_resources(4, 0.5, gpu_cluster) == {"cpu": 4, "gpu": 0.5}


def test_a_trial_the_cluster_cannot_hold_is_refused_naming_the_parameter():
    with pytest.raises(ValueError, match=r"gpus_per_trial=1 asks for more GPUs.*at most 2 CPUs and 0 GPUs.*"
                                         r"gpus_per_trial=0"):
        search_ray.trial_resources(1, 1, [{"CPU": 2.0}])
    with pytest.raises(ValueError, match=r"cpus_per_trial=4 asks for more CPUs.*Use cpus_per_trial=2 or fewer"):
        search_ray.trial_resources(4, 0, [{"CPU": 2.0}, {"CPU": 1.0}])
    with pytest.raises(ValueError, match=r"cpus_per_trial=4 with gpus_per_trial=1: no single node has both"):
        search_ray.trial_resources(4, 1, [{"CPU": 8.0}, {"CPU": 2.0, "GPU": 1.0}])


@pytest.mark.slow
def test_ray_backend_runs_the_same_trials_on_cpu(tiny_tensors, tmp_path, monkeypatch):
    pytest.importorskip("ray.tune", reason="ray is an optional extra: pip install -e .[ray]")
    # a loaded machine starts Ray's agents slowly; the raylet would give up on them after 15 s
    monkeypatch.setenv("RAY_agent_register_timeout_ms", "120000")
    trials, _ = search.plan_trials(TINY_SPACE, 2, seed=0, max_params=TINY_BUDGET)
    log, settings = tmp_path / "ray" / "trials.csv", dataclasses.replace(SETTINGS, epochs=2)
    rows = search.run_search(trials, settings, tiny_tensors, log, backend="ray", cpus_per_trial=1, progress=False)
    local = search.run_search(trials, settings, tiny_tensors, tmp_path / "local.csv", progress=False)
    assert search.read_trials(log) == rows
    assert [r["trial"] for r in rows] == [0, 1]
    keep = ("trial", *search.DESIGN_KEYS, "params", "epochs", "stopped_early", "key")
    assert [{k: r[k] for k in keep} for r in rows] == [{k: r[k] for k in keep} for r in local]
    assert all(0 <= r["val_acc"] <= 1 and r["seconds"] > 0 for r in rows)
    assert tune_reports(tmp_path / "ray" / "ray_results") == {0: [1, 2], 1: [1, 2]}, "one report per epoch"


def test_a_second_search_into_the_same_trial_log_stops_naming_the_first(tmp_path):
    log = tmp_path / "trials.csv"
    holder = hold_lock(files.lock_path_for(log), tmp_path)
    try:
        with pytest.raises(RuntimeError, match=rf"trial log .*trials.csv is in use.*pid {holder.pid}"):
            search.run_search([], {}, None, str(log))
    finally:
        holder.kill()
        holder.wait()
    assert search.run_search([], {}, None, str(log)) == []


def tune_reports(ray_dir):
    """{trial: the `epochs` of each result Tune recorded for it}, read from the trials' result.json files."""
    reports = {}
    for path in sorted(ray_dir.glob("random_search/*/result.json")):
        results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        reports[results[0]["trial"]] = [r["epochs"] for r in results]
    return reports


@contextlib.contextmanager
def time_limit(seconds, what):
    """Fail the test instead of hanging if the block takes longer than `seconds`."""
    def expired(signum, frame):
        raise TimeoutError(f"{what} took over {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def local_ray():
    """One CPU-only Ray instance (2 CPUs, no GPU) shared by the tests below; run_search uses it as it finds it."""
    ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install -e .[ray]")
    pytest.importorskip("ray.tune")
    with pytest.MonkeyPatch.context() as patch:
        # a loaded machine starts Ray's agents slowly; the raylet would give up on them after 15 s
        patch.setenv("RAY_agent_register_timeout_ms", "120000")
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.mark.slow
def test_ray_refuses_a_gpu_the_cluster_lacks_at_once(local_ray, tiny_tensors, tmp_path):
    """Ray alone would queue the trial and warn every 60 s for ever."""
    trials, _ = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)
    started = time.monotonic()
    with time_limit(60, "refusing gpus_per_trial=1"), pytest.raises(
            ValueError, match=r"gpus_per_trial=1 asks for more GPUs than any node has .*0 GPUs"):
        search.run_search(trials, SETTINGS, tiny_tensors, tmp_path / "trials.csv", backend="ray", gpus_per_trial=1,
                          progress=False)
    assert time.monotonic() - started < 30
    assert search.read_trials(tmp_path / "trials.csv") == []


@pytest.mark.slow
def test_ray_default_gpus_per_trial_follows_the_cluster_not_the_driver(local_ray, monkeypatch, tiny_tensors,
                                                                       tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the driver thinks it has a GPU
    trials, _ = search.plan_trials(TINY_SPACE, 1, seed=0, max_params=TINY_BUDGET)
    with time_limit(180, "a one-trial search"):
        rows = search.run_search(trials, SETTINGS, tiny_tensors, tmp_path / "trials.csv", backend="ray",
                                 gpus_per_trial=None, progress=False)
    assert [r["trial"] for r in rows] == [0]


def scripted_trial(accuracy):
    """A trial function whose validation accuracy after epoch e is accuracy[trial] + e / 100, in no time."""
    def trial_fn(design, settings, tensors, on_epoch=None):
        trial = accuracy["by_design"][json.dumps(design, sort_keys=True)]
        params = search.parameter_count(design, settings.num_classes, settings.input_size)
        for epoch in range(1, settings.epochs + 1):
            result = {"val_acc": accuracy[trial] + epoch / 100, "params": params, "train_loss": 1.0,
                      "epochs": epoch, "seconds": 0.01 * epoch}
            if on_epoch:
                on_epoch(result)
        return result
    return trial_fn


@pytest.mark.slow
def test_asha_stops_weak_trials_early_and_the_log_says_so(local_ray, tiny_tensors, tmp_path):
    trials, _ = search.plan_trials(TINY_SPACE, 4, seed=0, max_params=TINY_BUDGET)
    accuracy = {0: 0.8, 1: 0.6, 2: 0.4, 3: 0.2,
                "by_design": {json.dumps(t["design"], sort_keys=True): t["trial"] for t in trials}}
    settings, log = dataclasses.replace(SETTINGS, epochs=4), tmp_path / "trials.csv"
    # 2 CPUs a trial on 2 CPUs: one trial at a time, in plan order, so the rungs see them in that order
    with time_limit(300, "an ASHA search of 4 trials"):
        rows = search.run_search(trials, settings, tiny_tensors, log, backend="ray", cpus_per_trial=2,
                                 scheduler="asha", trial_fn=scripted_trial(accuracy), progress=False)
    # trial 0 sets the bar at epoch 1; every later one is below the rung's cutoff there and stops
    assert [(r["trial"], r["epochs"], r["stopped_early"]) for r in rows] == [
        (0, 4, False), (1, 1, True), (2, 1, True), (3, 1, True)]
    # a stopped trial keeps its last report's accuracy
    assert [r["val_acc"] for r in rows] == pytest.approx([0.84, 0.61, 0.41, 0.21])
    assert tune_reports(tmp_path / "ray_results") == {0: [1, 2, 3, 4], 1: [1], 2: [1], 3: [1]}
    assert search.read_trials(log) == rows
    assert [r["trial"] for r in search.ranked(rows)] == [0, 1, 2, 3]
    # resuming finds every trial logged, stopped ones included: nothing runs again
    again = search.run_search(trials, settings, tiny_tensors, log, backend="ray", scheduler="asha",
                              trial_fn=None, progress=False)
    assert again == rows
