import os
import pathlib

import pytest

# Idle OpenMP threads spin by default; on a 2-core machine shared with a notebook kernel (or other jobs) that
# spinning starves the process doing the work. Set before torch loads; notebook kernels inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def demo_root():
    """lib.demo's default data sets under data/demo (written once, reused: the generator skips what is current)."""
    from lib import demo
    os.environ.setdefault("TQDM_DISABLE", "1")
    demo.write_all(DEMO)
    return DEMO


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """One folder for every notebook's smoke run in this session, so the report notebook can read them all."""
    return tmp_path_factory.mktemp("smoke_runs")
