"""Seeds, devices, parameter validation into `cfg`, sizes, atomic writes, environment facts."""
import ast
import contextlib
import io
import json
import math
import os
import platform
import random
import tempfile
import types
import typing

import numpy as np
import torch

README_DATA = "README.md, section 'Data'"
DEMO_SWITCH = 'To run on lib.demo\'s data instead: profile = "demo" in the parameters cell (papermill: -p profile demo).'


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


def _type_ok(value, annotation):
    """True if value fits a simple annotation (int, float, str, bool, list, dict, Optional, Union)."""
    if annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def injected_unknown_names(namespace, declared):
    """Names papermill injected that the parameters cell does not declare (typos like `epoch=3`)."""
    return [n for n in injected_names(namespace) if n not in declared]


def injected_names(namespace):
    """Names papermill assigned in its injected '# Parameters' cell (what -p, -y and -f gave), in order."""
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        return []
    # papermill puts its assignments in a cell starting with '# Parameters' just before this one.
    previous = history[-2]
    if not previous.lstrip().startswith("# Parameters"):
        return []
    try:
        tree = ast.parse(previous)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]


def _parse_container(value, annotation):
    """A list/dict parameter given as a string (papermill's -p passes strings): its JSON/YAML reading, else value."""
    wanted = typing.get_origin(annotation) or annotation
    if not isinstance(value, str) or wanted not in (list, tuple, dict):
        return value
    import yaml
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (list, tuple) if wanted is not dict else dict) else value


def range_problem(name, value, rule):
    """The complaint if a number breaks `rule` (">= 1", "> 0", "<= 1", "< 1", "[0, 1]", "(0, 1]", ...), else None.

    A list must satisfy it in every element; None (an Optional's "off") and non-numbers pass (types are checked
    elsewhere).
    """
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if range_problem(name, v, rule)]
        if not bad:
            return None
        return (f"parameter {name!r} = {value!r}: {bad[0]!r} breaks the rule, every element should be "
                + (f"in {rule}" if rule.lstrip()[0] in "[(" else rule))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    text = rule.replace(" ", "")
    if text[0] in "[(":
        low, high = (float(x) for x in text[1:-1].split(","))
        ok = (low <= value if text[0] == "[" else low < value) and (value <= high if text[-1] == "]" else value < high)
        rule = "in " + rule
    else:
        op = text[:2] if text[1:2] == "=" else text[:1]
        if op not in (">=", ">", "<=", "<"):
            raise ValueError(f"range rule {rule!r} of {name!r} is not understood: use '>= 1', '> 0', '[0, 1]' ...")
        bound = float(text[len(op):])
        ok = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
    return None if ok and math.isfinite(value) else f"parameter {name!r} = {value!r} should be {rule}"


def build_cfg(namespace, annotations, ranges=None):
    """Validate the parameters cell's names, types and ranges and return them as one plain `cfg` dict.

    `annotations` is the notebook's `__annotations__`, i.e. the parameters cell's `name: type = value` lines;
    `ranges` maps parameter names to the rule their numbers must follow (`range_problem`), declared once per notebook.
    """
    declared = dict(annotations)
    problems = [f"unknown parameter {n!r}; this notebook takes: {', '.join(declared)}"
                for n in injected_unknown_names(namespace, declared)]
    for name, annotation in declared.items():
        value = namespace.get(name)
        parsed = _parse_container(value, annotation)
        if parsed is not value:
            value = namespace[name] = parsed
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            namespace[name] = value
        if not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
            hint = (" (papermill's -p passes a string: give a list or dict as JSON/YAML text, e.g. -p "
                    f"{name} '[1, 2]', or with -y '{name}: [1, 2]' or in a YAML file with -f)"
                    if isinstance(value, str) and (typing.get_origin(annotation) or annotation) in (list, dict) else "")
            problems.append(f"parameter {name!r} = {value!r} should be of type {expected}{hint}")
        elif name in (ranges or {}):
            problems.append(range_problem(name, value, ranges[name]))
    problems += [f"a range is declared for {n!r}, which is no parameter" for n in set(ranges or {}) - set(declared)]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("bad notebook parameters:\n  " + "\n  ".join(problems) +
                         "\nFix the value in papermill's -p/-f arguments (configs/*.yaml) or in the parameters cell.")
    return {name: namespace[name] for name in declared}


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


def _current_umask():
    """The process umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode="w", **kwargs):
    """Open a temporary file beside `path` and rename it over `path` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    except OSError as err:
        raise OSError(f"cannot write {path!r}: {err.strerror}. Choose a writable out_dir "
                      "(for example out_dir='runs/mine').") from err
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            # mkstemp makes the file private (0600); give it the permissions a plain open() would
            os.fchmod(fh.fileno(), 0o666 & ~_current_umask())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    """Write text to `path` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _jsonable(obj):
    """Fallback for json.dump: tensors, numpy scalars, paths, non-finite floats."""
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def atomic_write_json(path, data):
    """Write JSON to `path` atomically (sorted keys, indented, NaN written as null)."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    atomic_write_text(path, json.dumps(clean(data), indent=2, sort_keys=True, default=_jsonable) + "\n")


def atomic_torch_save(obj, path):
    """torch.save to `path` atomically, so a crash mid-save leaves the previous file intact."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def environment():
    """Versions, device and thread facts recorded beside every result."""
    import torchvision
    info = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "gpu": None}
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


# what makes a folder "hold a run": written by start_run, fit, write_metrics and the search
RUN_MARKERS = ("cfg.json", "metrics.json", "checkpoints", "trials.csv")
_HELD_LOCKS = {}  # lock file -> open file object: flock is held while this process lives (a kernel: until it stops)


def lock_file(path, what):
    """Take an exclusive OS lock on `path` (created if needed) for the life of this process, or fail at once.

    The lock (fcntl.flock) dies with the process, so a crashed run never leaves a stale lock; the file holds the
    holder's process id for the message. Taking a lock this process already holds is a no-op.
    """
    path = os.path.abspath(os.fspath(path))
    if path in _HELD_LOCKS:
        return path
    import fcntl
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise RuntimeError(f"{what} is in use by another process (pid {holder}, lock {path}). Wait for it to "
                           "finish or stop it (a JupyterLab kernel: restart or shut it down), or use another "
                           "folder.") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    _HELD_LOCKS[path] = fh
    return path


def unlock_file(path):
    """Release a lock taken with lock_file (closing the file releases flock)."""
    fh = _HELD_LOCKS.pop(os.path.abspath(os.fspath(path)), None)
    if fh is not None:
        fh.close()


def lock_path_for(path):
    """The hidden lock file beside `path` (`dir/.name.lock`), for a file two processes could write at once."""
    path = os.path.abspath(os.fspath(path))
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.lock")


@contextlib.contextmanager
def locked(path, what):
    """`with locked(path, what):` holds lock_file(path) for the block only, unless this process held it before."""
    held_before = os.path.abspath(os.fspath(path)) in _HELD_LOCKS
    lock_file(path, what)
    try:
        yield
    finally:
        if not held_before:
            unlock_file(path)


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


def start_run(cfg, out_dir, *, resume=False, overwrite=False):
    """Claim out_dir for this run (lock, no accidental overwrite), write cfg.json, print the parameters.

    Call it once the data is found: nothing is written before. A folder that already holds a run is refused
    unless resume=True (continue it) or overwrite=True (its RUN_MARKERS are deleted).
    Returns the absolute out_dir.
    """
    out_dir = ensure_out_dir(repo_path(out_dir))
    lock_file(os.path.join(out_dir, ".lock"), f"out_dir {out_dir}")
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
            shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        print(f"overwrite=True: removed the previous run's {', '.join(found)} from {out_dir}")
    atomic_write_json(os.path.join(out_dir, "cfg.json"), cfg)
    print(format_cfg(cfg))
    print(f"outputs -> {out_dir}")
    return out_dir


def write_metrics(out_dir, cfg, **results):
    """metrics.json beside the figures: cfg, library versions, device, and the notebook's results."""
    path = os.path.join(out_dir, "metrics.json")
    atomic_write_json(path, {"cfg": cfg, "environment": environment(), **results})
    return path


def atomic_write_csv(path, frame, index=True):
    """Write a pandas DataFrame as CSV atomically."""
    atomic_write_text(path, frame.to_csv(index=index))
