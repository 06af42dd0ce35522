"""`python -m lib.summary runs/demo`: one line per notebook run with its headline figures (lib.results' schema).

`python -m lib.summary --compare results/cpu runs/cpu` checks a rerun against reference results instead (lib.compare).
"""
import glob
import os
import sys

from lib import compare, results, tables
from lib.utils import repo_path


def summary_line(path):
    """One run's line: its notebook, headline figures, data kind, epochs and device (or why it cannot be read)."""
    stem = os.path.basename(os.path.dirname(path))
    try:
        run = results.read(path)
    except results.ResultsError as err:
        return f"  {stem:<32} unreadable: {err}"
    return (f"  {stem:<32} {tables.headline_text(run.headline)}   "
            f"[{run.data} data, {run.epochs_run} epochs, {run.device}]")


def summarize(runs_dir):
    """Lines describing each run's headline figures, data kind and device, from the metrics.json files."""
    lines = [f"results under {runs_dir}:"]
    paths = sorted(glob.glob(os.path.join(runs_dir, "*", results.FILE_NAME)))
    if not paths:
        return lines + ["  (no metrics.json yet: run `make run`)"]
    return lines + [summary_line(path) for path in paths]


def main(argv=None):
    """Print the summary for the folder given (default runs/demo), or `--compare REFERENCE RERUN`'s verdict."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--compare"]:
        return compare.main(argv[1:])
    folder = argv[0] if argv else repo_path("runs/demo")
    from lib import seeds
    # a folder of seed<N>/ runs (python -m lib.runbook --seeds): each headline as mean ± std (n), and the verdicts
    print("\n".join(seeds.stats_lines(folder) if seeds.seed_dirs(folder) else summarize(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
