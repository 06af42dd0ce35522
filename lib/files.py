"""Writing files safely: atomic replace (a crash never leaves half a file), OS locks for files two processes
could write at once, and the one rule every operation that deletes or replaces files follows:

- it never touches its own inputs: a destination that is, contains or lies inside a source is refused
  (`check_not_source`);
- it never deletes what it did not create unless the user named exactly that path: an existing output file is
  replaced only if it is one this project wrote (`check_replaceable`), a folder only if it is one it filled
  (publish's manifest), and what only the destination holds is kept;
- it never follows a symbolic link when it opens a lock or writes (`O_NOFOLLOW`; atomic writes rename a new file
  over the path, which replaces a link itself, never its target);
- a crash at any point of a replace leaves the old or the new copy complete, and a rerun recovers
  (`atomic_open` for files, `replace_tree` for folders).
"""
import contextlib
import errno
import glob
import json
import math
import os
import shutil
import stat
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
    fh = _open_lock(path)
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


def _open_lock(path):
    """Open (creating) a lock file for reading and writing without following a link, refusing anything but a plain
    file of its own: the lock's process id must never overwrite another file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        raise FileExistsError(f"lock file {path} is {'a symbolic link' if os.path.islink(path) else 'not a file'}: "
                              "writing the lock there could overwrite what it leads to; nothing was written. "
                              f"Delete {path} (only the link or entry itself) and run again.") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        kind = "a hard link to another file" if info.st_nlink > 1 else "not a plain file"
        raise FileExistsError(f"lock file {path} is {kind}: writing the lock there would overwrite it; nothing "
                              f"was written. Delete {path} and run again.")
    return os.fdopen(fd, "r+", encoding="utf-8")


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


# ---------------------------------------------------------------- the rule for deleting and replacing

def _real(path):
    """The absolute path with every link resolved, to compare what two paths lead to."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _within(inner, outer):
    """True if path `inner` is `outer` or lies inside it (both resolved)."""
    return inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep)


def check_not_source(dest, sources, what="destination"):
    """Refuse a destination that is, contains or lies inside one of the operation's inputs ({name: path})."""
    target = _real(dest)
    for name, source in sources.items():
        if not source:
            continue
        real = _real(source)
        if _within(target, real) or _within(real, target):
            relation = "is" if target == real else "lies inside" if _within(target, real) else "contains"
            raise ValueError(f"{what} {os.fspath(dest)!r} {relation} {name} {os.fspath(source)!r}, which this reads: "
                             f"writing there would destroy its own input; nothing was written. Choose a {what} "
                             f"outside {os.fspath(source)!r}.")


def check_replaceable(path, signature, what):
    """Refuse to replace an existing `path` unless it is a plain file this project wrote (first line `signature`)."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isfile(path):
        kind = "a symbolic link" if os.path.islink(path) else "a folder" if os.path.isdir(path) else "not a file"
        raise FileExistsError(f"{path} exists and is {kind}, not a {what}; nothing was written. Choose another "
                              "output path.")
    with open(path, "rb") as fh:
        first = fh.readline(4096).rstrip(b"\r\n")
    if first != signature.encode():
        raise FileExistsError(f"{path} exists and is not a {what} (its first line is {first[:60]!r}, a {what} "
                              f"starts with {signature!r}); replacing it would destroy it, so nothing was written. "
                              "Choose another output path, or move that file away yourself.")


def _swap_paths(dest):
    """(backup, staging prefix) of a replace of folder `dest`: hidden names beside it that only replace_tree makes."""
    parent, base = os.path.split(os.path.abspath(os.fspath(dest)).rstrip(os.sep))
    return os.path.join(parent, f".{base}.replace-old"), os.path.join(parent, f".{base}.replace-new-")


def recover_replace(dest):
    """Complete a replace_tree a crash interrupted: put the old copy back if the new one never arrived."""
    backup, staging_prefix = _swap_paths(dest)
    for leftover in glob.glob(glob.escape(staging_prefix) + "*"):  # never swapped in: half built
        shutil.rmtree(leftover, ignore_errors=True)
    if not os.path.isdir(backup):
        return
    if os.path.lexists(dest):  # the crash came after the new copy was in place
        shutil.rmtree(backup)
    else:  # the crash came between the two renames: the old copy is complete, restore it
        os.replace(backup, dest)
        print(f"restored {dest} from an interrupted replace")


def replace_tree(dest, fill):
    """Replace folder `dest` by one that `fill(staging_folder)` builds beside it; return what fill returns.

    The new copy is complete before `dest` moves aside, so a crash at any point leaves the old or the new copy
    whole, and the next call (recover_replace) finishes or undoes the swap.
    """
    dest = os.path.abspath(os.fspath(dest)).rstrip(os.sep)
    if os.path.islink(dest) or (os.path.lexists(dest) and not os.path.isdir(dest)):
        raise FileExistsError(f"{dest} is {'a symbolic link' if os.path.islink(dest) else 'a file'}, not a folder "
                              "this can replace; nothing was written. Name the folder itself.")
    recover_replace(dest)
    backup, staging_prefix = _swap_paths(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(staging_prefix), dir=os.path.dirname(dest))
    try:
        os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp's private 0700 would hide the results
        result = fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    moved = os.path.lexists(dest)
    if moved:
        os.replace(dest, backup)
    os.replace(staging, dest)
    if moved:
        shutil.rmtree(backup)
    return result
