"""The results report (lib/report.py, plots.plot_studies_*) on runs written here."""
import dataclasses
import json
import os
import time

import matplotlib
import pytest

from fixture_runs import fixture_results, write_runs
from lib import plots, report, results, tables, writeups

matplotlib.use("Agg")


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
            assert shown == (tables.NOT_REPORTED if key is None else tables.fmt(writeups.figure(study, key), kind))
    assert writeups.figure("01", "two_layer_val_acc") == 0.5756 and writeups.figure("02", "model_mib") == 90.99
    with pytest.raises(KeyError, match="publishes no figure 'nope'"):
        writeups.figure("04", "nope")


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


def test_the_run_sits_beside_the_profiles_committed_reference_with_its_verdicts(tmp_path):
    reference = os.path.join(os.path.dirname(os.path.dirname(__file__)), "results", "cpu")
    rerun = tmp_path / "cpu"  # same profile name: results/cpu is its reference
    for study in ("01_two_layer_imagenet_mini", "03_cifar10_resnet"):
        os.makedirs(rerun / study)
        with open(os.path.join(reference, study, "metrics.json")) as fh:
            tree = json.load(fh)
        if study.startswith("03"):
            tree["headline"]["test_acc"] -= 0.05  # beyond its 1.5-point tolerance
        (rerun / study / "metrics.json").write_text(json.dumps(tree))
    note, table = report.reference_check(str(rerun))
    verdicts = table.set_index(["study", "metric"])["verdict"]
    assert verdicts["03_cifar10_resnet", "test_acc"] == "DIFFERS"
    assert verdicts["03_cifar10_resnet", "best_val_acc"] == "within tolerance"
    assert verdicts["02_resnet50_cbam_100class", "final_val_acc"] == "not run"
    assert table.set_index(["study", "metric"]).loc[("01_two_layer_imagenet_mini", "two_layer_pct_of_resnet34"),
                                                    "reference"] == "143.33%"
    assert "**4 of 10**" in note and "results/cpu" in note
    assert report.reference_check(reference)[1] is None  # the reference itself: nothing to set beside it
    assert "No committed reference" in report.reference_check(str(tmp_path / "demo"))[0]


def test_the_hardware_names_the_processor_torch_and_the_day(tmp_path):
    runs = report.read_runs(write_runs(tmp_path))
    facts = tables.run_facts(runs["03"].results, runs["03"].date)
    assert facts["hardware"] == "cpu · CPU model not recorded · 2 threads" and facts["date"] == "—"
    named = dataclasses.replace(runs["03"].results, environment={"cpu": "AMD EPYC 9654", "cpu_threads": 16,
                                                                  "torch": "2.14.1", "date": "2026-12-02"})
    facts = tables.run_facts(named)
    assert (facts["hardware"], facts["torch"], facts["date"]) == ("cpu · AMD EPYC 9654 · 16 threads", "2.14.1",
                                                                  "2026-12-02")
