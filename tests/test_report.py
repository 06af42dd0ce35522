"""The results report (lib/report.py, notebook 05) on a fixture of metrics.json files written here."""
import json
import os
import time

import matplotlib
import pytest

matplotlib.use("Agg")

from lib import report  # noqa: E402
from conftest import ROOT  # noqa: E402


def history(accs, seconds=2.0):
    """A per-epoch history as lib.train.fit writes it, with the given validation accuracies."""
    n = len(accs)
    return {"epoch": list(range(1, n + 1)), "train_loss": [1.0] * n, "train_acc": [a + 0.05 for a in accs],
            "val_loss": [1.2] * n, "val_acc": list(accs), "lr": [0.1] * n, "seconds": [seconds] * n,
            "images_per_s": [100.0] * n}


def run_metrics(study, models, data="demo", device="cpu", **extra):
    """A metrics.json body in the README's schema."""
    return {"cfg": {"out_dir": f"x/{study}"}, "study": study, "data": data, "epochs_run": 3, "device": device,
            "amp": False, "compile": False,
            "environment": {"cpu_threads": 2, "gpu": "NVIDIA H100 80GB HBM3" if device == "cuda" else None},
            "headline": {"name": "val accuracy", "value": 0.5}, "models": models, **extra}


def fixture_metrics(data="demo"):
    """One plausible run per study, keyed by notebook stem, with the fields notebooks 01-04 write."""
    def model(params, acc, **more):
        return {"parameters": params, "best_val_acc": acc, "seconds_per_epoch": 2.0, **more}
    two_layer = {"two_layer": model(3_318_898, 0.30), "single_layer": model(1_000_000, 0.20),
                 "smaller_kernel": model(3_000_000, 0.25), "resnet34": model(21_310_322, 0.40)}
    grid = {"resnet50_ce": model(23_712_932, 0.61, use_cbam=False, loss="ce", saved_mib=90.6),
            "resnet50_focal": model(23_712_932, 0.62, use_cbam=False, loss="focal", saved_mib=90.6),
            "cbam_ce": model(23_800_044, 0.63, use_cbam=True, loss="ce", saved_mib=90.9),
            "cbam_focal": model(23_800_044, 0.64, use_cbam=True, loss="focal", saved_mib=90.9, final_train_acc=0.8)}
    best = model(1_000_002, 0.5, test_acc=0.45, trial=2, trial_val_acc=0.42, design={"blocks": [3, 3, 3]})
    search = {"trials": 3, "draws": 9, "rejections": 4, "trial_epochs": 2, "trial_seconds": 10.0,
              "skipped": {"too_many_params": 4, "pool_too_large": 0, "no_feature_map": 0, "duplicate": 2}}
    return {
        "01_two_layer_imagenet_mini": run_metrics("01", two_layer, data, relative_performance=0.75,
                                                  relative_size=0.1557, image_size=64,
                                                  histories={k: history([0.1, 0.2, 0.3]) for k in two_layer}),
        "02_resnet50_cbam_100class": run_metrics("02", grid, data, device="cuda", final_experiment="cbam_focal",
                                                 pretrained=False, model_file={"mib": 90.99, "mb": 95.4},
                                                 histories={k: history([0.4, 0.6]) for k in grid}),
        "03_cifar10_resnet": run_metrics("03", {"cifar_resnet": model(1_177_130, 0.55, test_acc=0.53,
                                                                      final_train_acc=0.6)},
                                         data, history=history([0.3, 0.5, 0.55])),
        "04_cifar10_random_search": run_metrics("04", {"best_design": best}, data, search=search,
                                                history=history([0.3, 0.5])),
    }


TRIALS_CSV = "trial,params,val_acc,seconds\n0,1000000,0.30,3\n1,1000001,0.35,3\n2,1000002,0.42,4\n"


def write_runs(runs_dir, skip=(), broken=(), data="demo"):
    """Write the fixture's metrics.json files under runs_dir; `skip` stems get none, `broken` ones invalid JSON."""
    for stem, metrics in fixture_metrics(data).items():
        if stem in skip:
            continue
        os.makedirs(runs_dir / stem, exist_ok=True)
        text = "{not json" if stem in broken else json.dumps(metrics)
        (runs_dir / stem / "metrics.json").write_text(text)
        if stem.startswith("04"):
            (runs_dir / stem / "trials.csv").write_text(TRIALS_CSV)
    return runs_dir


def test_every_study_is_read_and_set_beside_its_seed(tmp_path):
    runs = report.read_runs(write_runs(tmp_path))
    assert list(runs) == ["01", "02", "03", "04"] and all(r["status"] == "ok" for r in runs.values())
    t01 = report.seed_table(runs["01"]).set_index("quantity")
    assert t01.loc["two-layer accuracy (val)", "seed (real data, full run)"] == "57.56%"
    assert t01.loc["two-layer accuracy (val)", "ours"] == "30.00%"
    assert t01.loc["relative performance (two-layer / ResNet34)", "ours"] == "75.00%"  # the run's own figure
    assert t01.loc["relative size (parameters)", "ours"] == "15.57%"
    assert set(t01["data"]) == {"demo"} and set(t01["epochs"]) == {"3"} and set(t01["time"]) == {"24 s"}
    t02 = report.seed_table(runs["02"]).set_index("quantity")
    assert t02.loc["final model val accuracy (CBAM + focal)", "ours"] == "64.00%"
    assert "from scratch" in t02.loc["final model val accuracy (CBAM + focal)", "note"]
    assert t02.loc["ResNet50 + cross-entropy val accuracy (baseline)", "ours"] == "61.00%"
    assert t02.loc["ResNet50 + focal val accuracy", "ours"] == "62.00%"
    assert t02.loc["CBAM + cross-entropy val accuracy", "seed (real data, full run)"] == report.NOT_REPORTED
    assert t02.loc["saved model size", "ours"] == "90.99 MiB"
    assert t02.loc["trainable parameters, final model", "ours"] == "23,800,044"
    assert t02.loc["saved model size", "hardware"] == "cuda · NVIDIA H100 80GB HBM3"
    t03 = report.seed_table(runs["03"]).set_index("quantity")
    assert t03.loc["trainable parameters", "ours"] == "1,177,130"
    assert t03.loc["peak validation accuracy", "seed (real data, full run)"] == "94.61%"
    t04 = report.seed_table(runs["04"]).set_index("quantity")
    assert t04.loc["best design: val accuracy (retrained)", "ours"] == "50.00%"
    assert t04.loc["best design: val accuracy in the search", "ours"] == "42.00%"
    assert t04.loc["best design: configuration", "ours"] == '{"blocks": [3, 3, 3]}'
    assert t04.loc["trials trained", "ours"] == "3"
    assert t04.loc["designs rejected before training", "ours"] == "4 (too many params 4)"
    assert t04.loc["trials trained", "epochs"] == "3 + 3 trials × 2" and t04.loc["trials trained", "time"] == "14 s"
    assert t04.loc["best design: test accuracy", "seed (real data, full run)"] == report.NOT_REPORTED
    capped = dict(runs["03"]["metrics"], cfg={"max_steps_per_epoch": 25})
    assert report.run_facts(capped)["epochs"] == "3 (≤ 25 batches each)"
    overview = report.overview(runs)
    assert list(overview["status"]) == ["ok"] * 4 and report.NOT_RUN not in overview.to_string()


def test_missing_and_broken_studies_show_as_not_run_with_their_command(tmp_path):
    runs_dir = write_runs(tmp_path / "demo", skip={"02_resnet50_cbam_100class"}, broken={"04_cifar10_random_search"})
    runs = report.read_runs(runs_dir)
    assert [r["status"] for r in runs.values()] == ["ok", "not run", "ok", "not run"]
    assert "unreadable metrics.json" in runs["04"]["reason"] and "no metrics.json" in runs["02"]["reason"]
    overview = report.overview(runs).set_index("study")
    for study, stem in (("02", "02_resnet50_cbam_100class"), ("04", "04_cifar10_random_search")):
        command = overview.loc[study, "to produce it"]
        assert f"papermill notebooks/{stem}.ipynb" in command and f"-p out_dir {runs_dir}/{stem}" in command
        assert set(report.seed_table(runs[study])["ours"]) == {report.NOT_RUN}
        note = report.study_note(runs[study])
        assert report.NOT_RUN in note and runs[study]["command"] in note
    assert "-f configs/03_cifar10_resnet/demo.yaml" in report.run_command(runs_dir, "03_cifar10_resnet")


def test_a_failed_latest_run_is_not_reported_with_its_stale_metrics(tmp_path):
    runs_dir = write_runs(tmp_path)
    executed = {"cells": [], "metadata": {"papermill": {"exception": True}}, "nbformat": 4, "nbformat_minor": 4}
    (tmp_path / "03_cifar10_resnet.ipynb").write_text(json.dumps(executed))
    stale = time.time() - 60
    os.utime(tmp_path / "03_cifar10_resnet" / "metrics.json", (stale, stale))
    record = report.read_study(runs_dir, "03")
    assert record["status"] == report.NOT_RUN and "failed" in record["reason"]


def test_missing_fields_show_a_dash_and_nothing_raises(tmp_path):
    for stem in ("01_two_layer_imagenet_mini", "03_cifar10_resnet"):
        (tmp_path / stem).mkdir()
        (tmp_path / stem / "metrics.json").write_text(json.dumps({"study": stem[:2], "models": {"m": {"x": 1}}}))
    (tmp_path / "04_cifar10_random_search").mkdir()
    (tmp_path / "04_cifar10_random_search" / "metrics.json").write_text("[1, 2]")
    runs = report.read_runs(tmp_path)
    assert runs["04"]["status"] == report.NOT_RUN
    table = report.seed_table(runs["03"])
    assert set(table["ours"]) == {report.MISSING} and set(table["hardware"]) == {report.MISSING}
    assert report.overview(runs).loc[0, "headline"] == "headline: —"
    report.plot_learning_curves(runs, tmp_path / "curves.png")
    report.plot_accuracy_vs_parameters(runs, tmp_path / "acc.png")
    report.plot_seconds_per_epoch(runs, tmp_path / "speed.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in ("curves.png", "acc.png", "speed.png"))
    assert report.report_metrics(runs, str(tmp_path))["headline"]["value"] == 2


def test_demo_runs_raise_the_banner_and_real_runs_do_not(tmp_path):
    demo = report.read_runs(write_runs(tmp_path / "demo"))
    assert "DEMO DATA" in report.banner_html(demo) and report.data_label(demo) == "demo data"
    real = report.read_runs(write_runs(tmp_path / "real", data="real"))
    assert report.banner_html(real) == "" and report.report_metrics(real, "r")["data"] == "real"
    assert "No study has results" in report.banner_html(report.read_runs(tmp_path / "empty"))


@pytest.mark.parametrize("value, kind, text", [
    (0.5756, "pct", "57.56%"), (3318898, "int", "3,318,898"), (90.99, "mib", "90.99 MiB"), (None, "pct", "—"),
    (float("nan"), "pct", "—"), (7.5, "seconds", "7.5 s"), (200, "seconds", "3 min 20 s"),
    (7500, "seconds", "2 h 05 min"), ({"a": 1}, "text", '{"a": 1}'), ("x", "pct", "x"),
])
def test_fmt(value, kind, text):
    assert report.fmt(value, kind) == text


def test_models_table_and_figures_cover_every_study(tmp_path):
    runs = report.read_runs(write_runs(tmp_path / "runs", skip={"02_resnet50_cbam_100class"}))
    table = report.models_table(runs)
    assert set(table["study"]) == {"01", "03", "04"} and len(table) == 4 + 1 + 1
    assert list(report.search_trials(runs["04"])["val_acc"]) == [0.30, 0.35, 0.42]
    shown = report.models_display(runs)
    assert shown.loc[0, "best_val_acc"] == "30.00%" and shown.loc[0, "test_acc"] == report.MISSING
    for plot, name in ((report.plot_learning_curves, "c.png"), (report.plot_accuracy_vs_parameters, "a.png"),
                       (report.plot_seconds_per_epoch, "s.png")):
        fig = plot(runs, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
        if plot is report.plot_learning_curves:  # one panel per study, the missing one saying so
            assert len(fig.axes) == 4 and report.NOT_RUN in [t.get_text() for t in fig.axes[1].texts]


@pytest.mark.notebook
def test_report_notebook_on_the_fixture(tmp_path):
    """Notebook 05 end to end on the fixture: every study appears, the missing one as 'not run'."""
    papermill = pytest.importorskip("papermill")
    runs_dir = write_runs(tmp_path / "runs", skip={"04_cifar10_random_search"})
    out = tmp_path / "runs" / "05_results_report"
    papermill.execute_notebook(str(ROOT / "notebooks" / "05_results_report.ipynb"), str(tmp_path / "05.ipynb"),
                               parameters={"runs_dir": str(runs_dir), "out_dir": str(out)}, log_output=False,
                               cwd=str(tmp_path), progress_bar=False)
    text = (tmp_path / "05.ipynb").read_text()
    for study in report.STUDIES.values():
        assert study["stem"] in text
    assert "not run" in text and "all checks passed" in text and "DEMO DATA" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["headline"]["value"] == 3 and metrics["studies"]["04"]["status"] == "not run"
