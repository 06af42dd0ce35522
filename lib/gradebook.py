"""The grader's gradebook (lib.grade): one row per submission, notebook, seed and metric, as CSV and HTML.

A row sets the submission's claimed figure (its committed results/<profile>/<notebook>/metrics.json) beside the
rerun's, with their difference, the tolerance and where it came from, the verdict, the run time, and for a failed
run the error's last line and the executed notebook's path. A row is flagged (within_tolerance false) when the
figure differs by more than its tolerance, is missing on either side, or the rerun failed or timed out.
"""
import html
import json
import math
import os
import time

import pandas as pd

from lib import compare, files

# used when neither --tolerances nor the submission's results/<profile>/tolerances.yaml names the metric: 2 points
# of accuracy, the size of results/cpu/tolerances.yaml's entries; a same-seed rerun on one machine lands exactly
DEFAULT_TOLERANCE = 0.02
COLUMNS = ["submission", "notebook", "seed", "metric", "claimed", "rerun", "difference", "tolerance", "tolerance_from",
           "within_tolerance", "verdict", "status", "seconds", "error", "executed_notebook"]
HTML_SIGNATURE = "<!-- gradebook written by python -m lib.grade -->"
STATUS_VERDICTS = {"failed": "run failed", "timeout": "timed out", "missing": "no such notebook",
                   "not run": "not run (no done marker)"}


def read_record(unit):
    """A unit's done marker, or a 'not run' record when it has none (a Ray task that died)."""
    try:
        with open(unit["done"], encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {"status": "not run", "seconds": 0.0, "error": f"no done marker {unit['done']}", "executed": "",
                "rerun": {}}


def tolerance_for(metric, stem, grader_tolerances, own, default):
    """(tolerance, where it came from): --tolerances, the submission's tolerances.yaml, or the default."""
    if metric in grader_tolerances.get(stem, {}):
        return float(grader_tolerances[stem][metric]), "--tolerances"
    value = (own or {}).get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value), "submission's tolerances.yaml"
    return default, "default"


def metric_rows(base, record, claimed, tolerance):
    """The rows of one unit whose rerun finished: every metric claimed or rerun."""
    rerun = record.get("rerun") or {}
    rows = []
    for metric in sorted(set(claimed or {}) | set(rerun)):
        tol, source = tolerance(metric)
        mine, theirs = (claimed or {}).get(metric), rerun.get(metric)
        diff = None if mine is None or theirs is None else theirs - mine
        within = diff is not None and abs(diff) <= tol + 1e-9
        verdict = ("no claim" if claimed is None else "not claimed" if mine is None else
                   "missing in the rerun" if theirs is None else "ok" if within else "DIFFERS")
        rows.append({**base, "metric": metric, "claimed": mine, "rerun": theirs, "difference": diff,
                     "tolerance": tol, "tolerance_from": source, "within_tolerance": within, "verdict": verdict})
    return rows


def unit_rows(unit, record, claimed, tolerance, why):
    """All rows of one unit: per metric, or one per claimed metric (or a single row) when the rerun failed."""
    base = {"submission": unit["submission"], "notebook": record.get("notebook") or unit["stem"] or unit["number"],
            "seed": unit["seed"], "status": record["status"], "seconds": record.get("seconds", 0.0),
            "error": record.get("error", ""), "executed_notebook": record.get("executed", "")}
    if record["status"] == "ok":
        rows = metric_rows(base, record, claimed, tolerance)
        if claimed is None:
            for row in rows:
                row["error"] = why  # why there is no claim: the file missing or off the schema
        return rows
    verdict = STATUS_VERDICTS.get(record["status"], record["status"])
    return [{**base, "metric": metric, "claimed": (claimed or {}).get(metric), "rerun": None, "difference": None,
             "tolerance": tolerance(metric)[0], "tolerance_from": tolerance(metric)[1], "within_tolerance": False,
             "verdict": verdict} for metric in sorted(claimed or {"—": None})]


def build(units, profile, tolerances_path, default, claims):
    """Every row of the gradebook, from the units' done markers and the submissions' claims."""
    grader = compare.read_tolerances(tolerances_path) if tolerances_path else {}
    rows = []
    for unit in units:
        record = read_record(unit)
        claimed, own, why = claims(unit["root"], profile, unit["stem"])
        stem = unit["stem"] or unit["number"]

        def tolerance(metric, stem=stem, own=own):
            return tolerance_for(metric, stem, grader, own, default)

        rows += unit_rows(unit, record, claimed, tolerance, why)
    return rows


def _cell(value, column):
    """One HTML cell's text: figures to 4 decimals, the rest escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and column in ("claimed", "rerun", "difference", "tolerance"):
        return f"{value:.4f}"
    return html.escape(str(value))


def to_html(rows, default=DEFAULT_TOLERANCE):
    """The gradebook as one HTML page, flagged rows in red."""
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join(
        f'<tr class="{"ok" if r["within_tolerance"] else "flag"}">'
        + "".join(f"<td>{_cell(r.get(c), c)}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    flagged = sorted({r["submission"] for r in rows if not r["within_tolerance"]})
    return (f"{HTML_SIGNATURE}\n<!DOCTYPE html><html><head><meta charset='utf-8'><title>gradebook</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
            "tr.flag{background:#ffebee}</style></head><body><h1>Gradebook</h1>"
            f"<p>{time.strftime('%Y-%m-%d %H:%M')}: {len(rows)} rows; flagged: "
            f"{html.escape(', '.join(flagged)) or 'none'}. Tolerance when neither --tolerances nor the submission "
            f"names one: {default:g} (default). The submissions' notebooks ran with the grader's rights.</p>"
            f"<table><tr>{head}</tr>{body}</table></body></html>\n")


def write(out, rows, default=DEFAULT_TOLERANCE):
    """Write <out>/gradebook.csv and <out>/gradebook.html atomically, never over files a grader did not write."""
    csv_path, html_path = os.path.join(out, "gradebook.csv"), os.path.join(out, "gradebook.html")
    files.check_replaceable(csv_path, ",".join(COLUMNS), "gradebook written by python -m lib.grade")
    files.check_replaceable(html_path, HTML_SIGNATURE, "gradebook written by python -m lib.grade")
    files.atomic_write_csv(csv_path, pd.DataFrame(rows, columns=COLUMNS), index=False)
    files.atomic_write_text(html_path, to_html(rows, default))
    return csv_path, html_path
