"""lib.utils: devices, the data label and start_run."""
import json
import re

import pytest
import torch

from lib import files, utils


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="device='cpu'"):
        utils.resolve_device("cuda")
    assert utils.resolve_device("auto").type == "cpu"


def test_data_kind_labels_demo_data():
    assert utils.data_kind("data/demo/cifar10") == "demo" and utils.data_kind("data/cifar10") == "real"


def test_output_directory_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out_dir = blocker / "run"  # root can write anywhere, but nothing can make a folder inside a file
    with pytest.raises(OSError, match=re.escape(str(out_dir)) + ".*cannot be written.*Pass another out_dir"):
        utils.start_run({"seed": 0}, str(out_dir))
    with pytest.raises(OSError, match=re.escape(str(out_dir / "m.json")) + ".*Choose a writable out_dir"):
        files.atomic_write_json(out_dir / "m.json", {})
    assert blocker.read_text() == "not a folder"


def test_start_run_refuses_resumes_or_overwrites(tmp_path):
    out_dir = tmp_path / "run"
    utils.start_run({"seed": 0}, str(out_dir))
    (out_dir / "checkpoints").mkdir()
    (out_dir / "checkpoints" / "best.pt").write_text("old")
    with pytest.raises(FileExistsError, match="already holds a run"):
        utils.start_run({"seed": 1}, str(out_dir))  # the same process (a notebook run twice in one kernel) too
    assert json.loads((out_dir / "cfg.json").read_text()) == {"seed": 0}
    utils.start_run({"seed": 0}, str(out_dir), resume=True)
    assert (out_dir / "checkpoints" / "best.pt").exists()
    utils.start_run({"seed": 2}, str(out_dir), overwrite=True)
    assert not (out_dir / "checkpoints").exists() and json.loads((out_dir / "cfg.json").read_text()) == {"seed": 2}
    files.unlock_file(out_dir / ".lock")


def test_the_parameters_print_compactly(tmp_path, capsys):
    utils.start_run({"epochs": 3, "models": ["a", "b"], "lr": 0.1}, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "epochs=3  models=['a', 'b']  lr=0.1" in out and "{" not in out
    files.unlock_file(tmp_path / "run" / ".lock")
