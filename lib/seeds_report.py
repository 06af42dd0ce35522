"""Several seeds in lib.compare, lib.summary and the report (05): every headline as mean ± standard deviation (n).

`python -m lib.compare REFERENCE RERUN` where either folder holds seed<N>/ folders compares the reference's figure
(its mean over seeds) with every seed of the rerun: a metric reproduces when each seed lands within its tolerance,
and the rerun column shows mean ± std (n). The report's seed section reads the seed folders beside its runs_dir.
"""
import os
from dataclasses import dataclass

import pandas as pd

from lib import compare, seeds


@dataclass
class SeedRow:
    """One metric of one study: the reference's and the rerun's values over their seeds, and the tolerance."""
    study: str
    metric: str
    reference: list
    rerun: list
    tolerance: float
    seeds: int = 0  # the rerun's seed folders: a seed whose run is missing or unreadable fails the row

    @property
    def difference(self):
        """Mean of the rerun minus mean of the reference (None when the rerun lacks the metric)."""
        return None if not self.rerun else seeds.stat(self.rerun).mean - seeds.stat(self.reference).mean

    @property
    def ok(self):
        """Every rerun seed present and within tolerance of the reference's mean."""
        centre = seeds.stat(self.reference).mean
        within = all(abs(v - centre) <= self.tolerance + 1e-9 for v in self.rerun)
        return bool(self.rerun) and len(self.rerun) >= self.seeds and within


def seed_rows(reference, rerun, tolerances, rerun_seeds=0):
    """SeedRows for every (study, metric) of the reference ({study: {metric: [values]}}); rerun_seeds: SeedRow.seeds."""
    return [SeedRow(study, metric, values, rerun.get(study, {}).get(metric, []),
                    float(tolerances.get(study, {}).get(metric, 0.0)), rerun_seeds)
            for study, metrics in sorted(reference.items()) for metric, values in sorted(metrics.items())]


def _shown(values, metric):
    """A list of values as mean ± std (n), or 'missing'."""
    return seeds.fmt_stat(seeds.stat(values), metric) if values else "missing"


def format_seed_rows(rows):
    """A fixed-width table of the rows, mean ± std (n) on both sides, and the verdicts."""
    lines = [f"{'study':<30} {'metric':<28} {'reference':>24} {'rerun':>24} {'difference':>11} {'tolerance':>10}"]
    for r in rows:
        diff = "" if r.difference is None else compare._number(r.difference, r.metric)
        lines.append(f"{r.study:<30} {r.metric:<28} {_shown(r.reference, r.metric):>24} "
                     f"{_shown(r.rerun, r.metric):>24} {diff:>11} {compare._number(r.tolerance, r.metric):>10}  "
                     f"{'ok' if r.ok else 'DIFFERS'}")
    return "\n".join(lines)


def family(runs_dir):
    """The folder holding the seed<N>/ folders of a report's runs_dir (it or its parent), or None."""
    if seeds.seed_dirs(runs_dir):
        return runs_dir
    parent = os.path.dirname(os.path.normpath(runs_dir))
    is_seed = seeds.SEED_FOLDER.match(os.path.basename(os.path.normpath(runs_dir)))
    return parent if is_seed and seeds.seed_dirs(parent) else None


def report_note(runs_dir):
    """Markdown for the report's seed section: which seeds, the rules, or how to run several."""
    folder = family(runs_dir)
    found = list(seeds.seed_dirs(folder)) if folder else []
    if len(found) < 2:
        return ("Every figure above is **one run with one seed**: whether a difference between two models exceeds "
                "seed noise cannot be told from it. `make reproduce SEEDS=\"0 1 2\"` (or `python -m lib.runbook "
                "--seeds 0 1 2`) runs each study once per seed; this section then shows mean ± std (n).")
    return (f"Seeds {', '.join(map(str, found))} under `{folder}`: each headline figure as **mean ± sample "
            f"standard deviation (n)**. Verdicts: {seeds.VERDICT_RULE}. Tolerances derived from the spread "
            f"(`python -m lib.seeds {folder} --tolerances FILE`): {seeds.TOLERANCE_RULE}")


def report_tables(runs_dir):
    """(headline table, comparison table) over the seeds beside runs_dir; two empty tables when there are none."""
    folder = family(runs_dir)
    figures = pd.DataFrame(columns=["study", "metric", "mean ± std (n)", "per seed", "derived tolerance"])
    verdicts = pd.DataFrame(columns=["study", "comparison (a - b)", "mean ± std (n)", "margin", "verdict"])
    if folder is None or len(seeds.seed_dirs(folder)) < 2:
        return figures, verdicts
    rows = []
    for stem, metrics in seeds.headline_lists(folder).items():
        for metric, values in metrics.items():
            s = seeds.stat(values)
            tol = seeds.derived_tolerance(s)
            rows.append([stem, metric, seeds.fmt_stat(s, metric),
                         ", ".join(compare._number(v, metric) for v in values), "" if tol is None else f"{tol:g}"])
    figures = pd.DataFrame(rows, columns=figures.columns)
    verdicts = pd.DataFrame([[v.study, v.label, seeds.fmt_stat(v.diff, "diff_pct"),
                              "" if v.margin is None else f"{v.margin:.2%}", v.text]
                             for v in seeds.verdicts(folder)], columns=verdicts.columns)
    return figures, verdicts
