"""`python -m lib.publish runs/cpu results/cpu`: copy a profile's finished runs into the committed results folder.

What a reader needs to see a run is kept (metrics.json, cfg.json, CSVs, figures, the executed notebooks and
report.html); checkpoints and lock files are not. The copy is built beside the destination and swapped in whole, so
an interrupted publish leaves the previous results as they were (a rerun finishes or undoes the swap), and it refuses
to write more than `limit_mb`. Files the results folder holds that publish did not write (`tolerances.yaml`) are
kept; a folder publish never filled, or one that is, holds or lies inside the runs, is refused (lib.files' rule).
"""
import argparse
import json
import os
import shutil
import sys

from .files import atomic_write_json, check_not_source, recover_replace, replace_tree

KEPT_SUFFIXES = (".json", ".csv", ".png", ".ipynb", ".html", ".txt", ".yaml")
SKIPPED_DIRS = ("checkpoints",)
LIMIT_MB = 15.0
MANIFEST = ".published.json"  # what publish wrote into a results folder: replaced next time; everything else is kept


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


def _previous_publish(results_dir):
    """The files an earlier publish wrote into results_dir (its manifest); refuses a folder publish did not fill."""
    manifest = os.path.join(results_dir, MANIFEST)
    if not os.path.isdir(results_dir) or not os.listdir(results_dir):
        return set()
    if not os.path.isfile(manifest):
        raise SystemExit(f"{results_dir} holds files that publish did not write (it has no {MANIFEST}: "
                         f"{', '.join(sorted(os.listdir(results_dir))[:4])}); replacing it would delete them, so "
                         "nothing was written. Publish into a new folder, or into one an earlier publish wrote.")
    try:
        with open(manifest, encoding="utf-8") as fh:
            listed = json.load(fh)["files"]
        if not all(isinstance(f, str) for f in listed):
            raise TypeError("a name is not a string")
    except (ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{manifest}: field 'files' should list the paths publish wrote ({type(err).__name__}: "
                         f"{err}); restore it from git (git checkout -- {manifest}), or publish into a new "
                         "folder.") from None
    return set(listed)


def _own_files(results_dir, previous):
    """Paths (relative) of the files only results_dir holds: written by hand (tolerances.yaml), kept by publish."""
    found = []
    for parent, dirs, names in os.walk(results_dir):
        dirs.sort()
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(parent, name), results_dir)
            if rel not in previous and rel != MANIFEST:
                found.append(rel)
    return found


def _fill(staging, runs_dir, results_dir, files, kept):
    """Copy the run files and the kept files into the staging folder and list the run files in its manifest."""
    for root, rels, is_kept in ((runs_dir, files, False), (results_dir, kept, True)):
        for rel in rels:
            os.makedirs(os.path.join(staging, os.path.dirname(rel)), exist_ok=True)
            # a kept link stays a link; a run file is copied whatever it is
            shutil.copy2(os.path.join(root, rel), os.path.join(staging, rel), follow_symlinks=not is_kept)
    atomic_write_json(os.path.join(staging, MANIFEST), {"files": files})


def publish(runs_dir, results_dir, limit_mb=LIMIT_MB):
    """Replace results_dir by the publishable files of runs_dir, keeping the files only results_dir holds.

    What an earlier publish wrote (its manifest) is replaced; anything else in results_dir (the hand-written
    tolerances.yaml) is kept, and a run file that would overwrite one of those stops it, as does a results_dir
    that is, holds or lies inside runs_dir. A crash leaves the old or the new results whole (files.replace_tree).
    """
    check_not_source(results_dir, {"runs_dir": runs_dir}, "results folder")
    if not os.path.isdir(runs_dir):
        raise SystemExit(f"{runs_dir}: no such folder of runs; run the notebooks first (`make run`).")
    files = publishable_files(runs_dir)
    total = sum(os.path.getsize(os.path.join(runs_dir, f)) for f in files)
    if total > limit_mb * 1e6:
        raise SystemExit(f"{runs_dir}: {total / 1e6:.1f} MB to publish, over the {limit_mb} MB limit; "
                         "leave large files out of the run folders or raise --limit-mb.")
    recover_replace(results_dir)
    kept = _own_files(results_dir, _previous_publish(results_dir)) if os.path.isdir(results_dir) else []
    clash = sorted(set(kept) & set(files))
    if clash:
        raise SystemExit(f"{results_dir}: {', '.join(clash[:3])} was not written by publish, and {runs_dir} has a "
                         "file of the same name; nothing was written. Move it out of the results folder first.")
    replace_tree(results_dir, lambda staging: _fill(staging, runs_dir, results_dir, files, kept))
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
    files, total = publish(args.runs_dir, args.results_dir, args.limit_mb)
    print(f"{len(files)} files, {total / 1e6:.1f} MB: {args.runs_dir} -> {args.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
