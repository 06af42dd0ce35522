"""Writing files safely: atomic replace (a crash never leaves half a file) and OS locks for files two processes
could write at once."""
import contextlib
import json
import math
import os
import tempfile

import numpy as np
import torch

_HELD_LOCKS = {}  # lock file -> open file object: flock is held while this process lives (a kernel: until it stops)


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


def atomic_write_csv(path, frame, index=True):
    """Write a pandas DataFrame as CSV atomically."""
    atomic_write_text(path, frame.to_csv(index=index))


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
