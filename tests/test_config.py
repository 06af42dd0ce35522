"""lib.config: parameter types, ranges and values given as strings."""

import pytest

from lib import config


def test_build_cfg_checks_types_and_unknown_names():
    ns = {"epochs": 3, "lr": 1, "name": "x", "steps": None,
          "In": ["", "# Parameters\nepochs = 3\nepoch = 4\n", "cfg = build_cfg(...)"]}
    ann = {"epochs": int, "lr": float, "name": str, "steps": int | None}
    with pytest.raises(ValueError, match="unknown parameter 'epoch'"):
        config.build_cfg(ns, ann)
    ns["In"] = []
    cfg = config.build_cfg(ns, ann)
    assert cfg == {"epochs": 3, "lr": 1.0, "name": "x", "steps": None} and isinstance(cfg["lr"], float)
    ns["epochs"] = "ten"
    with pytest.raises(ValueError, match="'epochs' = 'ten' should be of type int"):
        config.build_cfg(ns, ann)


def test_parameter_ranges_give_one_line_each():
    namespace = {"batch_size": 0, "epochs": -1, "lr": 0.0, "dropout": 1.5, "crop_scale": [0.0, 1.0],
                 "max_steps_per_epoch": None, "val_size": 5000}
    annotations = {"batch_size": int, "epochs": int, "lr": float, "dropout": float, "crop_scale": list,
                   "max_steps_per_epoch": type(None) | int, "val_size": int}
    ranges = {"batch_size": ">= 1", "epochs": ">= 1", "lr": "> 0", "dropout": "[0, 1)", "crop_scale": "(0, 1]",
              "max_steps_per_epoch": ">= 1", "val_size": ">= 1"}
    with pytest.raises(ValueError) as err:
        config.build_cfg(namespace, annotations, ranges)
    lines = str(err.value).splitlines()
    assert lines[1:6] == ["  parameter 'batch_size' = 0 should be >= 1", "  parameter 'epochs' = -1 should be >= 1",
                          "  parameter 'lr' = 0.0 should be > 0", "  parameter 'dropout' = 1.5 should be in [0, 1)",
                          "  parameter 'crop_scale' = [0.0, 1.0]: 0.0 breaks the rule, every element should be "
                          "in (0, 1]"]
    assert len(lines) == 7 and "Fix the value" in lines[-1]
    fine = dict(namespace, batch_size=1, epochs=1, lr=1e-3, dropout=0.0, crop_scale=[0.08, 1.0])
    assert config.build_cfg(fine, annotations, ranges)["lr"] == 1e-3
    with pytest.raises(ValueError, match="a range is declared for 'epoch', which is no parameter"):
        config.build_cfg(fine, annotations, {"epoch": ">= 1"})


def test_list_and_dict_parameters_given_as_strings_are_parsed():
    ns = {"models": '["two_layer", "resnet34"]', "space": "{stages: [2, 3]}", "name": "[not a list]", "In": []}
    cfg = config.build_cfg(ns, {"models": list, "space": dict, "name": str})
    assert cfg == {"models": ["two_layer", "resnet34"], "space": {"stages": [2, 3]}, "name": "[not a list]"}


def test_a_list_parameter_that_is_not_a_list_says_how_to_pass_one():
    with pytest.raises(ValueError, match=r"'models' = 'two_layer' should be of type list.*-p passes a string.*-y.*-f"):
        config.build_cfg({"models": "two_layer", "In": []}, {"models": list})


def test_injected_names_without_history_come_from_the_injected_cell():
    """nbval keeps no history: the injected cell's own list names what papermill injected (else nothing)."""
    from lib.config import injected_names
    assert injected_names({"In": [], "__papermill_injected__": ["out_dir", "profile"]}) == ["out_dir", "profile"]
    assert injected_names({"In": []}) == []
    assert injected_names({"In": ["", "# Parameters\nepochs = 2\n", "x"]}) == ["epochs"]
