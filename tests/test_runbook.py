"""lib.runbook: make run's plan (skip finished, resume partial, fresh overwrites)."""
from conftest import ROOT
from lib import runbook

NB03 = ROOT / "notebooks" / "03_cifar10_resnet.ipynb"


STEM03 = "03_cifar10_resnet"


def test_make_run_skips_finished_studies_resumes_partial_ones_and_fresh_overwrites(tmp_path):
    runs = tmp_path / "runs"
    params, skip = runbook.plan(str(NB03), "demo", str(runs))
    assert params == {"profile": "demo", "out_dir": str(runs / STEM03)} and skip is None
    (runs / STEM03).mkdir(parents=True)
    assert runbook.plan(str(NB03), "demo", str(runs))[0]["resume"] is True
    (runs / STEM03 / "metrics.json").write_text("{}")
    assert "finished earlier" in runbook.plan(str(NB03), "demo", str(runs))[1]
    assert runbook.plan(str(NB03), "demo", str(runs), fresh=True)[0]["overwrite"] is True
    report = ROOT / "notebooks" / "05_results_report.ipynb"
    assert runbook.plan(str(report), "demo", str(runs))[0]["runs_dir"] == str(runs)
