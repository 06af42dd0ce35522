"""lib.lab: in a notebook kernel a failing cell carries the script that scrolls its error into view after Run All."""
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
    return [o for o in outputs if o.get("data", {}).get("application/javascript") == lab.SCRIPT]


def test_a_failing_cell_ends_with_the_scroll_script_and_a_note():
    ok, fails, fails_to_parse, interrupted, ok_again = outputs_after([
        "from lib import lab\nlab.keep_failures_in_view()\nlab.keep_failures_in_view()  # registered once",
        "1 / 0",
        "def broken(:",
        "raise KeyboardInterrupt",
        "x = 1",
    ])
    assert ok == [] and ok_again == []
    assert [o.output_type for o in fails] == ["error", "display_data"]  # after the traceback, once
    assert len(scripts(fails)) == 1 and fails[-1].data["text/plain"] == lab.NOTE
    assert len(scripts(fails_to_parse)) == 1
    assert scripts(interrupted) == []  # the student stopped it: nothing to bring into view


def test_a_notebooks_first_call_registers_it_and_a_plain_python_does_nothing():
    _, fails = outputs_after([
        "from lib import profiles\nprofiles.apply_profile({'__annotations__': {}}, '03_cifar10_resnet')",
        "raise ValueError('bad value')",
    ])
    assert len(scripts(fails)) == 1
    lab.keep_failures_in_view()  # no IPython shell in pytest's process: no error, nothing registered
