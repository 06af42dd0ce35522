"""lib.lab: in a notebook kernel a failing cell carries the script that scrolls its error into view after Run All."""
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT
from lib import lab

pytestmark = pytest.mark.slow  # starts a kernel


def outputs_after(sources):
    """Run the cells in a fresh kernel, errors allowed; returns each cell's outputs."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, kernel_name="python3", allow_errors=True, timeout=120,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return [cell.outputs for cell in notebook.cells]


def scripts(outputs):
    """The lib.lab scripts among one cell's outputs."""
    return [o.data["application/javascript"] for o in outputs
            if "scrollIntoView" in o.get("data", {}).get("application/javascript", "")]


def test_a_failing_cell_ends_with_the_scroll_script_and_a_note():
    before = time.time() * 1000
    ok, fails, fails_to_parse, interrupted, exits, ok_again = outputs_after([
        "from lib import lab\nlab.keep_failures_in_view()\nlab.keep_failures_in_view()  # registered once",
        "1 / 0",
        "def broken(:",
        "raise KeyboardInterrupt",
        "raise SystemExit(0)",
        "x = 1",
    ])
    assert ok == [] and ok_again == []
    assert [o.output_type for o in fails] == ["error", "display_data"]  # after the traceback, once
    assert len(scripts(fails)) == 1 and fails[-1].data["text/plain"] == lab.NOTE
    failed_ms = int(re.search(r"Date\.now\(\) - (\d+) <", scripts(fails)[0]).group(1))
    assert before <= failed_ms <= time.time() * 1000  # when it failed: a later reopen does not scroll
    assert len(scripts(fails_to_parse)) == 1
    assert scripts(interrupted) == [] and scripts(exits) == []  # stopped on purpose: nothing to bring into view


def test_a_wrong_profile_in_the_notebooks_first_call_is_already_brought_into_view():
    (fails,) = outputs_after([
        "from lib import profiles\n"
        "profiles.apply_profile({'profile': 'dmeo', '__annotations__': {}}, '03_cifar10_resnet')",
    ])
    assert fails[0].output_type == "error" and "dmeo" in fails[0].evalue
    assert len(scripts(fails)) == 1
