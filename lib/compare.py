"""`python -m lib.compare results/cpu runs/cpu`: does a rerun reproduce the reference results, metric by metric?

The one compare command (`make check-results` runs it).

For every study in the reference folder and every headline metric it records, prints the reference, the rerun and
their difference, and exits 1 when a difference exceeds that metric's tolerance (or the rerun lacks the study or the
metric). Tolerances live beside the reference, in `<reference>/tolerances.yaml`:

    03_cifar10_resnet:
      test_acc: 0.02   # how far a rerun may land; how it was measured goes in a comment

A metric without a tolerance must match exactly (counts such as the number of designs searched). `--studies 03`
checks only the studies named (by folder name or number), for a rerun of one notebook. A folder of seed<N>/ folders
(`python -m lib.runbook --seeds`) is shown as mean ± std (n) and every seed must land within tolerance
(lib/seeds_report.py).
"""
import argparse
import glob
import math
import os
import sys
from dataclasses import dataclass

import yaml

from lib import results

from . import utils


@dataclass
class Row:
    """One metric of one study: reference, rerun, allowed difference, and the verdict."""
    study: str
    metric: str
    reference: float
    rerun: float = None
    tolerance: float = 0.0

    @property
    def difference(self):
        """rerun - reference (None when the rerun lacks the metric)."""
        return None if self.rerun is None else self.rerun - self.reference

    @property
    def ok(self):
        """Within tolerance (a tiny slack absorbs float rounding in the saved JSON)."""
        return self.difference is not None and abs(self.difference) <= self.tolerance + 1e-9


def read_headline(path):
    """The headline metrics {name: number} of one metrics.json (read through the results schema)."""
    try:
        return dict(results.read(path).headline)
    except results.ResultsError as err:
        raise SystemExit(str(err)) from None


def read_headlines(results_dir):
    """{study folder: headline metrics} for every <results_dir>/<study>/metrics.json."""
    paths = sorted(glob.glob(os.path.join(glob.escape(results_dir), "*", "metrics.json")))
    return {os.path.basename(os.path.dirname(p)): read_headline(p) for p in paths}


def read_tolerances(path):
    """{study: {metric: tolerance}} from a YAML file; {} when there is none."""
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            tolerances = yaml.safe_load(fh) or {}
    except yaml.YAMLError as err:
        raise SystemExit(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(tolerances, dict) or not all(isinstance(v, dict) for v in tolerances.values()):
        raise SystemExit(f"{path}: expected `study: {{metric: tolerance}}` mappings")
    for study, metrics in tolerances.items():
        for metric, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise SystemExit(f"{path}: field '{study}.{metric}' is {value!r:.40}, it should be a number >= 0 "
                                 "(how far a rerun may land); fix it in the file")
    return tolerances


def check_tolerance_names(tolerances, reference, path):
    """Fail naming the file and the key if a tolerance names a study or metric the reference does not have."""
    for study, metrics in tolerances.items():
        if study not in reference:
            raise SystemExit(f"{path}: unknown study '{study}'; the reference holds {', '.join(sorted(reference))}. "
                             "Fix the name in the file.")
        unknown = sorted(set(metrics) - set(reference[study]))
        if unknown:
            raise SystemExit(f"{path}: unknown metric '{study}.{unknown[0]}'; {study} records "
                             f"{', '.join(sorted(reference[study]))}. Fix the name in the file.")


def select(reference, studies):
    """The reference's studies named in `studies` (folder names or their number, "03"); all when none is named."""
    if not studies:
        return reference
    by_number = {s.split("_")[0]: s for s in reference}
    wanted = {by_number.get(name, name) for name in studies}
    unknown = sorted(wanted - set(reference))
    if unknown:
        raise SystemExit(f"--studies {' '.join(unknown)}: not in the reference; "
                         f"it holds {', '.join(sorted(reference))}")
    return {s: reference[s] for s in wanted}


def compare(reference, rerun, tolerances):
    """Rows for every (study, metric) of the reference, matched against the rerun."""
    rows = []
    for study, metrics in sorted(reference.items()):
        for metric, value in sorted(metrics.items()):
            rows.append(Row(study, metric, value, rerun.get(study, {}).get(metric),
                            float(tolerances.get(study, {}).get(metric, 0.0))))
    return rows


def _number(value, metric):
    """A metric as printed: accuracies and ratios ("_acc", "pct") as percentages, counts as integers."""
    if value is None:
        return "missing"
    if metric.endswith("_acc") or "pct" in metric:
        return f"{value:.2%}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3f}"


def format_rows(rows):
    """A fixed-width table of the rows and their verdicts."""
    lines = [f"{'study':<30} {'metric':<28} {'reference':>10} {'rerun':>10} {'difference':>11} {'tolerance':>10}"]
    for r in rows:
        diff = "" if r.difference is None else _number(r.difference, r.metric)
        lines.append(f"{r.study:<30} {r.metric:<28} {_number(r.reference, r.metric):>10} "
                     f"{_number(r.rerun, r.metric):>10} {diff:>11} {_number(r.tolerance, r.metric):>10}  "
                     f"{'ok' if r.ok else 'DIFFERS'}")
    return "\n".join(lines)


def main(argv=None):
    """Compare two results folders; exit 0 when every metric is within tolerance, else 1."""
    parser = argparse.ArgumentParser(prog="python -m lib.compare", description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="e.g. results/cpu (holds tolerances.yaml)")
    parser.add_argument("rerun", help="e.g. runs/cpu")
    parser.add_argument("--tolerances", help="default: <reference>/tolerances.yaml")
    parser.add_argument("--studies", nargs="*", default=[], help="only these studies, e.g. 03 (default: all)")
    args = parser.parse_args(argv)
    from lib import seeds, seeds_report  # seeds imports this module
    several = bool(seeds.seed_dirs(args.reference) or seeds.seed_dirs(args.rerun))  # then: mean ± std (n)
    read = seeds.headline_lists if several else read_headlines
    reference = read(args.reference)
    if not reference:
        raise SystemExit(f"{args.reference}: no <study>/metrics.json (or seed<N>/<study>/metrics.json) to compare "
                         "against")
    tolerance_path = args.tolerances or os.path.join(args.reference, "tolerances.yaml")
    if args.tolerances and not os.path.isfile(args.tolerances):
        raise SystemExit(f"--tolerances {args.tolerances}: no such file; give the YAML of `study: {{metric: "
                         "tolerance}}`, or leave it out to use <reference>/tolerances.yaml")
    tolerances = read_tolerances(tolerance_path)
    check_tolerance_names(tolerances, reference, tolerance_path)
    reference = select(reference, args.studies)
    if several:
        rows = seeds_report.seed_rows(reference, read(args.rerun), tolerances, len(seeds.seed_dirs(args.rerun)))
        print(seeds_report.format_seed_rows(rows))
    else:
        rows = compare(reference, read(args.rerun), tolerances)
        print(format_rows(rows))
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} metrics reproduce within tolerance"
          + (" on every seed" if several else "") + (f"; {len(failed)} do not" if failed else ""))
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(utils.run_command(main, "python -m lib.compare"))
