"""`python -m lib.fetch` (`make data`): download the data and weights that can be downloaded, verify them,
and say where the sets that cannot be downloaded go.

CIFAR-10 comes through `torchvision.datasets.CIFAR10(download=True)` (its MD5 checks, then our own reader) into the
docs/data.md's layout; ResNet50's ImageNet weights through torchvision's weights API into torch hub's cache (its SHA-256
prefix check). The course's ImageNet-mini and 100-class sets have no public download. Offline, every download
fails within seconds with the same guidance, never a traceback.
"""
import argparse
import contextlib
import hashlib
import os
import re
import socket
import sys

from .utils import DATA_DOC, DEMO_SWITCH, repo_path, run_command

SOURCES = ("cifar10", "resnet50")
MANUAL = {  # set -> (folder, layout, notebook)
    "imagenet-mini": ("data/imagenet-mini", "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, 50 classes", "01"),
    "hw1": ("data/hw1", "train/<class>/*.jpg, val/<class>/*.jpg and a flat test/*.jpg, 100 classes", "02"),
}


class FetchError(RuntimeError):
    """A download or verification failed; the message says what to do instead."""


@contextlib.contextmanager
def network_timeout(seconds):
    """Fail a stalled connection after `seconds` instead of hanging (urllib has no timeout by default)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _reason(err):
    """The short cause of a network error (URLError wraps the socket's)."""
    return str(getattr(err, "reason", None) or err) or type(err).__name__


def fetch_cifar10(root="data/cifar10", timeout_s=20):
    """CIFAR-10's python batches into root/cifar-10-batches-py, checked by torchvision's MD5s and our reader."""
    import torchvision

    from . import cifar
    root = repo_path(root)
    cls = torchvision.datasets.CIFAR10
    try:
        with network_timeout(timeout_s):
            cls(root, train=True, download=True)
    except (OSError, RuntimeError) as err:  # URLError and timeouts are OSErrors; a bad archive is a RuntimeError
        raise FetchError(
            f"CIFAR-10: cannot download {cls.url} ({_reason(err)}). On a machine with internet, download it and "
            f"unpack it so that {os.path.join(root, cls.base_folder)}/ holds data_batch_1..5, test_batch and "
            f"batches.meta (see {DATA_DOC}). {DEMO_SWITCH}") from None
    x_train, _, x_test, _, classes = cifar.load_cifar10(root)
    with contextlib.suppress(FileNotFoundError):  # unpacked and verified: the 163 MB archive is not needed again
        os.remove(os.path.join(root, cls.filename))
    return f"CIFAR-10: {len(x_train):,} training and {len(x_test):,} test images, {len(classes)} classes in " \
           f"{os.path.join(root, cls.base_folder)}"


def _sha256_prefix_ok(path):
    """True if the file's SHA-256 starts with the hex digits in its name (torch hub's `name-<hash>.pth` rule)."""
    match = re.search(r"-([a-f0-9]+)\.", os.path.basename(path))
    if not match:
        return True
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(match.group(1))


def fetch_weights(weights=None, build=None, timeout_s=20):
    """A torchvision weight set into torch hub's cache, hash-checked and loaded into its model once to verify it.

    Defaults: ResNet50's IMAGENET1K_V2 (notebook 02). A damaged cached file is deleted and downloaded again.
    """
    import torch
    import torchvision
    weights = weights or torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    build = build or torchvision.models.resnet50
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    if os.path.isfile(path) and not _sha256_prefix_ok(path):
        os.remove(path)
        print(f"weights: {path} was damaged (hash mismatch): downloading it again")
    try:
        with network_timeout(timeout_s):
            state = weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:
        with contextlib.suppress(FileNotFoundError):
            if not _sha256_prefix_ok(path):
                os.remove(path)
        raise FetchError(
            f"weights: cannot download {weights.url} ({_reason(err)}). On a machine with internet, download it "
            f"and put it at {path} (torch.hub.get_dir()/checkpoints/; TORCH_HOME moves it); notebook 02 then loads it "
            f"offline. {DEMO_SWITCH}") from None
    build().load_state_dict(state)
    return f"weights: {os.path.basename(path)} verified in {os.path.dirname(path)}"


def manual_status(root=None):
    """One line per set that cannot be downloaded: found, or where to put it."""
    from . import folders
    lines = []
    for name, (folder, layout, notebook) in MANUAL.items():
        path = repo_path(folder) if root is None else os.path.join(root, os.path.basename(folder))
        try:
            classes = folders.check_image_folders(path)
            lines.append(f"{name}: {len(classes)} classes found in {path}")
        except (OSError, ValueError):
            lines.append(f"{name} (notebook {notebook}): no public download. Put the course's copy at {path}/ as "
                         f"{layout} (see {DATA_DOC}).")
    return lines


def main(argv=None):
    """Fetch the chosen sources; print what is where; exit 1 if a download failed."""
    parser = argparse.ArgumentParser(prog="python -m lib.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("sources", nargs="*", help=f"any of {', '.join(SOURCES)} (default: all)")
    parser.add_argument("--data", default=repo_path("data/cifar10"),
                        help="CIFAR-10 root (default: data/cifar10 under the repository root)")
    parser.add_argument("--timeout", type=float, default=20, help="seconds before a stalled download fails")
    args = parser.parse_args(argv)
    unknown = set(args.sources) - set(SOURCES)
    if unknown:
        parser.error(f"unknown source(s) {sorted(unknown)}: choose from {', '.join(SOURCES)}")
    steps = {"cifar10": lambda: fetch_cifar10(args.data, args.timeout),
             "resnet50": lambda: fetch_weights(timeout_s=args.timeout)}
    failed = 0
    for source in args.sources or SOURCES:
        try:
            print(steps[source](), flush=True)
        except FetchError as err:
            print(f"FAILED {err}", flush=True)
            failed += 1
    print("\n".join(manual_status()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_command(main, "python -m lib.fetch"))
