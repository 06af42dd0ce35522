"""Seeds, devices, model sizes, environment facts, repository paths, and claiming a run folder."""
import datetime
import io
import os
import platform
import random
import sys
import tempfile

import numpy as np
import torch

from . import files

DATA_DOC = "docs/data.md"
DEMO_SWITCH = ('To run on lib.demo\'s data instead: profile = "demo" in the parameters cell '
               '(papermill: -p profile demo).')
DEMO_DATA = "data/demo"  # where lib.demo writes (relative to the repository root)


def in_demo_data(path):
    """True when path lies in lib.demo's folder (data/demo under the repository root)."""
    demo = os.path.join(repo_root(), DEMO_DATA)
    path = os.path.abspath(path)
    return path == demo or path.startswith(demo + os.sep)


def missing_data_advice(root, layout):
    """The fix for a missing data folder: lib.demo's folder is written by `make demo-data`; real data has a layout.

    A demo folder never gets the demo switch as advice: the student who sees it has just set that switch.
    """
    if in_demo_data(root):
        return ("It is lib.demo's synthetic data: `make demo-data` (or `python -m lib.demo`) writes it in "
                "seconds, then run the cell again.")
    return (f"{DEMO_SWITCH} For the real data: {layout}; `make data` downloads what can be downloaded (see "
            f"{DATA_DOC}).")


def seed_everything(seed):
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device="auto"):
    """Turn 'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' into a torch.device, failing clearly if unavailable."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU. "
                           "Pass device='cpu' (or 'auto') to run on the CPU.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device={device!r} was asked for, but MPS is not available. Pass device='cpu' or 'auto'.")
    return dev


def auto_flag(value, device):
    """Resolve an Optional[bool] speed switch (compile): None means on for CUDA, off elsewhere."""
    return (torch.device(device).type == "cuda") if value is None else bool(value)


def count_parameters(model, trainable_only=True):
    """Number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def state_dict_bytes(model):
    """Size in bytes of the model's state_dict as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def mib(num_bytes):
    """Bytes to MiB (what tools call 'MB' for model files)."""
    return num_bytes / 2**20

def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    """Versions, device and thread facts recorded beside every result."""
    import torchvision
    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_threads": torch.get_num_threads(), "cuda": torch.version.cuda, "gpu": None,
            "date": datetime.date.today().isoformat()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def ensure_out_dir(out_dir):
    """Create out_dir and check it is writable, failing with the fix in the message."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as err:
        raise OSError(f"out_dir {out_dir!r} cannot be written ({err.strerror}). "
                      "Pass another out_dir, e.g. -p out_dir runs/mine.") from err
    return out_dir


def repo_root():
    """The repository folder (the parent of this package), where relative parameter paths start."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_path(path):
    """Resolve a parameter path: absolute stays, relative is taken from the repository root.

    JupyterLab starts kernels in notebooks/ and papermill in the caller's folder; anchoring relative
    paths at the repository root makes `data/cifar10` mean the same thing in both.
    """
    path = os.path.expanduser(os.fspath(path))
    return path if os.path.isabs(path) else os.path.join(repo_root(), path)


def data_kind(data_dir):
    """'demo' when the data comes from lib.demo's generator, else 'real': every result says which."""
    parts = os.path.normpath(os.path.abspath(data_dir)).split(os.sep)
    return "demo" if "demo" in parts else "real"


# what makes a folder "hold a run": written by start_run, fit, results.write and the search
RUN_MARKERS = ("cfg.json", "metrics.json", "checkpoints", "trials.csv")


def existing_run(out_dir):
    """The RUN_MARKERS already in out_dir, empty if none."""
    return [m for m in RUN_MARKERS if os.path.exists(os.path.join(out_dir, m))]


def format_cfg(cfg, width=110):
    """The parameters as compact `name=value` lines, not a JSON dump."""
    lines, line = [], ""
    for name, value in cfg.items():
        item = f"{name}={value!r}"
        if line and len(line) + 2 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line}  {item}" if line else item
    return "\n".join(lines + [line])


INPUT_KEYS = ("data_dir", "test_dir", "test_pickle", "test_labels", "runs_dir")  # what a run reads, never writes


def check_out_dir(cfg, out_dir):
    """Refuse an out_dir that is empty, or is, holds or lies inside what the run reads (lib.files' rule)."""
    if not isinstance(out_dir, str) or not out_dir.strip():
        raise ValueError(f"out_dir={out_dir!r}: give the folder this run writes to (-p out_dir runs/mine); an empty "
                         "one would mean the repository root. Nothing was written.")
    inputs = {k: repo_path(cfg[k]) for k in INPUT_KEYS if isinstance(cfg.get(k), str) and cfg[k]}
    if "runs_dir" in inputs:  # the report writes beside the runs it reads, never over them
        del inputs["runs_dir"]
    files.check_not_source(repo_path(out_dir), inputs, "out_dir")


def start_run(cfg, out_dir, *, resume=False, overwrite=False):
    """Claim out_dir for this run (lock, no accidental overwrite), write cfg.json, print the parameters.

    Call it once the data is found: nothing is written before. A folder that already holds a run is refused
    unless resume=True (continue it) or overwrite=True (its RUN_MARKERS are deleted).
    Returns the absolute out_dir.
    """
    check_out_dir(cfg, out_dir)
    out_dir = ensure_out_dir(repo_path(out_dir))
    files.lock_file(os.path.join(out_dir, ".lock"), f"out_dir {out_dir}")
    found = existing_run(out_dir)
    if found and not (resume or overwrite):
        raise FileExistsError(
            f"out_dir {out_dir} already holds a run ({', '.join(found)}); nothing was written. Continue it with "
            "resume=True (-p resume True), write elsewhere with another out_dir (-p out_dir runs/mine), or replace "
            "it with overwrite=True (-p overwrite True).")
    if found and overwrite and not resume:
        import shutil
        for name in found:
            target = os.path.join(out_dir, name)
            # a link is removed itself, never what it leads to
            shutil.rmtree(target) if os.path.isdir(target) and not os.path.islink(target) else os.remove(target)
        print(f"overwrite=True: removed the previous run's {', '.join(found)} from {out_dir}")
    files.atomic_write_json(os.path.join(out_dir, "cfg.json"), cfg)
    print(format_cfg(cfg))
    print(f"outputs -> {out_dir}")
    return out_dir


def run_command(main, prog):
    """Run a `python -m lib.<name>` entry point: a ValueError or OSError (whose message names the file and the fix)
    ends it with that message and exit status 1 instead of a traceback."""
    try:
        status = main()
    except (ValueError, OSError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    return status if isinstance(status, int) else 0
