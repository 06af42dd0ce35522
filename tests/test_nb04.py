"""Notebook 04 (random architecture search): its run on smoke parameters."""
import pytest

from conftest import run_on_smoke_parameters

pytestmark = pytest.mark.slow  # every test here executes the notebook


@pytest.mark.notebook
def test_notebook_runs_on_smoke_parameters(demo_root, smoke_runs, tmp_path):
    run_on_smoke_parameters("04_cifar10_random_search", smoke_runs, tmp_path)
