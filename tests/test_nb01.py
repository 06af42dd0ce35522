"""Notebook 01 (two-layer net vs ResNet34): its smoke run, a subset of the models, what its loaders feed."""
import hashlib
import os
import shutil

import matplotlib
import papermill
import pytest
import yaml

from conftest import ROOT, add_clutter, papermill_error, run_on_smoke_parameters
from lib import results

matplotlib.use("Agg")

pytestmark = pytest.mark.slow  # every test here executes the notebook


STEM = "01_two_layer_imagenet_mini"


@pytest.mark.notebook
def test_subset_without_the_baseline_runs_and_says_what_is_missing(demo_root, tmp_path):
    params = yaml.safe_load((ROOT / "configs" / STEM / "smoke.yaml").read_text())
    params.update(model_names=["single_layer"], out_dir=str(tmp_path / "run"))
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{STEM}.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters=params, log_output=False, progress_bar=False, cwd=str(tmp_path))
    saved = results.read(tmp_path / "run")
    assert set(saved.models) == {"single_layer"}
    assert saved.models["single_layer"].parameters == 643_954
    assert saved.models["single_layer"].extra["effective_layers"] == 1
    assert list(saved.headline) == ["single_layer_val_acc"]  # no ratio without two_layer and resnet34
    assert saved.extra["relative_size"] is None and saved.extra["goal_met"] is None
    assert saved.extra["verdict"].startswith("No verdict") and "two_layer or resnet34" in saved.extra["verdict"]
    assert sorted(saved.extra["not_trained"]) == ["resnet34", "smaller_kernel", "two_layer"]
    assert (tmp_path / "run" / "checkpoints" / "single_layer" / "best.pt").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "two_layer").exists()


@pytest.mark.notebook
def test_unknown_model_name_is_a_clear_error(demo_root, tmp_path):
    params = yaml.safe_load((ROOT / "configs" / STEM / "smoke.yaml").read_text())
    params.update(model_names=["two_layer", "resnet50"], out_dir=str(tmp_path / "run"))
    with pytest.raises(papermill.PapermillExecutionError, match="resnet50"):
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{STEM}.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters=params, log_output=False, progress_bar=False, cwd=str(tmp_path))
    assert not (tmp_path / "run").exists()  # refused before anything was written


@pytest.mark.notebook
def test_notebook_01_counts_what_its_loaders_feed(demo_root, tmp_path):
    """A link to `..` and clutter in a class folder: notebook 01 trains on, and prints, the real images only."""
    root = tmp_path / "imagenet-mini"
    shutil.copytree(demo_root / "imagenet-mini", root, symlinks=True)
    first = sorted((root / "train").iterdir())[0]
    os.symlink("..", first / "up")
    add_clutter(first)
    real = {s: sum(1 for _ in (root / s).glob("*/*.JPEG")) for s in ("train", "val")}
    try:
        err = papermill_error("01_two_layer_imagenet_mini", tmp_path,
                         {"data_dir": str(root), "model_names": ["single_layer"]})
    finally:  # this copy's caches would otherwise pile up under data/cache, one set per test run
        for split in ("train", "val"):
            place = hashlib.sha256(os.path.abspath(root / split).encode()).hexdigest()[:8]
            for stale in (ROOT / "data" / "cache").glob(f"imagenet-mini-{split}-{place}-*"):
                stale.unlink()
    assert err is None, err and err.evalue
    with open(tmp_path / "out.ipynb") as fh:
        text = fh.read()
    assert f"{real['train']} training and {real['val']} validation images" in text
    assert "ignored 6 hidden or system entries" in text


@pytest.mark.notebook
def test_notebook_runs_on_smoke_parameters(demo_root, smoke_runs, tmp_path):
    run_on_smoke_parameters("01_two_layer_imagenet_mini", smoke_runs, tmp_path)
