"""Shared fixtures and helpers: the demo data, the notebooks' smoke runs, and small builders several files use."""
import json
import os
import pathlib
import pickle
import subprocess
import sys
import time

import numpy as np
import papermill
import pytest
import yaml
from PIL import Image

# Idle OpenMP threads spin by default; on a 2-core machine shared with a notebook kernel (or other jobs) that
# spinning starves the process doing the work. Set before torch loads; notebook kernels inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
# each study's headline keys (lib/results.py); 01's ratio is left out when ResNet34 scored 0 (a smoke run may)
HEADLINES = {"01": {"two_layer_val_acc", "resnet34_val_acc"}, "02": {"final_val_acc", "model_mib"},
             "03": {"test_acc", "best_val_acc"}, "04": {"best_trial_val_acc", "retrain_test_acc", "designs_searched"},
             "05": {"studies_with_results"}}
OPTIONAL_HEADLINES = {"two_layer_pct_of_resnet34"}
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="session")
def demo_root():
    """lib.demo's default data sets under data/demo (written once, reused: the generator skips what is current)."""
    from lib import demo
    os.environ.setdefault("TQDM_DISABLE", "1")
    demo.write_all(DEMO)
    return DEMO


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """One folder for every notebook's smoke run in this session, so the report notebook can read them all."""
    return tmp_path_factory.mktemp("smoke_runs")


def run_on_smoke_parameters(stem, smoke_runs, tmp_path):
    """Execute notebook `stem` under nbval on its smoke profile into smoke_runs/<stem>; check its saved headline."""
    from lib import results
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    # the one switch: the smoke profile's values, with out_dir (and the report's runs_dir) given explicitly
    params = {"profile": "smoke", "out_dir": str(smoke_runs / stem)}
    if "runs_dir" in yaml.safe_load((ROOT / "configs" / stem / "smoke.yaml").read_text()):
        params["runs_dir"] = str(smoke_runs)  # the report reads the smoke runs made earlier in this session
    prepared = tmp_path / path.name
    papermill.execute_notebook(str(path), str(prepared), parameters=params, prepare_only=True, log_output=False)
    # nbval's kernel keeps no history, so the injected cell names what it injects (lib.config.injected_names)
    notebook = json.loads(prepared.read_text())
    injected = next(c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
    injected["source"] = "".join(injected["source"]) + f"\n__papermill_injected__ = {sorted(params)!r}\n"
    prepared.write_text(json.dumps(notebook))
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(prepared)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{path.name} failed under nbval:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    saved = results.read(smoke_runs / stem)  # in lib.results' schema, with the study's headline
    assert saved.cfg["out_dir"] == params["out_dir"] and saved.study == stem[:2]
    assert HEADLINES[saved.study] <= set(saved.headline) <= HEADLINES[saved.study] | OPTIONAL_HEADLINES, saved.headline
    check_study_outputs(saved, smoke_runs / stem)


def check_study_outputs(saved, out):
    """What the notebooks' end-of-run cells asserted before issue 25 moved it here: each study's own outputs."""
    import math

    from lib import writeups
    if saved.study == "01":
        for name, m in saved.models.items():
            assert sorted(os.listdir(out / "checkpoints" / name)) == ["best.pt", "finished.json"], name
            assert m.extra["images_per_s"] > 0
        two, base = saved.models["two_layer"], saved.models["resnet34"]
        assert math.isclose(saved.headline["two_layer_pct_of_resnet34"], two.best_val_acc / base.best_val_acc)
        assert math.isclose(saved.extra["relative_size"], two.parameters / base.parameters)
        assert base.parameters == writeups.figure("01", "resnet34_parameters")  # the demo set has the 50 classes
    if saved.study == "02":
        model = saved.extra["model_file"]
        assert model["bytes"] == os.path.getsize(out / "model.pt") < model["limit_mb"] * 1e6
        rows = (out / "prediction.csv").read_text().splitlines()
        assert rows[0] == "image_name,pred_label" and len(rows) > 1
        assert saved.extra["parameter_count"]["model"] == saved.models[saved.extra["final_experiment"]].parameters
    if saved.study == "03":
        assert saved.models["cifar_resnet"].parameters == writeups.figure("03", "parameters")
        rows = (out / "submission.csv").read_text().splitlines()
        assert rows[0] == "ID,Labels" and len(rows) == 500 + 1  # the demo's unlabeled pickle holds 500 images
        assert 0 <= saved.headline["test_acc"] <= 1
    if saved.study == "04":
        import papermill
        exported = yaml.safe_load((out / "best_config.yaml").read_text())
        assert set(exported) <= set(papermill.inspect_notebook(str(ROOT / "notebooks" / "03_cifar10_resnet.ipynb")))
        assert saved.models["best_design"].extra["design"] == exported


# ---------------------------------------------------------------- helpers several test files share

def cifar_copy(demo_root, tmp_path):
    """A CIFAR folder of links to the demo batches, so one file can be replaced."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in (demo_root / "cifar10" / "cifar-10-batches-py").iterdir():
        (folder / f.name).symlink_to(f)
    return folder


def relabel(folder, name, change):
    """Replace batch `name` by a copy whose labels `change(labels)` edits in place."""
    from lib import cifar
    batch = cifar.safe_unpickle(folder / name)
    labels = np.array(batch["labels"])
    change(labels)
    batch["labels"] = labels.tolist()
    (folder / name).unlink()
    (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def add_clutter(folder):
    """What macOS, Windows and Jupyter leave in a folder: none of it an image, some of it named like one."""
    (folder / "._cat_0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]")
    (folder / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (16, 16)).save(folder / ".ipynb_checkpoints" / "copy.jpg")
    return 5


def write_mode_zoo(folder):
    """One small image per PIL mode, each with a known red level; returns {file name: red level}."""
    folder.mkdir()
    size = (20, 20)
    expected = {}
    Image.new("RGB", size, (200, 10, 10)).save(folder / "b_rgb.jpg", quality=98)
    expected["b_rgb.jpg"] = 200
    Image.new("L", size, 40).save(folder / "a_gray.png")
    expected["a_gray.png"] = 40
    Image.new("RGBA", size, (120, 0, 0, 255)).save(folder / "10_rgba.png")
    expected["10_rgba.png"] = 120
    palette = Image.new("P", size, 0)
    palette.putpalette([160, 0, 0] + [0, 0, 0] * 255)
    palette.save(folder / "2_palette.png")
    expected["2_palette.png"] = 160
    Image.new("CMYK", size, (0, 255, 255, 175)).save(folder / "c_cmyk.jpg", quality=98)
    expected["c_cmyk.jpg"] = 80  # PIL's CMYK -> RGB: red = 255 - C - K
    (folder / "notes.txt").write_text("not an image")
    return expected


def hold_lock(path, tmp_path):
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


def run_folder(root):
    """A finished run folder: metrics, a figure, the executed notebook, a lock file and a checkpoint."""
    study = root / "03_cifar10_resnet"
    os.makedirs(study / "checkpoints")
    (study / "metrics.json").write_text("{}")
    (study / "learning_curves.png").write_bytes(b"png")
    (study / "checkpoints" / "best.pt").write_bytes(b"0" * 10_000)
    (study / ".lock").write_text("")
    (root / "03_cifar10_resnet.ipynb").write_text("{}")
    return root


def papermill_error(stem, out, parameters):
    """Run a notebook with its smoke parameters plus `parameters`; return the PapermillExecutionError (or None)."""
    params = yaml.safe_load((ROOT / "configs" / stem / "smoke.yaml").read_text())
    params.update(out_dir=str(out / "run"), **parameters)
    try:
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{stem}.ipynb"), str(out / "out.ipynb"), parameters=params,
                                   log_output=False, progress_bar=False, cwd=str(out))
    except papermill.PapermillExecutionError as err:
        return err
    return None
