"""`python -m lib.seeds runs/cpu`: a study run with several seeds, as mean ± standard deviation (n) per headline.

`python -m lib.runbook --seeds 0 1 2` (or `make reproduce SEEDS="0 1 2"`) runs each study once per seed into
`<runs>/seed<N>/<notebook>/`; this reads those folders. For every headline figure it prints the mean, the sample
standard deviation (n - 1 in the denominator) and n; for each study's comparison (01: two-layer vs ResNet34; 02:
focal vs cross-entropy, CBAM vs none) it says whether the difference exceeds the seed spread (the rule: VERDICT_RULE).
`--tolerances FILE` writes tolerances derived from the measured spread (the rule: TOLERANCE_RULE), each figure's
measurements written beside it, in the format of results/cpu/tolerances.yaml.
"""
import argparse
import glob
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass
from typing import Optional

from lib import compare, files, results

from . import utils

SEED_FOLDER = re.compile(r"^seed(\d+)$")
TOLERANCE_SIGNATURE = "# Tolerances derived from the seed spread by `python -m lib.seeds`"
TOLERANCE_FACTOR = 2.5
TOLERANCE_RULE = (f"tolerance = {TOLERANCE_FACTOR} x sqrt(2) x s, rounded up to 0.001, where s is the sample standard "
                  "deviation over the seeds: a rerun and the reference are two independent draws, so their difference "
                  f"has standard deviation sqrt(2) x s, and {TOLERANCE_FACTOR} of those admit an honest rerun while "
                  "catching a changed result. A figure with s = 0 (a count, or a seed-independent size) must match "
                  "exactly. Fewer than 3 seeds estimate s poorly: widen by hand what a thin estimate understates.")
VERDICT_RULE = ("the difference exceeds the seed spread when |mean paired difference| > t x s_d / sqrt(n): a paired "
                "t-test at 5% (two-sided) over the n seeds, s_d the sample standard deviation of the per-seed "
                "differences, t Student's 97.5% quantile with n - 1 degrees of freedom")
# Student's t, 97.5% quantile, by degrees of freedom; beyond the table 2.09 (df 20), which errs on the cautious side
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086}
# (study, label, model a, model b): a's best validation accuracy minus b's, on the same seed; absent models are skipped
COMPARISONS = [
    ("01", "two-layer vs ResNet34", "two_layer", "resnet34"),
    ("02", "focal vs cross-entropy (ResNet50)", "resnet50_focal", "resnet50_ce"),
    ("02", "focal vs cross-entropy (with CBAM)", "cbam_focal", "cbam_ce"),
    ("02", "CBAM vs none (cross-entropy)", "cbam_ce", "resnet50_ce"),
    ("02", "CBAM vs none (focal loss)", "cbam_focal", "resnet50_focal"),
    ("02", "CBAM + focal vs ResNet50 + cross-entropy", "cbam_focal", "resnet50_ce"),
]


@dataclass
class Stat:
    """Mean, sample standard deviation (None for one value) and count of one figure over the seeds."""
    mean: float
    std: Optional[float]
    n: int


def stat(values):
    """Mean, sample standard deviation (n - 1) and n of a list of numbers."""
    values = [float(v) for v in values]
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


def seed_dirs(folder):
    """{seed: path} of the `seed<N>` folders directly inside `folder`, by seed; {} when there are none."""
    found = {}
    for path in glob.glob(os.path.join(glob.escape(os.fspath(folder)), "seed*")):
        match = SEED_FOLDER.match(os.path.basename(path))
        if match and os.path.isdir(path):
            seed = int(match.group(1))
            if seed in found:  # seed01 and seed1: which one a table shows would depend on the listing order
                raise SystemExit(f"{found[seed]} and {path} are both seed {seed}; rename or remove one")
            found[seed] = path
    return dict(sorted(found.items()))


def gather(folder):
    """{study folder: {seed: StudyResults}} for every readable <folder>/seed<N>/<study>/metrics.json."""
    runs = {}
    for seed, path in seed_dirs(folder).items():
        for metrics in sorted(glob.glob(os.path.join(glob.escape(path), "*", results.FILE_NAME))):
            stem = os.path.basename(os.path.dirname(metrics))
            try:
                runs.setdefault(stem, {})[seed] = results.read(metrics)
            except results.ResultsError as err:
                print(f"skipped: {err}", file=sys.stderr)
    return dict(sorted(runs.items()))


def headline_values(by_seed):
    """{metric: {seed: value}} over one study's runs."""
    values = {}
    for seed, run in by_seed.items():
        for metric, value in run.headline.items():
            values.setdefault(metric, {})[seed] = value
    return dict(sorted(values.items()))


def headline_lists(folder):
    """{study folder: {metric: [value per seed]}} over the seeds of `folder`; a plain runs folder: one value each."""
    if seed_dirs(folder):
        return {stem: {m: list(v.values()) for m, v in headline_values(by_seed).items()}
                for stem, by_seed in gather(folder).items()}
    return {stem: {m: [v] for m, v in headline.items()} for stem, headline in compare.read_headlines(
        os.fspath(folder)).items()}


def headline_stats(folder):
    """{study folder: {metric: Stat}} over the seeds of `folder`; a plain runs folder counts as one run each."""
    return {stem: {m: stat(v) for m, v in metrics.items()} for stem, metrics in headline_lists(folder).items()}


def fmt_stat(s, metric):
    """'79.85% ± 0.42% (n=3)' for accuracies and ratios, '12 ± 0 (n=3)' for counts; no ± for one value."""
    spread = "" if s.std is None else f" ± {compare._number(s.std, metric)}"
    return f"{compare._number(s.mean, metric)}{spread} (n={s.n})"


@dataclass
class Verdict:
    """One comparison over the seeds: per-seed differences a - b, their statistics and the verdict."""
    study: str
    label: str
    differences: dict
    diff: Stat
    margin: Optional[float]  # t x s_d / sqrt(n): how far the mean difference must be from 0 to count
    exceeds: Optional[bool]  # None: one seed, cannot tell

    @property
    def text(self):
        """The verdict in words."""
        if self.exceeds is None:
            return "cannot tell from one seed (run with several: --seeds 0 1 2)"
        if self.exceeds:
            return f"exceeds the seed spread (|{self.diff.mean:+.2%}| > {self.margin:.2%})"
        return f"within the seed spread (|{self.diff.mean:+.2%}| <= {self.margin:.2%}): not a demonstrated difference"


def verdict(study, label, differences):
    """The Verdict for per-seed differences {seed: a - b} (VERDICT_RULE)."""
    s = stat(differences.values())
    if s.n < 2:
        return Verdict(study, label, differences, s, None, None)
    margin = T_975.get(s.n - 1, 2.09) * s.std / math.sqrt(s.n)
    return Verdict(study, label, differences, s, margin, abs(s.mean) > margin)


def verdicts(folder):
    """Every comparison (COMPARISONS) whose two models the seeds' runs of `folder` trained."""
    runs = gather(folder) if seed_dirs(folder) else {}
    found = []
    for study, label, a, b in COMPARISONS:
        by_seed = next((v for stem, v in runs.items() if stem.startswith(study + "_")), {})
        differences = {seed: run.models[a].best_val_acc - run.models[b].best_val_acc
                       for seed, run in by_seed.items() if a in run.models and b in run.models}
        if differences:
            found.append(verdict(study, label, differences))
    return found


def derived_tolerance(s):
    """A figure's tolerance from its spread over the seeds (TOLERANCE_RULE); None with fewer than two seeds."""
    if s.std is None:
        return None
    return math.ceil(TOLERANCE_FACTOR * math.sqrt(2) * s.std * 1000 - 1e-9) / 1000


def tolerances_yaml(stats, seeds):
    """tolerances.yaml text: the rule, then per study and metric the tolerance with its measurement beside it."""
    rule = "\n".join("#   " + line for line in _wrap(TOLERANCE_RULE))
    lines = [TOLERANCE_SIGNATURE, f"# over seeds {' '.join(map(str, seeds))}; the rule:", rule]
    for stem, metrics in stats.items():
        rows = [(m, s, derived_tolerance(s)) for m, s in metrics.items() if derived_tolerance(s) is not None]
        if rows:
            lines.append(f"{stem}:")
            lines += [f"  {m}: {tol:g}  # {fmt_stat(s, m)}, s = {s.std:.5f}" for m, s, tol in rows]
    return "\n".join(lines) + "\n"


def _wrap(text, width=110):
    """Lines of at most `width` characters."""
    import textwrap
    return textwrap.wrap(text, width)


def stats_lines(folder):
    """The printed table: each study's headline figures as mean ± std (n), then the comparisons' verdicts."""
    seeds = list(seed_dirs(folder))
    lines = [f"{folder}: seeds {' '.join(map(str, seeds)) or '(none: a single run per study)'}"]
    for stem, metrics in headline_stats(folder).items():
        lines += [f"  {stem:<30} {m:<28} {fmt_stat(s, m)}" for m, s in metrics.items()]
    found = verdicts(folder)
    if found:
        lines.append(f"comparisons (best validation accuracy, a - b on the same seed); {VERDICT_RULE}:")
        lines += [f"  {v.study} {v.label:<42} {fmt_stat(v.diff, 'diff_pct')}: {v.text}" for v in found]
    return lines


def write_tolerances(folder, path):
    """Write the derived tolerances to `path`, never over a file this command did not write."""
    files.check_replaceable(path, TOLERANCE_SIGNATURE, "tolerances file written by lib.seeds")
    files.check_not_source(path, {"the runs folder": folder}, "--tolerances file")
    seeds = list(seed_dirs(folder))
    if len(seeds) < 2:
        raise SystemExit(f"{folder}: {len(seeds)} seed folder(s); deriving a spread needs at least 2 "
                         "(python -m lib.runbook --seeds 0 1 2)")
    files.atomic_write_text(path, tolerances_yaml(headline_stats(folder), seeds))
    print(f"wrote {path}")


def main(argv=None):
    """Print a seed folder's statistics and verdicts; optionally write derived tolerances."""
    parser = argparse.ArgumentParser(prog="python -m lib.seeds", description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a folder holding seed<N>/<notebook>/metrics.json, e.g. runs/cpu")
    parser.add_argument("--tolerances", help="write tolerances derived from the spread to this YAML file")
    args = parser.parse_args(argv)
    if not seed_dirs(args.runs):
        raise SystemExit(f"{args.runs}: no seed<N> folders; run `python -m lib.runbook --seeds 0 1 2` first")
    print("\n".join(stats_lines(args.runs)))
    if args.tolerances:
        write_tolerances(args.runs, args.tolerances)
    return 0


if __name__ == "__main__":
    sys.exit(utils.run_command(main, "python -m lib.seeds"))
