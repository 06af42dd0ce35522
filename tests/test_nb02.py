"""Notebook 02 (ResNet50-CBAM on hw1): its run on smoke parameters."""
import pytest

from conftest import run_on_smoke_parameters

pytestmark = pytest.mark.slow  # every test here executes the notebook


@pytest.mark.notebook
def test_notebook_runs_on_smoke_parameters(demo_root, smoke_runs, tmp_path):
    run_on_smoke_parameters("02_resnet50_cbam_100class", smoke_runs, tmp_path)
