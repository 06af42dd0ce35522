"""Issue 7: a crash loses no work, bad input is a clear error, untrusted files run no code, runs are repeatable,
and no output is ever left half-written."""
import concurrent.futures
import contextlib
import glob
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import papermill
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms

import resume_worker
from conftest import ROOT
from lib import cifar, files, folder_cache, folders, models, train, utils

WORKER = ROOT / "tests" / "resume_worker.py"
NB03 = ROOT / "notebooks" / "03_cifar10_resnet.ipynb"
COMPARED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")  # the history less its timings


# ---------------------------------------------------------------- 1. crash and resume

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


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """mkstemp's private 0600 must not leak into results that others (a grader, a web server) read."""
    files.atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == os.stat(tmp_path / "plain.txt").st_mode & 0o777


# ---------------------------------------------------------------- 2. bad input

def _image_tree(root, classes=("cat", "dog"), splits=("train", "val"), per_class=2, size=16):
    for split in splits:
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (40 * i, 90, 160)).save(folder / f"{c}_{i}.jpg")
    return root


def test_missing_data_directory_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + r".*profile = \"demo\".*make data"):
        cifar.load_cifar10(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "train")) + ".*README"):
        folder_cache.folder_loaders(missing, image_size=16, batch_size=2)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*flat folder of images"):
        folders.FlatImageFolder(missing, transforms.ToTensor())
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "t.pkl")) + ".*test_pickle"):
        cifar.load_unlabeled_cifar(missing / "t.pkl")


def test_empty_class_folder_is_named(tmp_path):
    root = _image_tree(tmp_path)
    for f in (root / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "train" / "dog")) + ".*remove the empty"):
        folder_cache.folder_loaders(root, image_size=16, batch_size=2)


def test_train_and_val_with_different_classes_are_refused(tmp_path):
    root = _image_tree(tmp_path)
    _image_tree(tmp_path, classes=("bird",), splits=("val",))
    with pytest.raises(ValueError, match=r"only in val: \['bird'\].*same class folders"):
        folder_cache.folder_loaders(root, image_size=16, batch_size=2)


def _break_images(folder):
    """A truncated JPEG and a file that is no image at all, among good ones."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "truncated.jpg", quality=95)
    raw = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (folder / "garbage.jpg").write_bytes(b"not a jpeg at all" * 10)


@pytest.mark.parametrize("pipeline", ["naive", "cached"])
def test_corrupt_jpeg_is_an_error_naming_it_by_default(tmp_path, pipeline):
    root = _image_tree(tmp_path)
    _break_images(root / "train" / "cat")
    # the cached pipeline decodes everything while building its cache, the naive one when a batch is read
    with pytest.raises(ValueError, match=r"cannot read image .*(truncated|garbage)\.jpg.*skip_bad_images=True"):
        loaders, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=8, pipeline=pipeline,
                                                 cache_dir=tmp_path / "cache", progress=False)
        list(loaders["train"])
    _break_images(root / "val" / "dog")
    flat = folders.FlatImageFolder(root / "val" / "dog", transforms.ToTensor())
    with pytest.raises(ValueError, match=r"garbage\.jpg"):
        [flat[i] for i in range(len(flat))]


def test_skip_bad_images_skips_them_and_says_how_many(tmp_path):
    root = _image_tree(tmp_path)
    _break_images(root / "train" / "cat")
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 images under .*train"):
        cached, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=8, skip_bad_images=True,
                                                cache_dir=tmp_path / "cache", progress=False)
    assert len(cached["train"].cache.samples) == 4 and sum(len(y) for _, y in cached["train"]) == 4
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 images under .*train"):
        loaders, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=8, skip_bad_images=True,
                                                 pipeline="naive")
    dataset = loaders["train"].dataset
    assert len(dataset) == 4 and sorted(os.path.basename(p) for p in dataset.skipped_images) == \
        ["garbage.jpg", "truncated.jpg"]
    assert sum(len(y) for _, y in loaders["train"]) == 4 and dataset.targets == [0, 0, 1, 1]
    assert loaders["val"].dataset.skipped_images == []
    _break_images(root / "val" / "dog")
    with pytest.warns(UserWarning, match="skipped 2 of 4"):
        flat = folders.FlatImageFolder(root / "val" / "dog", transforms.ToTensor(), skip_bad_images=True)
    assert flat.names == ["dog_0.jpg", "dog_1.jpg"] and len(flat.skipped_images) == 2


def test_grayscale_rgba_palette_and_cmyk_images_are_read_as_rgb(tmp_path):
    folder = tmp_path / "train" / "mixed"
    folder.mkdir(parents=True)
    Image.new("L", (8, 8), 100).save(folder / "gray.jpg")
    Image.new("LA", (8, 8), (100, 0)).save(folder / "gray_alpha.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(folder / "transparent.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(folder / "palette.png")
    Image.new("RGB", (8, 8), (0, 128, 0)).convert("CMYK").save(folder / "cmyk.jpg")
    assert {Image.open(p).mode for p in folder.iterdir()} == {"L", "LA", "RGBA", "P", "CMYK"}
    dataset = folders.image_folder(tmp_path, "train", transforms.PILToTensor())
    pixels = {os.path.basename(path): dataset[i][0][:, 0, 0].tolist() for i, (path, _) in enumerate(dataset.samples)}
    assert all(dataset[i][0].shape == (3, 8, 8) for i in range(len(dataset)))
    assert pixels["gray.jpg"] == [100] * 3 and pixels["palette.png"] == [0, 0, 255]
    assert pixels["transparent.png"] == pixels["gray_alpha.png"] == [255] * 3  # transparent is white, not black
    r, g, b = pixels["cmyk.jpg"]
    assert r < 20 and 110 < g < 150 and b < 20


def _cifar_copy(demo_root, tmp_path):
    """A CIFAR folder of links to the demo batches, so one file can be replaced."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for f in (demo_root / "cifar10" / "cifar-10-batches-py").iterdir():
        (folder / f.name).symlink_to(f)
    return folder


def test_truncated_cifar_batch_names_the_file_and_the_fix(demo_root, tmp_path):
    folder = _cifar_copy(demo_root, tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").unlink()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match=r"data_batch_3 is truncated or corrupt.*Download it again"):
        cifar.load_cifar10(tmp_path)


@pytest.mark.parametrize("content, expected", [
    ({b"data": np.zeros((4, 32, 32, 3), np.float32)}, r"uint8 array of shape \(N, 32, 32, 3\), got float32"),
    ({b"data": np.zeros((4, 3, 32, 32), np.uint8)}, r"shape \(N, 32, 32, 3\), got uint8 \(4, 3, 32, 32\)"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, r"shape \(N, 32, 32, 3\), got uint8 \(4, 3072\)"),
    ({b"data": np.zeros((4, 32, 32, 3), np.uint8), b"ids": np.arange(3)}, r"one id per image \(4\)"),
    (np.zeros((4, 32, 32, 3), np.uint8), r"expected a pickled dict .* got ndarray"),
], ids=["float32", "channels-first", "flat-rows", "ids-count", "bare-array"])
def test_unlabeled_pickle_of_wrong_shape_or_dtype_is_refused(tmp_path, content, expected):
    path = tmp_path / "cifar_test_nolabels.pkl"
    path.write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + expected):
        cifar.load_unlabeled_cifar(path)


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
    assert re.search(r"the model has 1,177,130 parameters, over max_params=1,000: use fewer channels", err.evalue)
    assert (out / "run" / "cfg.json").exists() and not (out / "run" / "checkpoints").exists()  # refused before training


def test_output_directory_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out_dir = blocker / "run"  # root can write anywhere, but nothing can make a folder inside a file
    with pytest.raises(OSError, match=re.escape(str(out_dir)) + ".*cannot be written.*Pass another out_dir"):
        utils.start_run({"seed": 0}, str(out_dir))
    with pytest.raises(OSError, match=re.escape(str(out_dir / "m.json")) + ".*Choose a writable out_dir"):
        files.atomic_write_json(out_dir / "m.json", {})
    assert blocker.read_text() == "not a folder"


def _tiny_fit(checkpoint_dir, channels, epochs=1, resume=False):
    torch.manual_seed(0)
    images, labels = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8), torch.arange(32) % 10
    model = models.CifarResNet(channels, (1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True)
    with _one_thread():
        return train.fit(model, loader, loader, epochs=epochs, optimizer=optimizer, checkpoint_dir=checkpoint_dir,
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


# ---------------------------------------------------------------- 3. untrusted files

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
        return train.fit(model, loader, loader, epochs=epochs, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
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


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("loader", ["cifar_batch", "cifar_meta", "unlabeled_pickle"])
def test_malicious_data_pickle_is_refused_without_running_it(demo_root, tmp_path, loader, protocol):
    marker = tmp_path / "code_ran"
    payload = pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=protocol)
    (tmp_path / "control.pkl").write_bytes(payload)
    with open(tmp_path / "control.pkl", "rb") as fh:
        pickle.load(fh)  # control: the plain unpickler runs the payload
    assert marker.exists()
    marker.unlink()

    if loader == "unlabeled_pickle":
        path = tmp_path / "cifar_test_nolabels.pkl"
        path.write_bytes(payload)
        load = lambda: cifar.load_unlabeled_cifar(path)  # noqa: E731
    else:
        folder = _cifar_copy(demo_root, tmp_path)
        path = folder / ("data_batch_1" if loader == "cifar_batch" else "batches.meta")
        path.unlink()
        path.write_bytes(payload)
        load = lambda: cifar.load_cifar10(tmp_path)  # noqa: E731
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": refusing to load (builtins|__builtin__)\.exec"):
        load()
    assert not marker.exists()


# ---------------------------------------------------------------- 4. determinism

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
        history = train.fit(model, train_loader, val_loader, epochs=p["epochs"], optimizer=optimizer,
                            scheduler=scheduler, max_steps_per_epoch=p["max_steps_per_epoch"], progress=False)
    return {"history": history, "model": model.state_dict()}


def test_same_seed_gives_identical_metrics_and_weights_on_cpu(demo_root):
    first, second = _smoke_training(demo_root, seed=0), _smoke_training(demo_root, seed=0)
    _assert_same_run(second, first)
    other = _smoke_training(demo_root, seed=1)
    assert other["history"]["train_loss"] != first["history"]["train_loss"]  # the comparison can tell runs apart


def test_metrics_json_records_seed_versions_and_device(tmp_path):
    utils.write_metrics(tmp_path, {"seed": 7}, device="cpu")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["cfg"]["seed"] == 7 and saved["device"] == "cpu"
    assert saved["environment"]["torch"] == torch.__version__
    assert {"python", "torchvision", "numpy", "platform", "cuda"} <= set(saved["environment"])


# ---------------------------------------------------------------- 5. outputs never partial

# writes that bypass lib.files' atomic helpers; files.py holds the helpers themselves, utils.py's torch.save writes
# into memory (state_dict_bytes), and demo.py builds each data set in a hidden `.partial` folder that is renamed into
# place whole (lib.demo.materialize)
DIRECT_WRITES = re.compile(r"torch\.save\(|\.to_csv\(|\.to_json\(|json\.dump\(|np\.save[z]?\(|pickle\.dump\(|"
                           r"\.write_text\(|\.write_bytes\(|\bopen\([^)]*[\"'][wax]b?\+?[\"']")
ATOMIC_BY_OTHER_MEANS = {"lib/files.py", "lib/utils.py", "lib/demo.py"}


def _code_sources():
    for path in sorted(ROOT.glob("lib/*.py")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        yield str(path.relative_to(ROOT)), "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_data_files_are_written_only_through_the_atomic_helpers():
    """Figures (savefig) may be rewritten by a rerun; CSV, JSON and checkpoints must never be left half-written."""
    offenders = [f"{name}:{n}: {line.strip()}" for name, text in _code_sources() if name not in ATOMIC_BY_OTHER_MEANS
                 for n, line in enumerate(text.splitlines(), 1)
                 if DIRECT_WRITES.search(line.split("#")[0])]
    assert not offenders, ("write these through lib.files.atomic_write_text / atomic_write_json / atomic_torch_save / "
                           "atomic_open instead:\n" + "\n".join(offenders))
    assert DIRECT_WRITES.search('torch.save(state, "last.pt")') and DIRECT_WRITES.search("open(p, 'w')")
    assert not DIRECT_WRITES.search("open(path)") and not DIRECT_WRITES.search('open(path, "rb")')
