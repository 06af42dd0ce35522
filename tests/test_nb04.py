"""Notebook 04 (random architecture search): its run on smoke parameters, and its Ray path with ASHA on the CPU."""
import pytest

from conftest import papermill_error, run_on_smoke_parameters
from lib import results, search

pytestmark = pytest.mark.slow  # every test here executes the notebook
STEM = "04_cifar10_random_search"


@pytest.mark.notebook
def test_notebook_runs_on_smoke_parameters(demo_root, smoke_runs, tmp_path):
    run_on_smoke_parameters(STEM, smoke_runs, tmp_path)


def test_asha_without_ray_is_refused_before_the_data_is_read(demo_root, tmp_path):
    err = papermill_error(STEM, tmp_path, {"scheduler": "asha"})
    assert err is not None and "scheduler='asha' needs backend='ray'" in str(err)
    assert not (tmp_path / "run").exists(), "nothing may be written before the parameters are checked"


def test_ray_backend_with_asha_on_the_cpu(demo_root, tmp_path, monkeypatch):
    """`-p backend ray -p scheduler asha` end to end: every trial logged, those ASHA stopped marked as such."""
    pytest.importorskip("ray.tune", reason="ray is an optional extra: pip install -e .[ray]")
    monkeypatch.setenv("RAY_agent_register_timeout_ms", "120000")  # Ray's agents start slowly on a loaded machine
    err = papermill_error(STEM, tmp_path, {"backend": "ray", "scheduler": "asha", "num_trials": 4, "trial_epochs": 3,
                                           "cpus_per_trial": 1})
    assert err is None, err
    rows = search.read_trials(tmp_path / "run" / "trials.csv")
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    assert all(r["stopped_early"] == (r["epochs"] < 3) for r in rows), rows
    assert not search.ranked(rows)[0]["stopped_early"], "the best trial ran every epoch"
    facts = results.read(tmp_path / "run").extra["search"]
    assert facts["scheduler"] == "asha" and facts["stopped_early"] == sum(r["stopped_early"] for r in rows)
