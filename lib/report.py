"""The results report (notebook 05): find each study's run, read it through lib.results, say what is missing.

A study without a readable run is "not run", with the reason (no metrics.json, a failed latest run, a file off the
schema, named by lib.results) and the command that produces it; nothing here raises for a missing or broken run.
The tables are in lib/tables.py, the figures in lib/plots.py, the write-ups' figures in lib/writeups.py.
"""
import json
import os
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from lib import results, tables, utils, writeups
from lib.results import StudyResults

TRIAL_COLUMNS = ["params", "val_acc"]


@dataclass
class StudyRun:
    """One study as the report found it: results is None when it was not run (reason says why, command how to)."""
    study: str
    stem: str
    title: str
    path: str
    command: str
    results: Optional[StudyResults] = None
    reason: str = ""
    trials: Optional[pd.DataFrame] = None  # a random search's trials.csv (params, val_acc), else empty

    @property
    def status(self):
        """'ok' when the study has results, else 'not run'."""
        return "ok" if self.results is not None else tables.NOT_RUN


def display_path(path):
    """A path relative to the repository root when it lies inside it (shorter commands), else absolute."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path, utils.repo_root())
    return path if rel.startswith("..") else rel


def run_command(runs_dir, stem):
    """The shell command that writes one study's results into runs_dir (its config for that profile if any)."""
    runs = display_path(runs_dir)
    profile = os.path.basename(os.path.normpath(runs_dir))
    config = os.path.join("configs", stem, f"{profile}.yaml")
    with_config = f" -f {config}" if os.path.isfile(os.path.join(utils.repo_root(), config)) else ""
    return (f"mkdir -p {runs} && .venv/bin/papermill notebooks/{stem}.ipynb {runs}/{stem}.ipynb{with_config} "
            f"-p out_dir {runs}/{stem}")


def executed_notebook_failed(runs_dir, stem):
    """True if papermill's executed copy runs_dir/<stem>.ipynb records an exception."""
    try:
        with open(os.path.join(runs_dir, f"{stem}.ipynb")) as fh:
            return json.load(fh).get("metadata", {}).get("papermill", {}).get("exception") is True
    except (OSError, ValueError, AttributeError):  # no executed copy, or not a notebook: nothing recorded
        return False


def search_trials(path):
    """The trial log trials.csv beside a metrics.json (params, val_acc), or an empty frame when there is none."""
    trials = os.path.join(os.path.dirname(path), "trials.csv")
    try:
        table = pd.read_csv(trials) if os.path.isfile(trials) else None
    except (OSError, ValueError):
        table = None
    return table if table is not None and set(TRIAL_COLUMNS) <= set(table.columns) else pd.DataFrame(
        columns=TRIAL_COLUMNS)


def why_not_run(runs_dir, stem, path):
    """Why a study's metrics.json is not to be reported ('' when it is): missing, or older than a failed run."""
    notebook = os.path.join(runs_dir, f"{stem}.ipynb")
    failed = executed_notebook_failed(runs_dir, stem)
    if not os.path.isfile(path):
        return f"the run failed (see {display_path(notebook)})" if failed else "no metrics.json yet"
    if failed and os.path.getmtime(notebook) > os.path.getmtime(path):
        return f"the latest run failed (see {display_path(notebook)}); its metrics.json is older"
    return ""


def read_study(runs_dir, study):
    """One study's StudyRun from runs_dir/<stem>/metrics.json."""
    stem, title = writeups.STUDIES[study].stem, writeups.STUDIES[study].title
    path = os.path.join(runs_dir, stem, results.FILE_NAME)
    run = StudyRun(study, stem, title, path, run_command(runs_dir, stem), reason=why_not_run(runs_dir, stem, path))
    if not run.reason:
        try:
            run.results = results.read(path)
        except results.ResultsError as err:
            run.reason = f"metrics.json off the schema: {err}"
    run.trials = search_trials(path) if run.results else pd.DataFrame(columns=TRIAL_COLUMNS)
    return run


def read_runs(runs_dir):
    """Every study's StudyRun, in study order."""
    return {study: read_study(runs_dir, study) for study in writeups.STUDIES}


def study_note(run):
    """Markdown saying where a study's figures come from, or that it was not run and how to run it."""
    if run.results is None:
        return (f"⚠ **{tables.NOT_RUN}** ({run.reason}). Produce it with\n\n```\n{run.command}\n```\n\n"
                "or `make run` for every study.")
    facts = tables.run_facts(run.results)
    return (f"From `{display_path(run.path)}`: **{facts['data']} data**, {facts['epochs']} epochs on "
            f"{facts['hardware']}, {facts['time']} of training.")


def banner_html(runs):
    """A loud HTML banner when any study ran on demo data or none has results; '' otherwise."""
    ok = [run for run in runs.values() if run.results is not None]
    if not ok:
        message = "No study has results here yet: run <code>make run</code> first. Nothing below is a result."
    elif tables.data_kinds(runs) - {"real"}:
        demo = [run.study for run in ok if run.results.data != "real"]
        message = (f"{'Studies' if len(demo) > 1 else 'Study'} {', '.join(demo)} ran on <b>DEMO DATA</b> "
                   "(lib.demo's synthetic images, a few CPU epochs). These numbers show the pipeline working; "
                   "they are <b>not a reproduction</b> of the write-ups' figures.")
    else:
        return ""
    return ('<div style="border:4px solid #c62828;background:#ffebee;color:#b71c1c;padding:12px 16px;'
            f'font-size:1.25em;font-weight:bold;margin:8px 0">⚠ {message}</div>')


def report_results(runs, runs_dir, cfg):
    """The report's own results (study 05): which studies have results, from where, on which data."""
    found = [run for run in runs.values() if run.results is not None]
    data = ("demo" if tables.data_kinds(runs) - {"real"} else "real") if found else "none"
    listed = {s: {"status": run.status, "reason": run.reason, "data": run.results and run.results.data,
                  "headline": run.results and run.results.headline, "command": None if run.results else run.command}
              for s, run in runs.items()}
    return StudyResults(study="05", data=data, cfg=cfg, device="cpu", amp=False, channels_last=False,
                                compile=False, epochs_run=0, headline={"studies_with_results": float(len(found))},
                                models={}, extra={"runs_dir": runs_dir, "studies": listed})
