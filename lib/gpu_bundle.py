"""`python -m lib.gpu_bundle`: run a study on a GPU machine that has torch but no papermill and no network.

    python -m lib.gpu_bundle make 03 [--data PATH]        # here, once, with the package registry: .gpu-bundle/
    bash .gpu-bundle/run.sh [-p NAME VALUE ...]           # there, offline, from the repository's root

`make` fills a git-ignored folder with what such a machine lacks: the wheels papermill and its Jupyter kernel need for
Python 3.12 on manylinux x86-64 (never torch, torchvision, numpy or pandas: a GPU image has those), the notebook's
data as one archive, `manifest.json` and `run.sh`, and refuses to pass the size limit of what may travel with the
checkout (64 MiB by default, the checkout's own files included). `run` installs the wheels into a temporary folder
(pip --no-index --no-deps, or by unpacking them where pip is missing), unpacks the data into the layout the notebook
reads, runs the notebook with papermill on its `gpu` profile plus the `-p` overrides, and leaves in the output folder
the executed notebook, the run folder (metrics.json, figures, checkpoints) and `summary.txt`: one line with the
device, torch, the median seconds per epoch, the first epoch's warm-up (compilation) and the accuracy.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

import yaml

from . import files
from .utils import repo_path, repo_root, run_command

BUNDLE = ".gpu-bundle"  # git-ignored
LIMIT_MIB = 64.0
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
KERNEL_PACKAGES = ("papermill", "ipykernel")  # their dependencies come along; none of them needs torch
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def notebook_stem(name):
    """'03' or '03_cifar10_resnet' or a path -> the notebook's stem, failing with the notebooks there are."""
    stems = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(repo_path("notebooks/[0-9]*.ipynb")))
    base = os.path.splitext(os.path.basename(name))[0]
    found = [s for s in stems if s == base or s.split("_")[0] == base]
    if len(found) != 1:
        raise SystemExit(f"notebook {name!r}: choose one of {', '.join(stems)} (a number is enough: 03).")
    return found[0]


def profile_data_dir(stem, profile="gpu"):
    """The data_dir the notebook reads on a profile (configs/<stem>/<profile>.yaml)."""
    path = repo_path(os.path.join("configs", stem, f"{profile}.yaml"))
    with open(path, encoding="utf-8") as fh:
        values = yaml.safe_load(fh) or {}
    if "data_dir" not in values:
        raise SystemExit(f"{path} sets no data_dir: the bundle would not know where the data goes.")
    return values["data_dir"]


def download_wheels(dest, python_version=PYTHON_VERSION, platforms=PLATFORMS):
    """pip download papermill and ipykernel with their dependencies, as wheels for the GPU machine's Python."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
               "--abi", f"cp{python_version.replace('.', '')}", "--dest", dest, *KERNEL_PACKAGES]
    for platform in platforms:
        command[5:5] = ["--platform", platform]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-3:])
        raise SystemExit(f"pip could not download the wheels for Python {python_version} ({tail}). `make gpu-bundle` "
                         "needs the package registry once; or pass --wheels DIR holding those wheels.")
    return sorted(glob.glob(os.path.join(dest, "*.whl")))


def archive_kind(path):
    """'layout' for the notebook's own layout (CIFAR batches; train/ and val/ class folders), 'cifar10-images' for
    train/<class>/ and test/<class>/ image files (CIFAR-10 as PNG or JPEG files), from an archive's member names."""
    with tarfile.open(path) as tar:
        names = ["/" + n for n in tar.getnames()]
    if any(n.endswith("/batches.meta") for n in names) or (any("/train/" in n for n in names)
                                                           and any("/val/" in n for n in names)):
        return "layout"
    images = [n for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    if any("/train/" in n for n in images) and any("/test/" in n for n in images):
        return "cifar10-images"
    raise SystemExit(f"{path}: neither the notebook's data layout (CIFAR batches, train/ and val/ class folders) nor "
                     "train/<class>/ and test/<class>/ image folders. Point --data at the folder the notebook reads.")


def pack_data(source, bundle_dir):
    """Put the data into the bundle as data.tar.gz: a folder is archived, an archive copied; returns its kind."""
    target = os.path.join(bundle_dir, "data.tar.gz")
    if os.path.isdir(source):
        with files.atomic_open(target, "wb") as fh, tarfile.open(fileobj=fh, mode="w:gz") as tar:
            for name in sorted(os.listdir(source)):
                tar.add(os.path.join(source, name), arcname=name)
        return "layout"
    if os.path.isfile(source) and source.endswith((".tar.gz", ".tgz", ".tar")):
        shutil.copyfile(source, target)
        return archive_kind(target)
    raise SystemExit(f"--data {source!r}: not a folder or a .tar.gz archive. Use the folder the notebook reads "
                     "(for example data/cifar10, or data/demo/cifar10 for a dry run).")


def tree_bytes(root):
    """Bytes of what travels with a checkout: git's tracked files plus untracked ones it does not ignore."""
    listed = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True)
    names = listed.stdout.decode().split("\0") if listed.returncode == 0 else []
    return sum(os.path.getsize(os.path.join(root, n)) for n in names if n and os.path.isfile(os.path.join(root, n)))


def folder_bytes(folder):
    """Bytes of every file under folder."""
    return sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(folder) for f in fs)


RUN_SH = """#!/usr/bin/env bash
# Runs the bundled notebook on this machine's GPU, offline: bash {bundle}/run.sh [-p NAME VALUE ...] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${{PYTHON:-python3}}" -m lib.gpu_bundle run --bundle "{bundle}" "$@"
"""


def make(stem, data, bundle_dir, limit_mib=LIMIT_MIB, wheels=None):
    """Write the bundle for one notebook; return (its bytes, the checkout's bytes)."""
    if os.path.dirname(os.path.abspath(bundle_dir)) != repo_root():
        raise SystemExit(f"--out {bundle_dir}: the bundle travels with the checkout, so it is a folder directly under "
                         f"the repository root (the default, {BUNDLE}, is git-ignored).")
    if os.path.islink(bundle_dir):
        raise SystemExit(f"{bundle_dir} is a symbolic link: the bundle is written into a folder of its own only.")
    if os.path.isdir(bundle_dir) and not os.path.isfile(os.path.join(bundle_dir, "manifest.json")):
        raise SystemExit(f"{bundle_dir} exists and is not a bundle: choose another --out, or remove it yourself.")
    shutil.rmtree(bundle_dir, ignore_errors=True)  # an earlier bundle (it has a manifest): made by this command
    os.makedirs(os.path.join(bundle_dir, "wheels"))
    if wheels:
        for wheel in glob.glob(os.path.join(wheels, "*.whl")):
            shutil.copy2(wheel, os.path.join(bundle_dir, "wheels"))
    else:
        download_wheels(os.path.join(bundle_dir, "wheels"))
    kind = pack_data(data, bundle_dir)
    inside = os.path.relpath(os.path.abspath(data), repo_root())
    data_dir = inside if kind == "layout" and not inside.startswith("..") else profile_data_dir(stem)
    name = os.path.basename(os.path.normpath(bundle_dir))
    files.atomic_write_json(os.path.join(bundle_dir, "manifest.json"), {
        "notebook": stem, "profile": "gpu", "data_dir": data_dir, "data_kind": kind,
        "python": PYTHON_VERSION, "made": time.strftime("%Y-%m-%d")})
    files.atomic_write_text(os.path.join(bundle_dir, "run.sh"), RUN_SH.format(bundle=name))
    size, tree = folder_bytes(bundle_dir), tree_bytes(repo_root())
    if limit_mib and (size + tree) > limit_mib * 2**20:
        raise SystemExit(f"the bundle ({size / 2**20:.1f} MiB) and the checkout ({tree / 2**20:.1f} MiB) are over "
                         f"{limit_mib:g} MiB together. Point --data at a smaller copy (CIFAR-10 as JPEG class folders "
                         "is 20 MB), or --limit-mib 0 where nothing limits what travels.")
    return size, tree


# ---------------------------------------------------------------- on the GPU machine

def install_wheels(wheels_dir, target):
    """Make papermill importable: nothing to do where it is; else the bundle's wheels into `target`, offline."""
    try:
        import papermill  # noqa: F401
        return "papermill is installed here"
    except ImportError:
        pass
    wheels = sorted(glob.glob(os.path.join(wheels_dir, "*.whl")))
    if not wheels:
        raise SystemExit(f"no wheels in {wheels_dir}: make the bundle again (`make gpu-bundle`).")
    pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if pip.returncode == 0:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--no-index", "--no-deps", "--target", target, *wheels], check=True)
    else:
        unpack_wheels(wheels, target)
    sys.path.insert(0, target)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [target, repo_root(), os.environ.get("PYTHONPATH")]))
    return f"{len(wheels)} wheels installed into a temporary folder"


def unpack_wheels(wheels, target):
    """Install wheels without pip: a wheel is a zip of the installed files (its .data/ parts hold scripts and kernel
    specs that running a notebook does not need)."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if not n.split("/")[0].endswith(".data")]
            unsafe = [n for n in names if n.startswith("/") or ".." in n.split("/")]
            if unsafe:
                raise SystemExit(f"{wheel}: refusing member {unsafe[0]!r}, which points outside the install folder.")
            archive.extractall(target, names)


def _complete(data_dir, kind):
    """True when data_dir already holds the data (then it is used as it is)."""
    marker = "cifar-10-batches-py/batches.meta" if kind == "cifar10-images" else None
    if marker:
        return os.path.isfile(os.path.join(data_dir, marker))
    return os.path.isdir(data_dir) and bool(os.listdir(data_dir))


def unpack_data(archive, kind, data_dir):
    """Unpack the bundle's data into data_dir unless it is there; never into an existing folder's files."""
    if _complete(data_dir, kind):
        return f"data already in {data_dir}"
    if os.path.lexists(data_dir) and (os.path.islink(data_dir) or os.listdir(data_dir)):
        raise SystemExit(f"{data_dir} exists but does not hold the data: move it away, then run again.")
    parent = os.path.dirname(os.path.abspath(data_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".unpack-", dir=parent)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")  # no absolute paths, no links out of the folder
        if kind == "cifar10-images":
            from .cifar_images import write_cifar_batches
            ready = tempfile.mkdtemp(prefix=".cifar-", dir=parent)
            write_cifar_batches(staging, os.path.join(ready, "cifar-10-batches-py"))
            shutil.rmtree(staging)
            staging = ready
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)  # empty (checked above)
        os.replace(staging, data_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"data unpacked into {data_dir}"


def parse_overrides(pairs):
    """[name, value, name, value, ...] from `-p NAME VALUE` -> {name: value}, values read as YAML (papermill's -y)."""
    return {name: yaml.safe_load(value) for name, value in pairs}


def summary_line(run_dir, wall_seconds):
    """One line from the run's metrics.json: device, torch, s/epoch (median), warm-up, accuracy, wall time."""
    from . import results
    saved = results.read(run_dir)
    model = next(iter(saved.models.values()))
    device = saved.environment.get("gpu") or saved.environment.get("cpu") or saved.device
    accuracy = ", ".join(f"{k} {v:.2%}" for k, v in saved.headline.items()
                         if isinstance(v, float) and 0 <= v <= 1)
    return (f"{saved.study} on {device} ({saved.device}, {saved.amp}, compile {saved.compile}) | torch "
            f"{saved.environment.get('torch', '?')} | {saved.epochs_run} epochs, {model.seconds_per_epoch:.2f} s/epoch "
            f"median, first epoch {model.extra.get('first_epoch_seconds', float('nan')):.1f} s (warm-up "
            f"{model.extra.get('warmup_seconds', float('nan')):.1f} s) | {accuracy} | {saved.data} data | "
            f"{wall_seconds / 60:.1f} min in all")


def run(bundle_dir, overrides, out_dir):
    """On the GPU machine: install, unpack, run the notebook on its gpu profile into out_dir, write summary.txt."""
    started = time.perf_counter()
    with open(os.path.join(bundle_dir, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    stem = manifest["notebook"]
    target = tempfile.mkdtemp(prefix="gpu-bundle-wheels-")
    try:
        print(install_wheels(os.path.join(bundle_dir, "wheels"), target), flush=True)
        print(unpack_data(os.path.join(bundle_dir, "data.tar.gz"), manifest["data_kind"],
                          repo_path(manifest["data_dir"])), flush=True)
        os.makedirs(out_dir, exist_ok=True)
        inside = os.path.relpath(os.path.join(out_dir, stem), repo_root())  # recorded paths stay machine-free
        run_dir = os.path.join(out_dir, stem) if inside.startswith("..") else inside
        parameters = {"profile": manifest["profile"], "out_dir": run_dir, **overrides}
        if manifest["data_dir"] != profile_data_dir(stem, manifest["profile"]):
            parameters.setdefault("data_dir", manifest["data_dir"])
        os.environ.setdefault("TQDM_DISABLE", "1")  # one line per epoch in the log, no bar refreshes
        from . import runbook
        print(f"== {stem}: papermill, parameters {parameters}", flush=True)
        error = runbook.run_one(repo_path(os.path.join("notebooks", f"{stem}.ipynb")), parameters,
                                os.path.join(out_dir, f"{stem}.ipynb"))
    finally:
        shutil.rmtree(target, ignore_errors=True)
    if error:
        raise SystemExit(f"{stem} failed: {error}\nthe executed notebook, with the traceback: "
                         f"{os.path.join(out_dir, stem + '.ipynb')}")
    line = summary_line(os.path.join(out_dir, stem), time.perf_counter() - started)
    files.atomic_write_text(os.path.join(out_dir, "summary.txt"), line + "\n")
    print(line, flush=True)
    return line


def main(argv=None):
    """`make` here, `run` on the GPU machine (see the module's docstring)."""
    parser = argparse.ArgumentParser(prog="python -m lib.gpu_bundle", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("make", help="write the bundle (wheels, data, run.sh) into a git-ignored folder")
    made.add_argument("notebook", help="03, 03_cifar10_resnet or its path")
    made.add_argument("--data", help="the folder the notebook reads, or an archive (default: the gpu profile's "
                                     "data_dir)")
    made.add_argument("--out", default=BUNDLE, help=f"bundle folder (default {BUNDLE}, relative to the repository)")
    made.add_argument("--limit-mib", type=float, default=LIMIT_MIB, help="bundle + checkout size limit; 0: none")
    made.add_argument("--wheels", help="a folder of wheels to copy instead of downloading them")
    ran = commands.add_parser("run", help="on the GPU machine: install, unpack, run the notebook, summarise")
    ran.add_argument("--bundle", default=BUNDLE)
    ran.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="override a parameter (value read as YAML), as papermill's -p")
    ran.add_argument("--out", default="runs/gpu", help="output folder (default runs/gpu)")
    args = parser.parse_args(argv)
    if args.command == "make":
        stem = notebook_stem(args.notebook)
        data = repo_path(args.data or profile_data_dir(stem))
        size, tree = make(stem, data, repo_path(args.out), args.limit_mib, args.wheels)
        print(f"{args.out}: {size / 2**20:.1f} MiB ({stem}, data from {args.data or profile_data_dir(stem)}); with "
              f"the checkout's {tree / 2**20:.1f} MiB: {(size + tree) / 2**20:.1f} MiB. On the GPU machine, from the "
              f"repository root: bash {args.out}/run.sh")
        return 0
    run(repo_path(args.bundle), parse_overrides(args.p), repo_path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, "python -m lib.gpu_bundle"))
