"""lib.profiles and the papermill parameter files: every name a parameter, profiles filled in."""
import json

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


def test_profile_fills_in_its_file_and_explicit_values_win():
    ns = {"profile": "demo", "epochs": 7, "val_size": 5000, "out_dir": "mine", "data_dir": "data/cifar10",
          "In": ["", '# Parameters\nprofile = "demo"\nout_dir = "mine"\n', "apply_profile(...)"]}
    applied = profiles.apply_profile(ns, STEM03)
    assert ns["data_dir"] == "data/demo/cifar10" and ns["val_size"] == 500  # from configs/03_cifar10_resnet/demo.yaml
    assert ns["out_dir"] == "mine"  # injected by papermill
    assert ns["epochs"] == 7  # differs from the notebook's default (an edit, or an injection nbval cannot show)
    assert "out_dir" not in applied and "epochs" not in applied


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
