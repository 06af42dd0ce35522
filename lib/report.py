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

from lib import compare, results, tables, utils, writeups
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
    date: Optional[str] = None  # when it ran: metrics.json's environment, else its executed notebook's end

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


def _papermill_record(runs_dir, stem):
    """papermill's metadata of the executed copy runs_dir/<stem>.ipynb ({} when there is none)."""
    try:
        with open(os.path.join(runs_dir, f"{stem}.ipynb"), encoding="utf-8") as fh:
            record = json.load(fh).get("metadata", {}).get("papermill", {})
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError, AttributeError):  # no executed copy, or not a notebook: nothing recorded
        return {}


def executed_notebook_failed(runs_dir, stem):
    """True if papermill's executed copy runs_dir/<stem>.ipynb records an exception."""
    return _papermill_record(runs_dir, stem).get("exception") is True


def run_date(runs_dir, stem, study_results):
    """The day a run finished: recorded in its metrics.json, else its executed notebook's end time, else None."""
    recorded = study_results.environment.get("date") if study_results else None
    end = _papermill_record(runs_dir, stem).get("end_time")
    return recorded or (end[:10] if isinstance(end, str) else None)


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
    run.date = run_date(runs_dir, stem, run.results)
    return run


def read_runs(runs_dir):
    """Every study's StudyRun, in study order."""
    return {study: read_study(runs_dir, study) for study in writeups.STUDIES}


def study_note(run):
    """Markdown saying where a study's figures come from, or that it was not run and how to run it."""
    if run.results is None:
        return (f"⚠ **{tables.NOT_RUN}** ({run.reason}). Produce it with\n\n```\n{run.command}\n```\n\n"
                "or `make run` for every study.")
    facts = tables.run_facts(run.results, run.date)
    return (f"From `{display_path(run.path)}`: **{facts['data']} data**, {facts['epochs']} epochs on "
            f"{facts['hardware']} (torch {facts['torch']}), {facts['time']} of training, run {facts['date']}.")


def reference_dir(runs_dir):
    """results/<profile>/ for runs_dir .../<profile> when it holds committed reference results (tolerances.yaml)."""
    folder = os.path.join(utils.repo_root(), "results", os.path.basename(os.path.normpath(runs_dir)))
    return folder if os.path.isfile(os.path.join(folder, "tolerances.yaml")) else None


def _reference_rows(reference_dir_, runs_dir):
    """lib.compare's rows for studies 01-04 of the reference against runs_dir (the report, 05, is left out)."""
    reference = {s: m for s, m in compare.read_headlines(reference_dir_).items() if not s.startswith("05")}
    tolerance_path = os.path.join(reference_dir_, "tolerances.yaml")
    tolerances = compare.read_tolerances(tolerance_path)
    compare.check_tolerance_names(tolerances, reference, tolerance_path)
    return compare.compare(reference, compare.read_headlines(runs_dir), tolerances)


def reference_check(runs_dir):
    """(markdown, table or None): these runs beside the profile's committed reference results, with verdicts."""
    folder = reference_dir(runs_dir)
    if folder is None:
        return ("No committed reference results for this profile (`results/<profile>/tolerances.yaml`): "
                "nothing to check these runs against.", None)
    shown = display_path(folder)
    if os.path.realpath(folder) == os.path.realpath(runs_dir):
        return f"These runs are the committed reference results (`{shown}`).", None
    try:
        rows = _reference_rows(folder, runs_dir)
    except SystemExit as err:  # lib.compare's message names the file and the fix
        return f"⚠ Cannot check against `{shown}`: {err}", None
    table = pd.DataFrame([{"study": r.study, "metric": r.metric, "reference": tables.metric_text(r.metric, r.reference),
                           "this run": tables.metric_text(r.metric, r.rerun),
                           "difference": tables.metric_text(r.metric, r.difference),
                           "tolerance": tables.metric_text(r.metric, r.tolerance),
                           "verdict": "within tolerance" if r.ok else "not run" if r.rerun is None else "DIFFERS"}
                          for r in rows])
    good = sum(r.ok for r in rows)
    return (f"**{good} of {len(rows)}** metrics of `{display_path(runs_dir)}` land within the tolerances of the "
            f"committed reference `{shown}` (`{shown}/tolerances.yaml`; `make check-results` runs the same check).",
            table)


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
