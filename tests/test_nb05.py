"""Notebook 05 (the results report): its smoke run and a run on a fixture of every study."""
import pytest

from conftest import ROOT, run_on_smoke_parameters
from fixture_runs import write_runs
from lib import results, writeups

pytestmark = pytest.mark.slow  # every test here executes the notebook


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
    for study in writeups.STUDIES.values():
        assert study.stem in text
    assert "not run" in text and "all checks passed" in text and "DEMO DATA" in text
    saved = results.read(out)
    assert saved.headline["studies_with_results"] == 3 and saved.extra["studies"]["04"]["status"] == "not run"


@pytest.mark.notebook
def test_notebook_runs_on_smoke_parameters(demo_root, smoke_runs, tmp_path):
    run_on_smoke_parameters("05_results_report", smoke_runs, tmp_path)
