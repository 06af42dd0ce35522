"""lib.files: atomic writes, and no data file written around them."""
import json
import os
import re

import pytest

from conftest import ROOT
from lib import files


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    files.atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_open(path) as fh:
            fh.write("{broken")
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["m.json"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    """mkstemp's private 0600 must not leak into results that others (a grader, a web server) read."""
    files.atomic_write_json(tmp_path / "metrics.json", {"a": 1})
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == os.stat(tmp_path / "plain.txt").st_mode & 0o777


# writes that bypass lib.files' atomic helpers; files.py holds the helpers themselves, utils.py's torch.save writes
# into memory (state_dict_bytes), and demo.py builds each data set in a hidden `.partial` folder that is renamed into
# place whole (lib.demo.materialize)
DIRECT_WRITES = re.compile(r"torch\.save\(|\.to_csv\(|\.to_json\(|json\.dump\(|np\.save[z]?\(|pickle\.dump\(|"
                           r"\.write_text\(|\.write_bytes\(|\bopen\([^)]*[\"'][wax]b?\+?[\"']")


ATOMIC_BY_OTHER_MEANS = {"lib/files.py", "lib/utils.py", "lib/demo.py"}


def _code_sources():
    for path in sorted(ROOT.glob("lib/*.py")):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        yield str(path.relative_to(ROOT)), "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_data_files_are_written_only_through_the_atomic_helpers():
    """Figures (savefig) may be rewritten by a rerun; CSV, JSON and checkpoints must never be left half-written."""
    offenders = [f"{name}:{n}: {line.strip()}" for name, text in _code_sources() if name not in ATOMIC_BY_OTHER_MEANS
                 for n, line in enumerate(text.splitlines(), 1)
                 if DIRECT_WRITES.search(line.split("#")[0])]
    assert not offenders, ("write these through lib.files.atomic_write_text / atomic_write_json / atomic_torch_save / "
                           "atomic_open instead:\n" + "\n".join(offenders))
    assert DIRECT_WRITES.search('torch.save(state, "last.pt")') and DIRECT_WRITES.search("open(p, 'w')")
    assert not DIRECT_WRITES.search("open(path)") and not DIRECT_WRITES.search('open(path, "rb")')
