"""`python -m lib.publish runs/cpu results/cpu`: copy a profile's finished runs into the committed results folder.

What a reader needs to see a run is kept (metrics.json, cfg.json, CSVs, figures, the executed notebooks and
report.html); checkpoints and lock files are not. The copy is built beside the destination and swapped in whole, so
an interrupted publish leaves the previous results as they were (a rerun finishes or undoes the swap), and it refuses
to write more than `limit_mb`. Files the results folder holds that publish did not write (`tolerances.yaml`) are
kept; a folder publish never filled, or one that is, holds or lies inside the runs, is refused (lib.files' rule).

Published files name no absolute path of the machine that made them: in every text file the repository root becomes
a relative path and the home directory `~` as it is copied, and a path of the machine left after that (under the home,
the temporary folder, /home, /Users, /root, another checkout's runs/ or data/) stops the publish, naming the file and
line. `--relativize results/cpu --root <checkout that made them>` does the same to a folder published before, in
place, one atomic write per file.
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile

from .files import atomic_open, atomic_write_json, atomic_write_text, check_not_source, recover_replace, replace_tree
from .utils import repo_root

KEPT_SUFFIXES = (".json", ".csv", ".png", ".ipynb", ".html", ".txt", ".yaml")
SKIPPED_DIRS = ("checkpoints",)
LIMIT_MB = 15.0
MANIFEST = ".published.json"  # what publish wrote into a results folder: replaced next time; everything else is kept
TEXT_SUFFIXES = (".ipynb", ".json", ".html", ".csv", ".txt", ".yaml")
USER_AREAS = ("/home/", "/Users/", "/root/", "/tmp/", "/var/folders/")  # whoever's machine made the file
_PATH_CHAR = r"[\w.\-~]"


def machine_prefixes(root=None, home=None):
    """[(absolute prefix, neutral form)], longest first: the repository root -> '.', the home directory -> '~'."""
    root, home = root or repo_root(), home if home is not None else os.path.expanduser("~")
    pairs = {}
    for path, neutral in ((root, "."), (os.path.realpath(root), "."), (home, "~"), (os.path.realpath(home), "~")):
        path = path.rstrip("/")
        if path.count("/") >= 1 and path not in pairs and len(path) > 1:
            pairs[path] = neutral
    return sorted(pairs.items(), key=lambda pair: -len(pair[0]))


def neutral_text(text, prefixes):
    """text with each absolute prefix rewritten: '<root>/runs/cpu' -> 'runs/cpu', '<home>/.cache' -> '~/.cache'."""
    for prefix, neutral in prefixes:
        start = r"(?<![\w.\-~/])" + re.escape(prefix)  # a whole path, never the tail of a longer one
        text = re.sub(start + r"/(?=" + _PATH_CHAR + ")", "" if neutral == "." else neutral + "/", text)
        text = re.sub(start + r"(?![\w.\-])", neutral, text)
    return text


def machine_paths(text, prefixes):
    """(line number, excerpt) of each absolute path of a machine left in text: its prefixes or a user area."""
    needles = [re.escape(p) + r"(?:/|(?![\w.\-]))" for p, _ in prefixes]
    needles += [re.escape(area) for area in (tempfile.gettempdir().rstrip("/") + "/", *USER_AREAS)]
    needles.append(r"/[\w.\-/]*?/(?:runs|data|results|notebooks|configs)/")  # another checkout of this repository
    pattern = re.compile(r"(?<![\w.\-~/])(?:" + "|".join(needles) + ")")
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = pattern.search(line)
        if match:
            found.append((number, line[match.start():match.start() + 80]))
    return found


def _refuse_machine_paths(folder, rels, prefixes, what):
    """Fail naming each file and line that still holds an absolute path of a machine, and how to fix it."""
    found = []
    for rel in rels:
        if rel.endswith(TEXT_SUFFIXES) and not os.path.islink(os.path.join(folder, rel)):
            with open(os.path.join(folder, rel), encoding="utf-8", errors="replace") as fh:
                found += [f"{rel}:{n}: {excerpt}" for n, excerpt in machine_paths(fh.read(), prefixes)]
    if found:
        raise SystemExit(f"{what}: {len(found)} absolute path(s) of the machine that made them remain after "
                         "rewriting the repository root and the home folder:\n  " + "\n  ".join(found[:8]) +
                         "\nPrint such paths relative to the repository root (lib.report.display_path) and run "
                         "again; results made in another checkout: --root <that checkout>.")


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


def _copy_neutral(source, dest, prefixes):
    """Copy one run file; a text file with the machine's absolute prefixes rewritten (its mtime kept)."""
    if not source.endswith(TEXT_SUFFIXES):
        shutil.copy2(source, dest)
        return
    with open(source, encoding="utf-8", errors="surrogateescape") as fh:
        text = fh.read()
    with atomic_open(dest, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(neutral_text(text, prefixes))
    shutil.copystat(source, dest)  # lib.report compares a notebook's and its metrics.json's times


def _fill(staging, runs_dir, results_dir, files, kept, prefixes):
    """Copy the run files and the kept files into the staging folder and list the run files in its manifest."""
    for root, rels, is_kept in ((runs_dir, files, False), (results_dir, kept, True)):
        for rel in rels:
            os.makedirs(os.path.join(staging, os.path.dirname(rel)), exist_ok=True)
            if is_kept:  # a kept link stays a link, a kept file stays as its author wrote it
                shutil.copy2(os.path.join(root, rel), os.path.join(staging, rel), follow_symlinks=False)
            else:
                _copy_neutral(os.path.join(root, rel), os.path.join(staging, rel), prefixes)
    _refuse_machine_paths(staging, files, prefixes, f"{runs_dir}: nothing was published")
    atomic_write_json(os.path.join(staging, MANIFEST), {"files": files})


def publish(runs_dir, results_dir, limit_mb=LIMIT_MB, prefixes=None):
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
    prefixes = prefixes or machine_prefixes()
    replace_tree(results_dir, lambda staging: _fill(staging, runs_dir, results_dir, files, kept, prefixes))
    return files, total


def relativize(results_dir, prefixes):
    """Rewrite the machine's absolute paths in the text files an earlier publish wrote into results_dir, in place.

    Only the files its manifest lists are touched (never tolerances.yaml, never through a link), each replaced by one
    atomic write, a JSON file only if it still parses; returns the files changed, then fails on any path left.
    """
    recover_replace(results_dir)
    listed = sorted(_previous_publish(results_dir))
    if not listed:
        raise SystemExit(f"{results_dir}: no {MANIFEST}, so no file publish wrote; nothing was changed.")
    changed = []
    for rel in listed:
        path = os.path.join(results_dir, rel)
        if not rel.endswith(TEXT_SUFFIXES) or os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            text = fh.read()
        new = neutral_text(text, prefixes)
        if new == text:
            continue
        if rel.endswith((".json", ".ipynb")):
            json.loads(new)  # a rewrite that broke the file raises here, before anything is written
        atomic_write_text(path, new)
        changed.append(rel)
    _refuse_machine_paths(results_dir, listed, prefixes, f"{results_dir}: rewrote {len(changed)} file(s), but")
    return changed


def main(argv=None):
    """Publish the runs given on the command line; print what was written."""
    parser = argparse.ArgumentParser(prog="python -m lib.publish", description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", nargs="?")
    parser.add_argument("results_dir", nargs="?")
    parser.add_argument("--studies", nargs="*", default=[], help="run folders that must hold a metrics.json")
    parser.add_argument("--limit-mb", type=float, default=LIMIT_MB)
    parser.add_argument("--relativize", metavar="RESULTS_DIR", help="rewrite a published folder's paths in place")
    parser.add_argument("--root", help="the checkout the runs were made in (default: this one)")
    parser.add_argument("--home", help="the home folder of the machine that made them (default: yours)")
    args = parser.parse_args(argv)
    prefixes = machine_prefixes(args.root, args.home)
    if args.relativize:
        changed = relativize(args.relativize, prefixes)
        print(f"{len(changed)} files rewritten in {args.relativize}; no absolute path of the machine is left")
        return 0
    if not (args.runs_dir and args.results_dir):
        parser.error("give RUNS_DIR RESULTS_DIR (or --relativize RESULTS_DIR)")
    check_finished(args.runs_dir, args.studies)
    files, total = publish(args.runs_dir, args.results_dir, args.limit_mb, prefixes)
    print(f"{len(files)} files, {total / 1e6:.1f} MB: {args.runs_dir} -> {args.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
