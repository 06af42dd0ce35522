"""The results report (lib/report.py, lib/tables.py, plots.plot_studies_*, notebook 05) on runs written here."""
import dataclasses
import json
import os
import time

import matplotlib
import pytest

matplotlib.use("Agg")

from lib import plots, report, results, studies, tables  # noqa: E402
from conftest import ROOT  # noqa: E402


def history(accs, seconds=2.0):
    """A per-epoch history as lib.train.fit writes it, with the given validation accuracies."""
    n = len(accs)
    return {"epoch": list(range(1, n + 1)), "train_loss": [1.0] * n, "train_acc": [a + 0.05 for a in accs],
            "val_loss": [1.2] * n, "val_acc": list(accs), "lr": [0.1] * n, "seconds": [seconds] * n,
            "images_per_s": [100.0] * n}


def run_results(study, models, headline, data="demo", device="cpu", **extra):
    """A StudyResults in lib.results' schema, as notebook `study` fills it."""
    return results.StudyResults(
        study=study, data=data, cfg={"out_dir": f"x/{study}", "max_params": 5_000_000}, device=device, amp="fp32",
        channels_last=False, compile=False, epochs_run=3, headline=headline, models=models, extra=extra,
        environment={"cpu_threads": 2, "gpu": "NVIDIA H100 80GB HBM3" if device == "cuda" else None})


def model(params, acc, accs=(0.1, 0.2, 0.3), **extra):
    """A ModelResult with a history whose best validation accuracy is acc."""
    return results.from_history(history([*accs[:-1], acc]), params, **extra)


def fixture_results(data="demo"):
    """One plausible run per study, keyed by notebook stem, with the fields notebooks 01-04 write."""
    two_layer = {"two_layer": model(3_318_898, 0.30), "single_layer": model(1_000_000, 0.20),
                 "smaller_kernel": model(3_000_000, 0.25), "resnet34": model(21_310_322, 0.40)}
    grid = {name: model(params, acc, (0.4, acc), use_cbam=cbam, loss=loss, saved_mib=mib)
            for name, params, acc, cbam, loss, mib in (("resnet50_ce", 23_712_932, 0.61, False, "ce", 90.6),
                                                       ("resnet50_focal", 23_712_932, 0.62, False, "focal", 90.6),
                                                       ("cbam_ce", 23_800_044, 0.63, True, "ce", 90.9),
                                                       ("cbam_focal", 23_800_044, 0.64, True, "focal", 90.9))}
    grid["cbam_focal"].final_train_acc = 0.8
    best = model(1_000_002, 0.5, (0.3, 0.5), test_acc=0.45, trial=2, trial_val_acc=0.42, design={"blocks": [3, 3, 3]})
    search = {"trials": 3, "draws": 9, "rejections": 4, "trial_epochs": 2, "trial_seconds": 10.0,
              "skipped": {"too_many_params": 4, "pool_too_large": 0, "no_feature_map": 0, "duplicate": 2}}
    cifar = model(1_177_130, 0.55, (0.3, 0.5, 0.55), test_acc=0.53)
    cifar.final_train_acc = 0.6
    return {
        "01_two_layer_imagenet_mini": run_results(
            "01", two_layer, {"two_layer_val_acc": 0.3, "resnet34_val_acc": 0.4, "two_layer_pct_of_resnet34": 0.75},
            data, relative_size=0.1557, image_size=64, goal_met=False, verdict="not met", not_trained=[]),
        "02_resnet50_cbam_100class": run_results(
            "02", grid, {"final_val_acc": 0.64, "model_mib": 90.99}, data, device="cuda", final_experiment="cbam_focal",
            pretrained=False, model_file={"mib": 90.99, "mb": 95.4}),
        "03_cifar10_resnet": run_results("03", {"cifar_resnet": cifar}, {"test_acc": 0.53, "best_val_acc": 0.55}, data),
        "04_cifar10_random_search": run_results(
            "04", {"best_design": best}, {"best_trial_val_acc": 0.42, "retrain_test_acc": 0.45, "designs_searched": 3},
            data, search=search),
    }


TRIALS_CSV = "trial,params,val_acc,seconds\n0,1000000,0.30,3\n1,1000001,0.35,3\n2,1000002,0.42,4\n"


def write_runs(runs_dir, skip=(), broken=(), data="demo"):
    """Write the fixture's metrics.json files under runs_dir; `skip` stems get none, `broken` ones invalid JSON."""
    for stem, run in fixture_results(data).items():
        if stem in skip:
            continue
        os.makedirs(runs_dir / stem, exist_ok=True)
        results.write(runs_dir / stem, run)
        if stem in broken:
            (runs_dir / stem / "metrics.json").write_text("{not json")
        if stem.startswith("04"):
            (runs_dir / stem / "trials.csv").write_text(TRIALS_CSV)
    return runs_dir


def test_every_study_is_read_and_set_beside_its_write_up(tmp_path):
    runs = report.read_runs(write_runs(tmp_path))
    assert list(runs) == ["01", "02", "03", "04"] and all(r.status == "ok" for r in runs.values())
    published = tables.STUDY_COLUMN
    t01 = tables.study_table(runs["01"]).set_index("quantity")
    assert t01.loc["two-layer accuracy (val)", published] == "57.56%"
    assert t01.loc["two-layer accuracy (val)", "ours"] == "30.00%"
    assert t01.loc["relative performance (two-layer / ResNet34)", "ours"] == "75.00%"  # the run's own figure
    assert t01.loc["relative size (parameters)", "ours"] == "15.57%"
    assert set(t01["data"]) == {"demo"} and set(t01["epochs"]) == {"3"} and set(t01["time"]) == {"24 s"}
    t02 = tables.study_table(runs["02"]).set_index("quantity")
    assert t02.loc["final model val accuracy (CBAM + focal)", "ours"] == "64.00%"
    assert "from scratch" in t02.loc["final model val accuracy (CBAM + focal)", "note"]
    assert t02.loc["ResNet50 + cross-entropy val accuracy (baseline)", "ours"] == "61.00%"
    assert t02.loc["ResNet50 + focal val accuracy", "ours"] == "62.00%"
    assert t02.loc["CBAM + cross-entropy val accuracy", published] == tables.NOT_REPORTED
    assert t02.loc["saved model size", "ours"] == "90.99 MiB"
    assert t02.loc["trainable parameters, final model", "ours"] == "23,800,044"
    assert t02.loc["saved model size", "hardware"] == "cuda · NVIDIA H100 80GB HBM3"
    t03 = tables.study_table(runs["03"]).set_index("quantity")
    assert t03.loc["trainable parameters", "ours"] == "1,177,130"
    assert t03.loc["peak validation accuracy", published] == "94.61%"
    t04 = tables.study_table(runs["04"]).set_index("quantity")
    assert t04.loc["best design: val accuracy (retrained)", "ours"] == "50.00%"
    assert t04.loc["best design: val accuracy in the search", "ours"] == "42.00%"
    assert t04.loc["best design: configuration", "ours"] == '{"blocks": [3, 3, 3]}'
    assert t04.loc["trials trained", "ours"] == "3"
    assert t04.loc["designs rejected before training", "ours"] == "4 (too many params 4)"
    assert t04.loc["trials trained", "epochs"] == "3 + 3 trials × 2" and t04.loc["trials trained", "time"] == "14 s"
    assert t04.loc["best design: test accuracy", published] == tables.NOT_REPORTED
    capped = dataclasses.replace(runs["03"].results, cfg={"max_steps_per_epoch": 25})
    assert tables.run_facts(capped)["epochs"] == "3 (≤ 25 batches each)"
    overview = tables.overview(runs)
    assert list(overview["status"]) == ["ok"] * 4 and tables.NOT_RUN not in overview.to_string()


def test_every_published_figure_in_the_tables_comes_from_lib_studies(tmp_path):
    runs = report.read_runs(write_runs(tmp_path))
    for study, run in runs.items():
        for quantity, key, _, kind, _ in tables.STUDY_ROWS[study](run.results):
            shown = tables.study_table(run).set_index("quantity").loc[quantity, tables.STUDY_COLUMN]
            assert shown == (tables.NOT_REPORTED if key is None else tables.fmt(studies.figure(study, key), kind))
    assert studies.figure("01", "two_layer_val_acc") == 0.5756 and studies.figure("02", "model_mib") == 90.99
    with pytest.raises(KeyError, match="publishes no figure 'nope'"):
        studies.figure("04", "nope")


def test_missing_and_broken_studies_show_as_not_run_with_their_command(tmp_path):
    runs_dir = write_runs(tmp_path / "demo", skip={"02_resnet50_cbam_100class"}, broken={"04_cifar10_random_search"})
    runs = report.read_runs(runs_dir)
    assert [r.status for r in runs.values()] == ["ok", "not run", "ok", "not run"]
    assert "unreadable" in runs["04"].reason and "no metrics.json" in runs["02"].reason
    assert str(runs_dir / "04_cifar10_random_search" / "metrics.json") in runs["04"].reason
    overview = tables.overview(runs).set_index("study")
    for study, stem in (("02", "02_resnet50_cbam_100class"), ("04", "04_cifar10_random_search")):
        command = overview.loc[study, "to produce it"]
        assert f"papermill notebooks/{stem}.ipynb" in command and f"-p out_dir {runs_dir}/{stem}" in command
        assert set(tables.study_table(runs[study])["ours"]) == {tables.NOT_RUN}
        note = report.study_note(runs[study])
        assert tables.NOT_RUN in note and runs[study].command in note
    assert "-f configs/03_cifar10_resnet/demo.yaml" in report.run_command(runs_dir, "03_cifar10_resnet")


def test_a_failed_latest_run_is_not_reported_with_its_stale_metrics(tmp_path):
    runs_dir = write_runs(tmp_path)
    executed = {"cells": [], "metadata": {"papermill": {"exception": True}}, "nbformat": 4, "nbformat_minor": 4}
    (tmp_path / "03_cifar10_resnet.ipynb").write_text(json.dumps(executed))
    stale = time.time() - 60
    os.utime(tmp_path / "03_cifar10_resnet" / "metrics.json", (stale, stale))
    record = report.read_study(runs_dir, "03")
    assert record.status == tables.NOT_RUN and "failed" in record.reason


def test_runs_off_the_schema_are_not_run_naming_the_field_and_unrecorded_figures_show_a_dash(tmp_path):
    (tmp_path / "01_two_layer_imagenet_mini").mkdir()
    (tmp_path / "01_two_layer_imagenet_mini" / "metrics.json").write_text(
        json.dumps({"study": "01", "models": {"m": {"x": 1}}}))
    (tmp_path / "04_cifar10_random_search").mkdir()
    (tmp_path / "04_cifar10_random_search" / "metrics.json").write_text("[1, 2]")
    fixture = fixture_results()
    for stem in ("02_resnet50_cbam_100class", "03_cifar10_resnet"):
        results.write(tmp_path / stem, fixture[stem])
    untested = results.read(tmp_path / "03_cifar10_resnet")
    untested.models["cifar_resnet"].test_acc = untested.models["cifar_resnet"].final_train_acc = None
    results.write(tmp_path / "03_cifar10_resnet", untested)
    runs = report.read_runs(tmp_path)
    assert runs["04"].status == tables.NOT_RUN and "list, not a JSON object" in runs["04"].reason
    assert runs["01"].status == tables.NOT_RUN and "missing field 'data'" in runs["01"].reason
    table = tables.study_table(runs["03"]).set_index("quantity")
    assert table.loc["test accuracy", "ours"] == table.loc["final training accuracy", "ours"] == tables.MISSING
    assert set(tables.study_table(runs["01"])["hardware"]) == {tables.MISSING}
    assert tables.overview(runs).loc[0, "headline"] == tables.MISSING
    plots.plot_studies_learning_curves(runs, tmp_path / "curves.png")
    plots.plot_studies_accuracy_vs_parameters(runs, tmp_path / "acc.png")
    plots.plot_studies_seconds_per_epoch(runs, tmp_path / "speed.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in ("curves.png", "acc.png", "speed.png"))
    assert report.report_results(runs, str(tmp_path), {}).headline["studies_with_results"] == 2


def test_demo_runs_raise_the_banner_and_real_runs_do_not(tmp_path):
    demo = report.read_runs(write_runs(tmp_path / "demo"))
    assert "DEMO DATA" in report.banner_html(demo) and tables.data_label(demo) == "demo data"
    real = report.read_runs(write_runs(tmp_path / "real", data="real"))
    assert report.banner_html(real) == "" and report.report_results(real, "r", {}).data == "real"
    assert "No study has results" in report.banner_html(report.read_runs(tmp_path / "empty"))


@pytest.mark.parametrize("value, kind, text", [
    (0.5756, "pct", "57.56%"), (3318898, "int", "3,318,898"), (90.99, "mib", "90.99 MiB"), (None, "pct", "—"),
    (float("nan"), "pct", "—"), (7.5, "seconds", "7.5 s"), (200, "seconds", "3 min 20 s"),
    (7500, "seconds", "2 h 05 min"), ({"a": 1}, "text", '{"a": 1}'), ("x", "pct", "x"),
])
def test_fmt(value, kind, text):
    assert tables.fmt(value, kind) == text


def test_headline_text_shows_fractions_as_percentages_and_counts_as_integers():
    assert tables.headline_text({"test_acc": 0.5, "designs_searched": 50.0}) == "designs_searched 50, test_acc 50.00%"


def test_models_table_and_figures_cover_every_study(tmp_path):
    runs = report.read_runs(write_runs(tmp_path / "runs", skip={"02_resnet50_cbam_100class"}))
    table = tables.models_table(runs)
    assert set(table["study"]) == {"01", "03", "04"} and len(table) == 4 + 1 + 1
    assert list(runs["04"].trials["val_acc"]) == [0.30, 0.35, 0.42]
    shown = tables.models_display(runs).set_index("model")  # metrics.json keeps models in name order
    assert shown.loc["two_layer", "best_val_acc"] == "30.00%" and shown.loc["two_layer", "test_acc"] == tables.MISSING
    for plot, name in ((plots.plot_studies_learning_curves, "c.png"),
                       (plots.plot_studies_accuracy_vs_parameters, "a.png"),
                       (plots.plot_studies_seconds_per_epoch, "s.png")):
        fig = plot(runs, tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0
        if plot is plots.plot_studies_learning_curves:  # one panel per study, the missing one saying so
            assert len(fig.axes) == 4 and tables.NOT_RUN in [t.get_text() for t in fig.axes[1].texts]


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
    for study in studies.STUDIES.values():
        assert study.stem in text
    assert "not run" in text and "all checks passed" in text and "DEMO DATA" in text
    saved = results.read(out)
    assert saved.headline["studies_with_results"] == 3 and saved.extra["studies"]["04"]["status"] == "not run"


def test_summary_prints_each_runs_headline_and_names_a_file_off_the_schema(tmp_path):
    from lib import summary
    runs_dir = write_runs(tmp_path, broken={"04_cifar10_random_search"})
    lines = summary.summarize(str(runs_dir))
    assert lines[0] == f"results under {runs_dir}:" and len(lines) == 5
    line03 = next(line for line in lines if "03_cifar10_resnet" in line)
    assert "best_val_acc 55.00%, test_acc 53.00%" in line03 and "[demo data, 3 epochs, cpu]" in line03
    line04 = next(line for line in lines if "04_cifar10_random_search" in line)
    assert "unreadable" in line04 and str(runs_dir / "04_cifar10_random_search" / "metrics.json") in line04
    assert summary.summarize(str(tmp_path / "none"))[1] == "  (no metrics.json yet: run `make run`)"
