"""Notebook 01 (two-layer net vs ResNet34): its comparison figure, and a run on a subset of the models."""
import json

import matplotlib
import papermill
import pytest
import yaml

from conftest import ROOT
from lib import plots

matplotlib.use("Agg")
STEM = "01_two_layer_imagenet_mini"


def test_accuracy_vs_parameters_plots_one_labelled_point_per_model(tmp_path):
    path = tmp_path / "scatter.png"
    fig = plots.plot_accuracy_vs_parameters(["two_layer", "resnet34"], [3_318_898, 21_310_322], [0.41, 0.52],
                                            str(path), title="t", reference=(0.02, "chance"))
    ax = fig.axes[0]
    offsets = [tuple(c.get_offsets()[0]) for c in ax.collections]
    assert offsets == [(3_318_898, 0.41), (21_310_322, 0.52)]
    assert [t.get_text() for t in ax.texts] == ["two_layer", "resnet34"]
    assert ax.get_xscale() == "log" and ax.get_ylim()[1] > 0.52
    assert path.stat().st_size > 0


@pytest.mark.notebook
def test_subset_without_the_baseline_runs_and_says_what_is_missing(demo_root, tmp_path):
    params = yaml.safe_load((ROOT / "configs" / STEM / "smoke.yaml").read_text())
    params.update(model_names=["single_layer"], out_dir=str(tmp_path / "run"))
    papermill.execute_notebook(str(ROOT / "notebooks" / f"{STEM}.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters=params, log_output=False, progress_bar=False, cwd=str(tmp_path))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["models"]) == {"single_layer"}
    assert metrics["models"]["single_layer"]["parameters"] == 643_954
    assert metrics["models"]["single_layer"]["effective_layers"] == 1
    assert metrics["headline"]["name"] == "single_layer best val accuracy"
    assert metrics["relative_performance"] is None and metrics["goal_met"] is None
    assert metrics["verdict"].startswith("No verdict") and "two_layer or resnet34" in metrics["verdict"]
    assert sorted(metrics["not_trained"]) == ["resnet34", "smaller_kernel", "two_layer"]
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
