"""Notebooks are committed clean (lib.nbclean), and the git filter keeps saved outputs out of git."""
import json
import subprocess
import sys

import pytest

from conftest import NOTEBOOKS, ROOT
from lib import nbclean


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


NB03 = ROOT / "notebooks" / "03_cifar10_resnet.ipynb"


def _as_lab_saves_it(nb):
    """What JupyterLab writes after Run All and Save: outputs, counts, ids, widget state, nbformat 4.5."""
    saved = json.loads(json.dumps(nb))
    for i, cell in enumerate(saved["cells"]):
        cell["id"] = f"cell-{i}"
        if cell["cell_type"] == "code":
            cell["execution_count"] = i
            cell["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hello\n"]}]
            cell["metadata"]["scrolled"] = True
    saved["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    saved["metadata"]["language_info"].update(version="3.11.7", mimetype="text/x-python")
    saved["nbformat_minor"] = 5
    return json.dumps(saved, indent=1, sort_keys=True)


def test_the_clean_filter_gives_back_the_committed_notebook(tmp_path):
    committed = NB03.read_text()
    result = subprocess.run([sys.executable, str(ROOT / "lib" / "nbclean.py")],
                            input=_as_lab_saves_it(json.loads(committed)), capture_output=True, text=True, check=True)
    assert result.stdout == committed
    assert nbclean.dumps(nbclean.clean(json.loads(committed))) == committed


def test_a_saved_notebooks_outputs_never_reach_git(tmp_path):
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    (repo / ".gitattributes").write_text((ROOT / ".gitattributes").read_text())
    (repo / "notebooks" / NB03.name).write_text(NB03.read_text())
    filter_cmd = f"{sys.executable} {ROOT / 'lib' / 'nbclean.py'}"
    git = ["git", "-c", f"filter.nbclean.clean={filter_cmd}", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=repo, check=True)
    (repo / "notebooks" / NB03.name).write_text(_as_lab_saves_it(json.loads(NB03.read_text())))
    # git lists a file whose size changed until its stat is refreshed; the content it would commit is unchanged
    assert subprocess.run(git + ["diff", "--quiet"], cwd=repo).returncode == 0
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    status = subprocess.run(git + ["status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    assert status.stdout == "", "a saved notebook's outputs would be committed"
