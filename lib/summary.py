"""`python -m lib.summary runs/demo`: one line per notebook run with its headline figures (lib.results' schema).

Checking a rerun against reference results is `python -m lib.compare REFERENCE RERUN`, the one compare command.
"""
import argparse
import glob
import os
import sys

from lib import results, tables
from lib.utils import repo_path

from . import utils


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
    """Print the summary for the folder given (default runs/demo); a folder of seed<N>/ runs as mean ± std (n)."""
    parser = argparse.ArgumentParser(prog="python -m lib.summary", description=__doc__.splitlines()[0],
                                     epilog="A rerun against a reference: python -m lib.compare REFERENCE RERUN")
    parser.add_argument("runs_dir", nargs="?", default=repo_path("runs/demo"), help="default: runs/demo")
    folder = parser.parse_args(argv).runs_dir
    from lib import seeds
    # a folder of seed<N>/ runs (python -m lib.runbook --seeds): each headline as mean ± std (n), and the verdicts
    print("\n".join(seeds.stats_lines(folder) if seeds.seed_dirs(folder) else summarize(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_command(main, "python -m lib.summary"))
