"""Every notebook, end to end: papermill injects its smoke parameters (prepare only), nbval executes it.

The invariants live in each notebook's last cell as asserts, so `--nbval-lax` (no output comparison) still fails
when a result is not sane.
"""
import json
import subprocess
import sys

import papermill
import pytest
import yaml

from conftest import ROOT
from lib import results

# each study's headline keys (lib/results.py); 01's ratio is left out when ResNet34 scored 0 (a smoke run may)
HEADLINES = {"01": {"two_layer_val_acc", "resnet34_val_acc"}, "02": {"final_val_acc", "model_mib"},
             "03": {"test_acc", "best_val_acc"}, "04": {"best_trial_val_acc", "retrain_test_acc", "designs_searched"},
             "05": {"studies_with_results"}}
OPTIONAL_HEADLINES = {"two_layer_pct_of_resnet34"}
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found under notebooks/"


def _committed_text(path):
    """The notebook as git's index holds it, or the file when git cannot say."""
    result = subprocess.run(["git", "show", f":{path.relative_to(ROOT).as_posix()}"], cwd=ROOT, capture_output=True,
                            text=True)
    return result.stdout if result.returncode == 0 else path.read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    """Committed notebooks hold no outputs, execution counts or ids, and have a cell tagged 'parameters'.

    What git holds is checked (the index), so a notebook run and saved in JupyterLab, whose outputs the nbclean
    filter keeps out of git, passes; without git (an unpacked archive) the file itself is checked.
    """
    nb = json.loads(_committed_text(path))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not [i for i, c in enumerate(code) if c.get("outputs")], "strip the outputs before committing"
    assert all(c.get("execution_count") is None for c in code), "strip the execution counts"
    assert not [c for c in nb["cells"] if "id" in c], "strip the cell ids (nbformat_minor 4)"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and code[0] is tagged[0], "the first code cell must be the one tagged 'parameters'"
    for stem in ("smoke", "demo"):
        assert (ROOT / "configs" / path.stem / f"{stem}.yaml").is_file(), f"configs/{path.stem}/{stem}.yaml missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_config_names_are_parameters(path):
    """Every name in the papermill parameter files is declared in the notebook's parameters cell."""
    declared = {p for p in papermill.inspect_notebook(str(path))}
    for config in sorted((ROOT / "configs" / path.stem).glob("*.yaml")):
        unknown = set(yaml.safe_load(config.read_text())) - declared
        assert not unknown, f"{config.name} sets undeclared parameters {unknown}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter(path):
    """papermill's parser skips a line it cannot read (two '=' on it, say): --help-notebook would not list it and
    injecting it would warn of an unknown parameter."""
    import ast
    code = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    annotated = [node.target.id for node in ast.parse("".join(code["source"])).body if isinstance(node, ast.AnnAssign)]
    assert annotated and list(papermill.inspect_notebook(str(path))) == annotated


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_smoke_parameters(path, demo_root, smoke_runs, tmp_path):
    # the one switch: the smoke profile's values, with out_dir (and the report's runs_dir) given explicitly
    params = {"profile": "smoke", "out_dir": str(smoke_runs / path.stem)}
    if "runs_dir" in yaml.safe_load((ROOT / "configs" / path.stem / "smoke.yaml").read_text()):
        params["runs_dir"] = str(smoke_runs)  # the report reads the smoke runs made earlier in this session
    prepared = tmp_path / path.name
    papermill.execute_notebook(str(path), str(prepared), parameters=params, prepare_only=True, log_output=False)
    result = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(prepared)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{path.name} failed under nbval:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
    saved = results.read(smoke_runs / path.stem)  # in lib.results' schema, with the study's headline
    assert saved.cfg["out_dir"] == params["out_dir"] and saved.study == path.stem[:2]
    assert HEADLINES[saved.study] <= set(saved.headline) <= HEADLINES[saved.study] | OPTIONAL_HEADLINES, saved.headline
