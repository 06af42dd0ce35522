"""lib.compare: a rerun against the reference results, metric by metric, within the stated tolerances."""
import json
import os
import pathlib
import shutil

import pytest

from lib import compare, results, summary
from lib.utils import repo_path, repo_root

ROOT = pathlib.Path(repo_root())

REFERENCE = {"03_cifar10_resnet": {"test_acc": 0.80, "best_val_acc": 0.81},
             "04_cifar10_random_search": {"retrain_test_acc": 0.70, "designs_searched": 8}}


TOLERANCES = ("03_cifar10_resnet:\n  test_acc: 0.02\n  best_val_acc: 0.02\n"
              "04_cifar10_random_search:\n  retrain_test_acc: 0.03\n")


def write_results(root, headlines, tolerances=None):
    """A results folder: <study>/metrics.json in the results schema with the given headlines (and tolerances.yaml)."""
    for study, headline in headlines.items():
        model = results.ModelResult(parameters=1000, best_val_acc=0.5, seconds_per_epoch=1.0)
        results.write(str(root / study), results.StudyResults(
            study=study[:2], data="real", cfg={}, device="cpu", amp="bf16", channels_last=True, compile=False,
            epochs_run=1, headline=headline, models={"model": model}))
    if tolerances is not None:
        (root / "tolerances.yaml").write_text(tolerances)
    return str(root)


def doctored(headlines, study, metric, delta):
    """A copy of the headlines with one metric moved by delta."""
    copy = {s: dict(m) for s, m in headlines.items()}
    copy[study][metric] += delta
    return copy


def run_compare(tmp_path, rerun, capsys):
    """Exit status and printed table of `python -m lib.compare` on the fixture reference and a rerun."""
    ref = write_results(tmp_path / "ref", REFERENCE, TOLERANCES)
    status = compare.main([ref, write_results(tmp_path / "rerun", rerun)])
    return status, capsys.readouterr().out


def test_identical_rerun_passes_and_prints_every_metric(tmp_path, capsys):
    status, out = run_compare(tmp_path, REFERENCE, capsys)
    assert status == 0
    assert "4 of 4 metrics reproduce within tolerance" in out
    assert "80.00%" in out and "test_acc" in out and "designs_searched" in out


def test_difference_within_tolerance_passes(tmp_path, capsys):
    status, out = run_compare(tmp_path, doctored(REFERENCE, "03_cifar10_resnet", "test_acc", -0.019), capsys)
    assert status == 0
    assert "-1.90%" in out


def test_difference_beyond_tolerance_fails_naming_the_metric(tmp_path, capsys):
    status, out = run_compare(tmp_path, doctored(REFERENCE, "03_cifar10_resnet", "test_acc", 0.021), capsys)
    assert status == 1
    line = next(row for row in out.splitlines() if "test_acc" in row)
    assert line.startswith("03_cifar10_resnet") and line.endswith("DIFFERS")
    assert "1 do not" in out


def test_metric_without_tolerance_must_match_exactly(tmp_path, capsys):
    status, _ = run_compare(tmp_path, doctored(REFERENCE, "04_cifar10_random_search", "designs_searched", 1), capsys)
    assert status == 1


def test_missing_study_or_metric_fails(tmp_path, capsys):
    rerun = {"03_cifar10_resnet": {"test_acc": 0.80}}
    status, out = run_compare(tmp_path, rerun, capsys)
    assert status == 1
    assert out.count("missing") == 3  # best_val_acc, and both metrics of the absent study


def test_studies_limits_the_check_to_the_notebooks_rerun(tmp_path, capsys):
    ref = write_results(tmp_path / "ref", REFERENCE, TOLERANCES)
    rerun = write_results(tmp_path / "rerun", {"03_cifar10_resnet": REFERENCE["03_cifar10_resnet"]})
    assert compare.main([ref, rerun]) == 1  # 04 was not rerun
    assert compare.main([ref, rerun, "--studies", "03"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("2 of 2 metrics reproduce within tolerance")
    assert compare.main([ref, rerun, "--studies", "03_cifar10_resnet", "04"]) == 1
    with pytest.raises(SystemExit, match="--studies 02: not in the reference; it holds 03_cifar10_resnet"):
        compare.main([ref, rerun, "--studies", "02"])


def test_reference_without_results_says_so(tmp_path):
    with pytest.raises(SystemExit, match="no <study>/metrics.json"):
        compare.main([str(tmp_path), str(tmp_path)])


def test_results_off_the_schema_name_the_file(tmp_path):
    ref = write_results(tmp_path / "ref", REFERENCE, TOLERANCES)
    os.makedirs(tmp_path / "rerun" / "03_cifar10_resnet")
    (tmp_path / "rerun" / "03_cifar10_resnet" / "metrics.json").write_text(json.dumps({"headline": {}}))
    with pytest.raises(SystemExit, match="metrics.json"):
        compare.main([ref, str(tmp_path / "rerun")])


def test_malformed_tolerances_name_the_file(tmp_path):
    ref = write_results(tmp_path / "ref", REFERENCE, "03_cifar10_resnet: 0.02\n")
    with pytest.raises(SystemExit, match="tolerances.yaml"):
        compare.main([ref, ref])


@pytest.mark.skipif(not os.path.isdir(repo_path("results/cpu")), reason="no committed reference results yet")
def test_committed_reference_passes_against_itself_and_fails_doctored(tmp_path, capsys):
    reference = repo_path("results/cpu")
    assert compare.main([reference, reference]) == 0
    copy = tmp_path / "cpu"
    shutil.copytree(reference, copy)
    path = copy / "03_cifar10_resnet" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["headline"]["test_acc"] -= 0.10
    path.write_text(json.dumps(metrics))
    assert compare.main([reference, str(copy)]) == 1


@pytest.mark.skipif(not os.path.isdir(repo_path("results/cpu-seed1")), reason="no second-seed run committed")
def test_committed_second_seed_lies_within_the_stated_tolerances(capsys):
    # the tolerances were derived from this spread: a tightened tolerances.yaml or a swapped result fails here
    assert compare.main([repo_path("results/cpu"), repo_path("results/cpu-seed1"), "--studies", "03"]) == 0


def test_there_is_one_compare_command(tmp_path, capsys):
    """`make check-results` runs lib.compare; lib.summary no longer takes a second route to the same check."""
    ref = write_results(tmp_path / "ref", REFERENCE, TOLERANCES)
    with pytest.raises(SystemExit) as exit_info:
        summary.main(["--compare", ref, ref])
    assert exit_info.value.code == 2 and "lib.compare" in capsys.readouterr().out + summary.__doc__
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ncheck-results:", 1)[1].split("\n\n", 1)[0]
    assert "-m lib.compare results/$(PROFILE) $(RUNS)" in recipe and "--compare" not in makefile
