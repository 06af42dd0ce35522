"""lib.profiles and the papermill parameter files: every name a parameter, profiles filled in."""
import json
import re
import shutil

import papermill
import pytest
import yaml

from conftest import NOTEBOOKS, ROOT
from lib import profiles


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


STEM03 = "03_cifar10_resnet"


def test_profile_fills_in_its_file_and_injected_values_win(capsys):
    ns = {"profile": "demo", "epochs": 7, "val_size": 5000, "out_dir": "mine", "data_dir": "data/cifar10",
          "device": "auto", "In": ["", '# Parameters\nprofile = "demo"\nout_dir = "mine"\n', "apply_profile(...)"]}
    applied = profiles.apply_profile(ns, STEM03)
    assert ns["data_dir"] == "data/demo/cifar10" and ns["val_size"] == 500  # from configs/03_cifar10_resnet/demo.yaml
    assert ns["out_dir"] == "mine"  # injected by papermill: beats the profile
    assert ns["epochs"] == 4  # the cell's value (an edit or not) gives way to the profile's
    assert "out_dir" not in applied and applied["epochs"] == 4
    printed = capsys.readouterr().out
    assert re.search(r"epochs = 4 +\(demo\.yaml, replaces 7\)", printed)
    assert re.search(r"out_dir = 'mine' +\(injected by papermill\)", printed)
    assert re.search(r"profile = 'demo' +\(injected by papermill\)", printed)
    assert "device" not in printed  # demo.yaml's device 'auto' is the cell's too: left at the cell's value, not listed


def test_without_a_profile_or_injection_every_value_is_the_cells(capsys):
    assert profiles.apply_profile({"profile": "full", "epochs": 3}, STEM03) == {}
    assert "every value is the parameters cell's" in capsys.readouterr().out


def _parameters_cell(path):
    return next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_an_edit_gives_the_same_values_saved_and_unsaved(path, tmp_path, monkeypatch):
    """Issue 25: the same edit of the parameters cell (epochs, with profile 'demo') run before and after saving the
    notebook gives the same values. The saved case writes the edited notebook where lib looks for files (a copy of
    the repository's configs and notebooks), so a lib that read the notebook on disk would see the difference."""
    cell = _parameters_cell(path)
    source = "".join(cell["source"])
    edited = re.sub(r'^profile: str = "full"', 'profile: str = "demo"', source, flags=re.M)
    edited = re.sub(r"^(epochs|num_trials): int = \d+", r"\1: int = 5", edited, flags=re.M)
    if "runs_dir" in edited:  # the report has no epochs: edit what its demo profile sets
        edited = re.sub(r'^runs_dir: str = ".*?"', 'runs_dir: str = "runs/mine"', edited, flags=re.M)
    assert edited != source and 'profile: str = "demo"' in edited

    def run_cell(root):
        monkeypatch.setattr(profiles, "repo_path", lambda p: str(root / p))
        namespace = {}
        exec(edited, namespace)  # the edited cell as JupyterLab runs it
        profiles.apply_profile(namespace, path.stem)
        return {name: namespace[name] for name in namespace["__annotations__"]}

    unsaved, saved = tmp_path / "unsaved", tmp_path / "saved"
    for root in (unsaved, saved):
        shutil.copytree(ROOT / "configs" / path.stem, root / "configs" / path.stem)
        (root / "notebooks").mkdir()
        shutil.copy(path, root / "notebooks" / path.name)
    notebook = json.loads(path.read_text())
    _parameters_cell_of(notebook)["source"] = edited.splitlines(keepends=True)
    (saved / "notebooks" / path.name).write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    before, after = run_cell(unsaved), run_cell(saved)
    assert before == after
    demo = yaml.safe_load((ROOT / "configs" / path.stem / "demo.yaml").read_text())
    assert all(before[k] == v for k, v in demo.items())  # the profile's values replaced the edit, both times


def _parameters_cell_of(notebook):
    return next(c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", []))


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ValueError, match=r"profile='dmeo'.*Choose one of \['full', 'cpu', 'demo', 'gpu', 'smoke'\]"):
        profiles.apply_profile({"profile": "dmeo"}, STEM03)
    assert profiles.apply_profile({"profile": "full"}, STEM03) == {}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_profile_file_passes_the_key_and_type_check(path):
    """The check apply_profile runs on a profile (known keys, types) accepts every committed profile."""
    code = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    namespace = {}
    exec("".join(code["source"]), namespace)  # the committed parameters cell: literals and annotations only
    for config in sorted((ROOT / "configs" / path.stem).glob("*.yaml")):
        profiles.check_profile_values(yaml.safe_load(config.read_text()) or {}, namespace["__annotations__"], config)


def _cell_defaults(path):
    """The parameters cell's literal defaults {name: value}."""
    import ast
    code = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    return {node.target.id: ast.literal_eval(node.value) for node in ast.parse("".join(code["source"])).body
            if isinstance(node, ast.AnnAssign) and node.value is not None}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_profile_reads_and_writes_its_own_runs_folder(path):
    """runs/<profile>/ for the cell's default profile ('full') and every profile file: notebook 05's default once
    read runs/demo while it said profile = "full"."""
    configs = (ROOT / "configs" / path.stem).glob("*.yaml")
    settings = {config.stem: yaml.safe_load(config.read_text()) for config in configs}
    defaults = _cell_defaults(path)
    settings[defaults["profile"]] = defaults
    for profile, values in settings.items():
        assert values["out_dir"] == f"runs/{profile}/{path.stem}", (profile, values["out_dir"])
        if "runs_dir" in defaults:
            assert values["runs_dir"] == f"runs/{profile}", (profile, values["runs_dir"])
