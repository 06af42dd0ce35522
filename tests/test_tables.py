"""lib.tables: formatting of the report's figures."""
import re

import pytest

from lib import tables


@pytest.mark.parametrize("value, kind, text", [
    (0.5756, "pct", "57.56%"), (3318898, "int", "3,318,898"), (90.99, "mib", "90.99 MiB"), (None, "pct", "—"),
    (float("nan"), "pct", "—"), (7.5, "seconds", "7.5 s"), (200, "seconds", "3 min 20 s"),
    (7500, "seconds", "2 h 05 min"), ({"a": 1}, "text", '{"a": 1}'), ("x", "pct", "x"),
])
def test_fmt(value, kind, text):
    assert tables.fmt(value, kind) == text


def test_headline_text_shows_fractions_as_percentages_and_counts_as_integers():
    assert tables.headline_text({"test_acc": 0.5, "designs_searched": 50.0}) == "designs_searched 50, test_acc 50.00%"


def test_ratios_read_as_percentages_everywhere_and_short_figures_do_not_wrap():
    assert tables.headline_text({"two_layer_pct_of_resnet34": 1.4333, "model_mib": 91.0956}) == (
        "model_mib 91.1, two_layer_pct_of_resnet34 143.33%")
    html = tables.styled(tables.pd.DataFrame({"time": ["10 min 49 s"], "note": ["long text"]})).to_html()
    assert re.findall(r"_row0_(col\d) \{\s*white-space: nowrap", html) == ["col0"]  # the time, not the note
