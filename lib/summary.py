"""`python -m lib.summary runs/demo`: one line per notebook run with its headline metric."""
import glob
import json
import os
import sys


def summarize(runs_dir):
    """Lines describing each run's headline metric, data kind and time, from the metrics.json files."""
    lines = [f"results under {runs_dir}:"]
    paths = sorted(glob.glob(os.path.join(runs_dir, "*", "metrics.json")))
    if not paths:
        return lines + ["  (no metrics.json yet: run `make run`)"]
    for path in paths:
        with open(path) as fh:
            m = json.load(fh)
        head = m.get("headline", {})
        value = head.get("value")
        shown = f"{value:.2%}" if isinstance(value, float) and 0 <= value <= 1 else str(value)
        stem = os.path.basename(os.path.dirname(path))
        lines.append(f"  {stem:<32} {head.get('name', '?')}: {shown:>8}   [{m.get('data', '?')} data, "
                     f"{m.get('epochs_run', '?')} epochs, {m.get('device', '?')}]")
    return lines


def main(argv=None):
    """Print the summary for the folder given on the command line (default runs/demo)."""
    argv = sys.argv[1:] if argv is None else argv
    print("\n".join(summarize(argv[0] if argv else "runs/demo")))


if __name__ == "__main__":
    main()
