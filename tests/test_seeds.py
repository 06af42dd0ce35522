"""lib.seeds and lib.seeds_report on hand-made seed folders: statistics, verdicts, derived tolerances, compare."""
import math

import pytest

from lib import compare, results, seeds, seeds_report, summary
from test_compare import write_results

STEM = "03_cifar10_resnet"


def seed_folder(root, values):
    """root/seed<N>/03_cifar10_resnet/metrics.json with test_acc = values[N]."""
    for seed, value in enumerate(values):
        write_results(root / f"seed{seed}", {STEM: {"test_acc": value, "designs_searched": 8}})
    return root


def study01(root, pairs):
    """root/seed<N>/01_.../metrics.json whose two_layer and resnet34 models score pairs[N]."""
    for seed, (two, base) in enumerate(pairs):
        models = {"two_layer": results.ModelResult(10, two, 1.0), "resnet34": results.ModelResult(20, base, 1.0)}
        results.write(str(root / f"seed{seed}" / "01_two_layer_imagenet_mini"), results.StudyResults(
            study="01", data="real", cfg={}, device="cpu", amp=None, channels_last=None, compile=None, epochs_run=1,
            headline={"two_layer_val_acc": two, "resnet34_val_acc": base}, models=models))
    return root


def test_statistics_are_mean_sample_std_and_n(tmp_path):
    got = seeds.headline_stats(seed_folder(tmp_path, [0.80, 0.82, 0.87]))[STEM]
    assert got["test_acc"].n == 3 and got["test_acc"].mean == pytest.approx(0.83)
    assert got["test_acc"].std == pytest.approx(math.sqrt((0.03 ** 2 + 0.01 ** 2 + 0.04 ** 2) / 2))
    assert got["designs_searched"].std == 0
    assert seeds.fmt_stat(got["test_acc"], "test_acc") == "83.00% ± 3.61% (n=3)"
    assert seeds.fmt_stat(seeds.stat([0.5]), "test_acc") == "50.00% (n=1)"


def test_derived_tolerance_follows_its_rule_and_is_written_beside_the_figures(tmp_path):
    folder = seed_folder(tmp_path / "runs", [0.80, 0.82, 0.87])
    s = seeds.headline_stats(folder)[STEM]["test_acc"]
    assert seeds.derived_tolerance(s) == math.ceil(2.5 * math.sqrt(2) * s.std * 1000) / 1000 == 0.128
    out = tmp_path / "tolerances.yaml"
    seeds.main([str(folder), "--tolerances", str(out)])
    text = out.read_text()
    assert compare.read_tolerances(str(out)) == {STEM: {"test_acc": 0.128, "designs_searched": 0}}
    assert "sqrt(2)" in text and "83.00% ± 3.61% (n=3)" in text
    foreign = tmp_path / "mine.yaml"
    foreign.write_text("03_cifar10_resnet:\n  test_acc: 0.01  # measured by hand\n")
    with pytest.raises(FileExistsError, match="not a tolerances file"):
        seeds.main([str(folder), "--tolerances", str(foreign)])
    assert "by hand" in foreign.read_text()


def test_verdict_says_whether_a_difference_exceeds_the_seed_spread(tmp_path):
    clear = seeds.verdicts(study01(tmp_path / "clear", [(0.60, 0.50), (0.62, 0.51), (0.61, 0.52)]))
    assert [v.label for v in clear] == ["two-layer vs ResNet34"] and clear[0].exceeds is True
    # hand computation: differences 0.10, 0.11, 0.09: mean 0.10, s_d 0.01, margin 4.303 x 0.01 / sqrt(3)
    assert clear[0].diff.mean == pytest.approx(0.10) and clear[0].margin == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    noise = seeds.verdicts(study01(tmp_path / "noise", [(0.60, 0.50), (0.50, 0.58), (0.55, 0.54)]))
    assert noise[0].exceeds is False and "within the seed spread" in noise[0].text
    one = seeds.verdicts(study01(tmp_path / "one", [(0.60, 0.50)]))
    assert one[0].exceeds is None and "one seed" in one[0].text


def test_compare_and_summary_show_mean_std_n_for_a_seed_folder(tmp_path, capsys):
    reference = write_results(tmp_path / "reference", {STEM: {"test_acc": 0.82, "designs_searched": 8}},
                              f"{STEM}:\n  test_acc: 0.06\n")
    assert compare.main([reference, str(seed_folder(tmp_path / "ok", [0.80, 0.82, 0.87]))]) == 0
    assert "82.00% (n=1)" in capsys.readouterr().out
    assert compare.main([reference, str(seed_folder(tmp_path / "far", [0.80, 0.82, 0.89]))]) == 1
    assert "83.67% ± 4.73% (n=3)" in capsys.readouterr().out  # one seed 7 points off: flagged
    assert summary.main([str(tmp_path / "ok")]) == 0
    assert f"{STEM:<30} test_acc" in capsys.readouterr().out


def test_report_section_finds_the_seeds_beside_its_runs_dir(tmp_path):
    folder = study01(tmp_path, [(0.60, 0.50), (0.62, 0.51), (0.61, 0.52)])
    figures, verdicts = seeds_report.report_tables(str(folder / "seed0"))
    assert "61.00% ± 1.00% (n=3)" in set(figures["mean ± std (n)"])
    assert list(verdicts["verdict"].str.startswith("exceeds")) == [True]
    assert "mean ± sample standard deviation" in seeds_report.report_note(str(folder / "seed0"))
    empty = seeds_report.report_tables(str(tmp_path / "elsewhere"))
    assert [len(t) for t in empty] == [0, 0] and "one run" in seeds_report.report_note(str(tmp_path / "elsewhere"))


def test_a_rerun_seed_without_a_readable_run_fails_the_row_and_duplicate_seed_numbers_are_refused(tmp_path):
    reference = seed_folder(tmp_path / "reference", [0.80, 0.82, 0.81])
    rerun = seed_folder(tmp_path / "rerun", [0.80, 0.82, 0.81])
    (rerun / "seed1" / STEM / "metrics.json").write_text("")  # unreadable: only "skipped" on stderr before
    assert compare.main([str(reference), str(rerun)]) == 1
    (rerun / "seed01").mkdir()
    with pytest.raises(SystemExit, match="seed01 and .*seed1 are both seed 1|seed1 and .*seed01 are both seed 1"):
        seeds.seed_dirs(rerun)
