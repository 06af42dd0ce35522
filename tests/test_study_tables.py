"""lib.study_tables: the studies' tables and verdicts."""
import pandas as pd
import pytest

from lib import study_tables


def _comparison(two, base):
    names = ["two_layer", "resnet34"]
    histories = {n: {"val_acc": [acc], "seconds": [1.0], "images_per_s": [10.0]} for n, acc in zip(names, (two, base))}
    architecture = pd.DataFrame({"parameters": [10, 100], "effective layers": [2, 35]}, index=names)
    return study_tables.comparison_table(names, histories, architecture)


def test_two_layer_verdict_reads_the_ratio_and_says_when_the_setting_differs(tmp_path):
    setting = {"data_kind": "real", "epochs": 20, "image_size": 224, "max_steps_per_epoch": None}
    comparison = _comparison(0.54, 0.6)
    assert comparison.loc["two_layer", "relative size (%)"] == 10.0
    text, performance, size, met = study_tables.two_layer_verdict(comparison, (0.5756, 0.6022), **setting)
    assert performance == pytest.approx(0.9) and size == pytest.approx(0.1) and met
    assert "goal is **met**" in text and "not the study's setting" not in text and "95.6% of the baseline" in text
    setting["data_kind"] = "demo"
    text, performance, _, met = study_tables.two_layer_verdict(_comparison(0.6, 0.5), (0.5756, 0.6022), **setting)
    assert performance == pytest.approx(1.2) and met is None and "120.0%" in text
    assert "goal is" not in text and "57.56%" not in text and "nothing here compares with the write-up" in text
    setting.update(data_kind="real", epochs=4)
    text, *_, met = study_tables.two_layer_verdict(_comparison(0.1, 0.5), (0.5756, 0.6022), **setting)
    assert met is False and "not the study's setting" in text
    text, performance, *_ = study_tables.two_layer_verdict(_comparison(0.1, 0.0), (0.5756, 0.6022), **setting)
    assert text.startswith("No verdict: ResNet34 never") and performance is None
