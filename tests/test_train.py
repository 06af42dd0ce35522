"""lib.train: fit, schedulers, checkpoints, resume (in process and after a kill), determinism."""
import contextlib
import functools
import glob
import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from torch import nn

import resume_worker
from conftest import ROOT
from lib import augment, cifar, files, models, train, utils
from lib.run import Run


def _tiny_setup(seed=0):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (96,))
    model = models.CifarResNet((8, 16), (1, 1), dropout=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [2], 0.1)
    train_loader = cifar.TensorBatchLoader(images, labels, 32, train=True, seed=seed)
    val_loader = cifar.TensorBatchLoader(images[:32], labels[:32], 32, train=False)
    return model, optimizer, scheduler, train_loader, val_loader


def test_fit_writes_history_and_checkpoints(tmp_path):
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    history = train.loop(model, train_loader, val_loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
                        checkpoint_dir=tmp_path, cfg={"a": 1}, progress=False)
    assert history["epoch"] == [1, 2, 3] and history["lr"] == pytest.approx([0.05, 0.05, 0.005])
    ckpt = train.load_checkpoint(tmp_path / "last.pt")
    assert set(train.CHECKPOINT_KEYS) <= set(ckpt) and ckpt["epoch"] == 2 and ckpt["cfg"] == {"a": 1}
    assert os.path.isfile(tmp_path / "best.pt")


def test_resume_equals_an_uninterrupted_run(tmp_path):
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    full = train.loop(model, train_loader, val_loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
                     checkpoint_dir=tmp_path / "full", progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    train.loop(model, train_loader, val_loader, epochs=2, optimizer=optimizer, scheduler=scheduler,
              checkpoint_dir=tmp_path / "cut", progress=False)
    torch.manual_seed(12345)  # a fresh process would start from another RNG state
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup(seed=0)
    resumed = train.loop(model, train_loader, val_loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
                        checkpoint_dir=tmp_path / "cut", resume=True, progress=False)
    assert resumed["val_acc"] == full["val_acc"] and resumed["train_loss"] == full["train_loss"]
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())


def test_plateau_scheduler_steps_on_validation_loss(tmp_path):
    model, optimizer, _, train_loader, val_loader = _tiny_setup()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    plateau.step(-1e9)  # nothing after this can beat it, so every epoch counts as a plateau
    history = train.loop(model, train_loader, val_loader, epochs=2, optimizer=optimizer, scheduler=plateau,
                        progress=False)
    assert train.scheduler_kind(plateau) == "plateau" and history["lr"] == pytest.approx([0.05, 0.025])


def test_warm_restarts_step_every_batch_with_fractional_epochs():
    model, optimizer, _, train_loader, val_loader = _tiny_setup()
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=0.001)
    history = train.loop(model, train_loader, val_loader, epochs=2, optimizer=optimizer, scheduler=sched,
                        progress=False)
    assert train.scheduler_kind(sched) == "batch"
    # recorded at each epoch's end: at 1.0 the first cycle (T_0=1) restarts at the maximum; at 2.0 the second
    # cycle (length 2) is half done, so lr = eta_min + (max - eta_min) * (1 + cos(pi / 2)) / 2
    assert history["lr"] == pytest.approx([0.05, 0.001 + 0.049 * 0.5])


def test_settings_used_only_after_training_may_change_on_resume(tmp_path):
    images, labels = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (16,))
    loader = cifar.TensorBatchLoader(images, labels, 8, train=True, crop_padding=0)

    def fit(epochs, **cfg):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        return train.loop(model, loader, loader, epochs=epochs,
                                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=tmp_path,
                                  cfg={"lr": 0.1, **cfg}, free_keys=train.RUN_SWITCHES | set(cfg), resume=True,
                                  progress=False)

    fit(1, test_pickle="bad.pkl", test_dir="", test_labels="")
    history = fit(2, test_pickle="fixed.pkl", test_dir="data/hw1/test2", test_labels="labels.csv")
    assert len(history["epoch"]) == 2


def _warm_restart_lr(t, base_lr, T_0, T_mult, eta_min):
    """torch's documented closed form at fractional epoch t: eta_min + (base - eta_min)(1 + cos(pi T_cur / T_i)) / 2."""
    start, T_i = 0, T_0
    while t >= start + T_i:
        start, T_i = start + T_i, T_i * T_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (t - start) / T_i)) / 2


def _lr_trace(optimizer):
    """The learning rate each optimizer step actually used."""
    trace = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: trace.append(opt.param_groups[0]["lr"]))
    return trace


def _linear_run(batches, batch_size=4):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batches * batch_size, 3, 8, 8), dtype=torch.uint8)
    loader = cifar.TensorBatchLoader(images, torch.randint(0, 3, (len(images),)), batch_size, train=True)
    val = cifar.TensorBatchLoader(images[:4], torch.zeros(4, dtype=torch.long), 4, train=False)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), loader, val


def test_warm_restarts_per_batch_follow_torchs_closed_form():
    """The study's schedule (T_0=10, T_mult=2, eta_min=1e-5) over 32 epochs of 3 (capped from 5) batches."""
    model, loader, val = _linear_run(batches=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2, eta_min=1e-5)
    trace = _lr_trace(optimizer)
    steps, epochs = 3, 32
    history = train.loop(model, loader, val, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                        max_steps_per_epoch=steps, progress=False)
    expected = [_warm_restart_lr(k / steps, 1e-3, 10, 2, 1e-5) for k in range(epochs * steps)]
    assert trace == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # restarts at the start of epochs 11 and 31 (t = 10 and 30), each cycle annealed almost to eta_min before
    assert trace[10 * steps] == pytest.approx(1e-3) and trace[30 * steps] == pytest.approx(1e-3)
    assert trace[10 * steps - 1] < 2e-5 and trace[30 * steps - 1] < 2e-5
    # the history records the learning rate reached at each epoch's end
    assert history["lr"] == pytest.approx([_warm_restart_lr(e, 1e-3, 10, 2, 1e-5) for e in range(1, epochs + 1)])


def test_one_cycle_is_stepped_per_batch_by_count():
    model, loader, val = _linear_run(batches=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=12)
    trace = _lr_trace(optimizer)
    train.loop(model, loader, val, epochs=3, optimizer=optimizer, scheduler=scheduler, progress=False)
    reference_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=0.1, total_steps=12)
    expected = []
    for _ in range(12):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    assert trace == pytest.approx(expected)
    assert max(trace) == pytest.approx(0.1, rel=0.05)


def test_checkpoint_of_a_compiled_run_loads_into_a_plain_model(tmp_path, monkeypatch):
    """fit(compile=True) saves the plain model's weights (no '_orig_mod.' prefix). The eager backend keeps the
    test fast; the inductor path is exercised by `python -m bench.train_step --cpu-compile`."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)

    def tiny():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))

    model = tiny()
    images, labels = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (32,))
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True, crop_padding=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    train.loop(model, loader, loader, epochs=1, optimizer=optimizer, checkpoint_dir=tmp_path, compile=True,
              progress=False)
    state = train.load_checkpoint(tmp_path / "last.pt")["model"]
    assert not any(k.startswith("_orig_mod") for k in state)
    plain = tiny()
    train.load_model_state(plain, state)
    x = augment.normalize(images, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD)
    assert torch.allclose(plain.eval()(x), model.eval()(x))


WORKER = ROOT / "tests" / "resume_worker.py"


COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")  # the history less its timings


@contextlib.contextmanager
def _one_thread():
    """Train on one CPU thread: the same summation order every time, and no thread thrashing on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_STARTED = []


@pytest.fixture
def _no_stray_workers():
    """Kill any worker a failing test left hanging (they sleep where the test would have killed them)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_worker(out, name, *args):
    """Start tests/resume_worker.py in a fresh process, logging to out/<name>.log."""
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    with open(out / f"{name}.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(WORKER), str(out), *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    proc.log = out / f"{name}.log"
    _STARTED.append(proc)
    return proc


def _sigkill_when(proc, marker, timeout=300):
    """Wait until the worker writes `marker` (it then hangs where the test wants it), and SIGKILL it there."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the worker ended (rc {proc.returncode}) before {marker.name}:\n"
                        + proc.log.read_text()[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {marker.name} after {timeout} s")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _final(out):
    return torch.load(out / "final.pt", weights_only=True)


def _assert_same_run(run, reference):
    for key in COMPARED:
        assert run["history"][key] == reference["history"][key], key
    assert run["model"].keys() == reference["model"].keys()
    different = [k for k in reference["model"] if not torch.equal(run["model"][k], reference["model"][k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


@pytest.mark.slow  # spawns training runs in subprocesses
def test_killed_mid_save_then_mid_epoch_then_resumed_equals_the_uninterrupted_run(demo_root, tmp_path,
                                                                                   _no_stray_workers):
    """Notebook 03's training in a fresh process, SIGKILLed twice, resumed twice: the same weights and history."""
    checkpoints = tmp_path / "checkpoints"
    # three fresh processes; the 2nd and 3rd import torch meanwhile and start training only when told to
    first = _start_worker(tmp_path, "first", "--block-save-at", "1")
    second = _start_worker(tmp_path, "second", "--resume", "--pause-at", "2", "3", "--start-when", tmp_path / "go2")
    third = _start_worker(tmp_path, "third", "--resume", "--start-when", tmp_path / "go3")
    # meanwhile, the uninterrupted run with the same seed, here in the test's process
    uninterrupted = resume_worker.run(tmp_path / "uninterrupted")

    # 1. killed inside atomic_torch_save of epoch 2's checkpoint, with half of the file written
    _sigkill_when(first, tmp_path / "blocked")
    assert train.load_checkpoint(checkpoints / "last.pt")["epoch"] == 0, "epoch 1's checkpoint must stay usable"
    stale = glob.glob(str(checkpoints / ".tmp-*"))
    assert len(stale) == 1 and os.path.getsize(stale[0]) > 0, "the half-written file must be the temporary one"

    # 2. resumed, then killed in the middle of epoch 3 (before its batch 3), after epoch 2's checkpoint
    (tmp_path / "go2").touch()
    _sigkill_when(second, tmp_path / "paused")
    assert "resumed from" in second.log.read_text(), "it should continue, not start over"
    assert not glob.glob(str(checkpoints / ".tmp-*")), "resume should remove the stale temporary file"
    assert train.load_checkpoint(checkpoints / "last.pt")["epoch"] == 1 and not (tmp_path / "final.pt").exists()

    # 3. resumed to the end
    (tmp_path / "go3").touch()
    assert third.wait(timeout=300) == 0, third.log.read_text()[-3000:]
    assert "resumed from" in third.log.read_text()
    _assert_same_run(_final(tmp_path), uninterrupted)


def test_exception_mid_save_leaves_the_old_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    files.atomic_torch_save({"epoch": 0, "w": torch.ones(3)}, path)

    def crash_half_way(obj, f, *args, **kwargs):
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(open(f, "wb")) if isinstance(f, (str, os.PathLike)) else f
            fh.write(b"PK\x03\x04 half a zip file")
            raise KeyboardInterrupt  # what Ctrl-C in the middle of the save looks like

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_torch_save({"epoch": 1, "w": torch.zeros(3)}, path)
    assert train.load_checkpoint(path)["epoch"] == 0 and os.listdir(tmp_path) == ["last.pt"]


def _tiny_fit(checkpoint_dir, channels, epochs=1, resume=False):
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8), torch.arange(32) % 10
    model = models.CifarResNet(channels, (1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    with _one_thread():
        return train.loop(model, loader, loader, epochs=epochs, optimizer=optimizer, checkpoint_dir=checkpoint_dir,
                         resume=resume, progress=False)


def test_checkpoint_of_another_architecture_is_refused_on_resume(tmp_path):
    _tiny_fit(tmp_path, (8, 16))
    last = str(tmp_path / "last.pt")
    with pytest.raises(ValueError, match=re.escape(last) + " holds weights of a different architecture.*"
                                         "Use the same model parameters.*or a different out_dir"):
        _tiny_fit(tmp_path, (8, 32), epochs=2, resume=True)
    with pytest.raises(ValueError, match="best.pt holds weights of a different architecture"):
        train.load_model_state(models.CifarResNet((16, 16), (1, 1)),
                               train.load_checkpoint(tmp_path / "best.pt")["model"], "best.pt")
    assert train.load_checkpoint(last)["epoch"] == 0  # the refused resume did not touch the checkpoint


class _RunsCode:
    """Unpickling this creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_resume_under_other_training_settings_is_refused(tmp_path):
    """Continuing a checkpoint with another lr (say) would silently mix two runs; epochs and device may change."""
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (16,))
    loader = cifar.TensorBatchLoader(images, labels, 8, train=True, crop_padding=0)

    def fit(cfg, epochs):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        return train.loop(model, loader, loader, epochs=epochs, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         checkpoint_dir=tmp_path, cfg=cfg, resume=True, progress=False)

    fit({"lr": 0.1, "epochs": 1, "device": "cpu", "resume": False}, 1)
    with pytest.raises(ValueError, match=r"last\.pt was trained with other settings \(lr: 0\.1 in the checkpoint, "
                                         r"0\.2 now\).*resume=False"):
        fit({"lr": 0.2, "epochs": 2, "device": "cpu", "resume": True}, 2)
    history = fit({"lr": 0.1, "epochs": 2, "device": "auto", "resume": True}, 2)
    assert len(history["val_acc"]) == 2


def test_checkpoint_with_pickled_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    _tiny_fit(tmp_path, (8, 16))
    ckpt = train.load_checkpoint(tmp_path / "last.pt")
    ckpt["cfg"] = _RunsCode(marker)
    torch.save(ckpt, tmp_path / "last.pt")
    torch.load(tmp_path / "last.pt", weights_only=False)  # control: a plain torch.load runs the payload
    assert marker.exists()
    marker.unlink()

    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "last.pt")) + ".*Unsupported global: GLOBAL exec"
                                         ".*can run code.*pass resume=False"):
        train.load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(ValueError, match="refusing to load checkpoint"):
        _tiny_fit(tmp_path, (8, 16), epochs=2, resume=True)
    assert not marker.exists()


def _smoke_training(demo_root, seed):
    """Notebook 03's cells with its smoke.yaml parameters: data, model, optimiser, fit (CPU).

    In this process rather than papermill twice (two kernels, data loading and figures would take most of the file's
    time budget for the same calls), and with a narrower CifarResNet (8/16/32 channels, one block per stage, same
    layer types, dropout included): the full width costs minutes per run on this shared CPU.
    """
    p = yaml.safe_load((ROOT / "configs" / "03_cifar10_resnet" / "smoke.yaml").read_text())
    utils.seed_everything(seed)
    x_train, y_train, _, _, _ = cifar.load_cifar10(demo_root / "cifar10")
    x_train, y_train, x_val, y_val = cifar.split_train_val(x_train, y_train, p["val_size"], seed)
    train_loader = cifar.TensorBatchLoader(x_train, y_train, p["batch_size"], train=True, seed=seed)
    val_loader = cifar.TensorBatchLoader(x_val, y_val, 500, train=False)
    model = models.CifarResNet([8, 16, 32], [1, 1, 1], 3, 1, None, 0.1, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=p["milestones"], gamma=0.1)
    with _one_thread():
        history = train.loop(model, train_loader, val_loader, epochs=p["epochs"], optimizer=optimizer,
                            scheduler=scheduler, max_steps_per_epoch=p["max_steps_per_epoch"], progress=False)
    return {"history": history, "model": model.state_dict()}


def test_same_seed_gives_identical_metrics_and_weights_on_cpu(demo_root):
    first, second = _smoke_training(demo_root, seed=0), _smoke_training(demo_root, seed=0)
    _assert_same_run(second, first)
    other = _smoke_training(demo_root, seed=1)
    assert other["history"]["train_loss"] != first["history"]["train_loss"]  # the comparison can tell runs apart


def _tiny_resnet(seed=0):
    torch.manual_seed(seed)
    images, labels = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8), torch.arange(32) % 10
    model = models.CifarResNet((4, 8), (1, 1))
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    return model, torch.optim.AdamW(model.parameters(), lr=0.01), loader


def _run(checkpoints, record, resume=False, **switches):
    return Run(device=torch.device("cpu"), amp="fp32", channels_last=False, compile=False, resume=resume,
               checkpoints=str(checkpoints), progress=False, record=record, **switches)


def test_a_finished_model_keeps_best_weights_only_and_is_not_trained_again(tmp_path, capsys):
    model, optimizer, loader = _tiny_resnet()
    cfg = {"lr": 0.01, "epochs": 2}
    history = _run(tmp_path, cfg).fit(model, loader, loader, epochs=2, optimizer=optimizer)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", train.FINISHED]
    best = train.load_checkpoint(tmp_path / "best.pt")
    assert "model" in best and "optimizer" not in best and best["history"]["epoch"]
    model, optimizer, loader = _tiny_resnet(seed=1)
    again = _run(tmp_path, cfg, resume=True).fit(model, loader, loader, epochs=2, optimizer=optimizer)
    assert again == json.loads(json.dumps(history)) and "not trained again" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), best["model"].values()))
    with pytest.raises(ValueError, match="cannot be changed to epochs=3"):
        _run(tmp_path, dict(cfg, epochs=3), resume=True).fit(model, loader, loader, epochs=3, optimizer=optimizer)
    with pytest.raises(ValueError, match="trained with other settings"):  # a finished model's record is compared too
        _run(tmp_path, dict(cfg, lr=0.1), resume=True).fit(model, loader, loader, epochs=2, optimizer=optimizer)


def test_renamed_speed_switches_may_change_on_resume():
    assert {"compile_model", "compile", "device", "epochs", "profile"} <= train.RUN_SWITCHES
    train._check_resume_cfg({"compile_model": True, "lr": 1}, {"compile_model": False, "lr": 1}, "last.pt")
    assert "model_names" not in train.RUN_SWITCHES  # a notebook's own names: its run object's resume_free


def test_a_notebooks_resume_free_names_may_change_and_no_others(tmp_path):
    """notebook 01 passes resume_free=("model_names",): that name may change on resume, lr may not."""
    model, optimizer, loader = _tiny_resnet()
    record = {"lr": 0.01, "model_names": ["a"]}
    _run(tmp_path, record, resume_free=frozenset({"model_names"})).fit(model, loader, loader, epochs=1,
                                                                        optimizer=optimizer)
    changed = dict(record, model_names=["a", "b"])
    _run(tmp_path, changed, resume=True, resume_free=frozenset({"model_names"})).fit(model, loader, loader, epochs=1,
                                                                                     optimizer=optimizer)
    with pytest.raises(ValueError, match="model_names"):
        _run(tmp_path, changed, resume=True).fit(model, loader, loader, epochs=1, optimizer=optimizer)


def test_tqdm_disable_silences_the_bars_a_caller_turned_on(monkeypatch, capsys):
    from lib import progress
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert list(progress.tqdm(range(3), disable=False, desc="quiet")) == [0, 1, 2]
    monkeypatch.setenv("TQDM_DISABLE", "0")
    list(progress.tqdm(range(3), disable=False, desc="loud"))
    captured = capsys.readouterr()
    assert "loud" in captured.out and "quiet" not in captured.out
    assert captured.err == "", "a bar on stderr shows as a pink error band in JupyterLab"


def test_resume_onto_another_device_keeps_the_rng_state_on_the_cpu(tmp_path):
    """On CUDA, last.pt loaded with map_location=device put the RNG state on the GPU and set_rng_state raised
    TypeError; "meta" is the non-CPU device a CPU-only machine has, and reproduces it."""
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    train.loop(model, train_loader, val_loader, epochs=1, optimizer=optimizer, scheduler=scheduler,
              checkpoint_dir=tmp_path, progress=False)
    model, optimizer, scheduler, _, _ = _tiny_setup()
    model.to("meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    history, best, start = train.restore(tmp_path, model=model, optimizer=optimizer, scheduler=None,
                                         scaler=torch.amp.GradScaler("cpu", enabled=False), cfg=None,
                                         device=torch.device("meta"), name="meta")
    assert start == 1 and len(history["epoch"]) == 1
    # the optimizer state follows the parameters onto the device
    assert next(iter(optimizer.state.values()))["momentum_buffer"].device.type == "meta"


def test_dropping_the_last_partial_batch_spares_compile_a_second_shape(monkeypatch):
    """A training batch of another size makes torch.compile compile the model again (on a GPU, a minute of a
    short run); with drop_last the uneven split compiles no more graphs than an even one."""
    from torch._dynamo.utils import counters
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))  # graphs, no codegen

    def graphs(n, drop_last):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        images, labels = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,))
        model = models.CifarResNet((8, 16), (1, 1), dropout=0.2)
        train.loop(model, cifar.TensorBatchLoader(images, labels, 32, train=True, drop_last=drop_last),
                  cifar.TensorBatchLoader(images[:40], labels[:40], 40, train=False), epochs=2, amp="fp32",
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), compile=True, progress=False)
        return counters["stats"]["unique_graphs"]

    even = graphs(64, drop_last=False)
    assert graphs(72, drop_last=True) == even < graphs(72, drop_last=False)
