"""`python -m lib.summary runs/demo`: one line per notebook run with its headline figures (lib.results' schema)."""
import glob
import os
import sys

from lib import results, tables


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
    """Print the summary for the folder given on the command line (default runs/demo)."""
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(summarize(argv[0] if argv else "runs/demo")))


if __name__ == "__main__":
    main()
