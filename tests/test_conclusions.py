"""Issue 25: every notebook ends with a written conclusion; a study's quotes its reference run on real images.

The reference runs are results/cpu/<notebook>/metrics.json (`make reproduce PROFILE=cpu`). A study notebook's
conclusion links its executed notebook there and quotes every headline accuracy as it was measured, so a new
reference run that changes a figure fails here until the conclusion is updated. Notebook 05's numbers depend on the
runs it reads, so its conclusion may quote only figures that no rerun changes: the committed reference's and the
write-ups'.
"""
import json
import re

import pytest

from conftest import NOTEBOOKS, ROOT
from lib import results, writeups

STUDIES = [p for p in NOTEBOOKS if not p.stem.startswith("05")]
REPORT = next(p for p in NOTEBOOKS if p.stem.startswith("05"))


def conclusion(path):
    """The notebook's last cell's text, which must be a markdown conclusion."""
    cell = json.loads(path.read_text())["cells"][-1]
    text = "".join(cell["source"])
    assert cell["cell_type"] == "markdown" and text.startswith("## Conclusion"), f"{path.name} ends in no conclusion"
    return text


def reference_accuracies(stem):
    """The headline accuracies of the committed reference run, as the conclusions print them (79.70%)."""
    headline = results.read(ROOT / "results" / "cpu" / stem).headline
    return {key: f"{value:.2%}" for key, value in headline.items() if key.endswith("_acc")}


def reference_model_accuracies(stem):
    """Every model's best validation and test accuracy in the committed reference run, as printed."""
    models = results.read(ROOT / "results" / "cpu" / stem).models.values()
    return {f"{acc:.2%}" for m in models for acc in (m.best_val_acc, m.test_acc) if acc is not None}


def relative_links(text):
    """Every relative link target in a markdown text."""
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"\w+://", t)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_link_in_the_conclusion_exists(path):
    links = relative_links(conclusion(path))
    assert links, f"{path.name}: the conclusion links no reference result"
    for target in links:
        assert (path.parent / target).exists(), f"{path.name}: {target} does not exist"


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_a_study_quotes_its_reference_run_and_asks_questions(path):
    text = conclusion(path)
    assert f"../results/cpu/{path.stem}.ipynb" in relative_links(text)
    quoted = reference_accuracies(path.stem)
    assert quoted and all(value in text for value in quoted.values()), (quoted, path.name)
    assert "2-core AMD EPYC CPU" in text and "not comparable" in text
    assert len(re.findall(r"^\d\. .*?\?", text, flags=re.M | re.S)) >= 2, "two or three questions to try"


def test_the_reports_conclusion_quotes_only_figures_no_rerun_changes():
    text = conclusion(REPORT)
    allowed = {value for p in STUDIES for value in reference_accuracies(p.stem).values()}
    allowed |= {value for p in STUDIES for value in reference_model_accuracies(p.stem)}
    allowed |= {f"{f.value:.2%}" for study in writeups.STUDIES.values() for f in study.figures.values()}
    quoted = set(re.findall(r"\d+\.\d+%", text))
    assert quoted and quoted <= allowed, quoted - allowed
    assert all(any(v in text for v in reference_accuracies(p.stem).values()) for p in STUDIES)
