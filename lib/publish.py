"""`python -m lib.publish runs/cpu results/cpu`: copy a profile's finished runs into the committed results folder.

What a reader needs to see a run is kept (metrics.json, cfg.json, CSVs, figures, the executed notebooks and
report.html); checkpoints and lock files are not. The copy is built beside the destination and swapped in whole, so
an interrupted publish leaves the previous results as they were, and it refuses to write more than `limit_mb`.
"""
import argparse
import os
import shutil
import sys
import tempfile

KEPT_SUFFIXES = (".json", ".csv", ".png", ".ipynb", ".html", ".txt", ".yaml")
SKIPPED_DIRS = ("checkpoints",)
LIMIT_MB = 15.0


def publishable_files(runs_dir):
    """Paths (relative to runs_dir) of the files a reader needs, in a stable order."""
    found = []
    for parent, dirs, files in os.walk(runs_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(KEPT_SUFFIXES) and not name.startswith("."):
                found.append(os.path.relpath(os.path.join(parent, name), runs_dir))
    return found


def check_finished(runs_dir, studies):
    """Fail naming the studies whose run has no metrics.json (unfinished or failed)."""
    missing = [s for s in studies if not os.path.isfile(os.path.join(runs_dir, s, "metrics.json"))]
    if missing:
        raise SystemExit(f"{runs_dir}: no metrics.json for {', '.join(missing)}; finish those runs first "
                         f"(`make reproduce` resumes them).")


def publish(runs_dir, results_dir, limit_mb=LIMIT_MB, keep=()):
    """Replace results_dir by the publishable files of runs_dir (plus `keep`, names kept from the old results_dir)."""
    files = publishable_files(runs_dir)
    total = sum(os.path.getsize(os.path.join(runs_dir, f)) for f in files)
    if total > limit_mb * 1e6:
        raise SystemExit(f"{runs_dir}: {total / 1e6:.1f} MB to publish, over the {limit_mb} MB limit; "
                         "leave large files out of the run folders or raise --limit-mb.")
    parent = os.path.dirname(os.path.abspath(results_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".publish-", dir=parent)
    for rel in files:
        os.makedirs(os.path.join(staging, os.path.dirname(rel)), exist_ok=True)
        shutil.copy2(os.path.join(runs_dir, rel), os.path.join(staging, rel))
    for name in keep:  # hand-written files of the reference (its tolerances) survive a new publish
        if os.path.isfile(os.path.join(results_dir, name)):
            shutil.copy2(os.path.join(results_dir, name), os.path.join(staging, name))
    old = results_dir.rstrip("/") + ".old"
    if os.path.isdir(results_dir):
        os.replace(results_dir, old)
    os.replace(staging, results_dir)
    shutil.rmtree(old, ignore_errors=True)
    return files, total


def main(argv=None):
    """Publish the runs given on the command line; print what was written."""
    parser = argparse.ArgumentParser(prog="python -m lib.publish", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir")
    parser.add_argument("results_dir")
    parser.add_argument("--studies", nargs="*", default=[], help="run folders that must hold a metrics.json")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    args = parser.parse_args(argv)
    check_finished(args.runs_dir, args.studies)
    files, total = publish(args.runs_dir, args.results_dir, args.limit_mb, keep=("tolerances.yaml",))
    print(f"{len(files)} files, {total / 1e6:.1f} MB: {args.runs_dir} -> {args.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
