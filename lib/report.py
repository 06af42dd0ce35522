"""The results report (notebook 05): read each study's metrics.json, set it beside the seed's figures, plot them all.

Every reader here tolerates a missing or partial run: an absent field shows as "—", an absent or failed study as
"not run" with the command that produces it, never as an exception.
"""
import json
import math
import os
import re

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd

from lib import plots, utils

MISSING = "—"
NOT_RUN = "not run"
NOT_REPORTED = "not reported"

STUDIES = {
    "01": {"stem": "01_two_layer_imagenet_mini", "title": "two-layer CNN vs ResNet34"},
    "02": {"stem": "02_resnet50_cbam_100class", "title": "ResNet50 + CBAM, focal loss"},
    "03": {"stem": "03_cifar10_resnet", "title": "CIFAR ResNet under 5M"},
    "04": {"stem": "04_cifar10_random_search", "title": "random search under 5M"},
}

# (label, parameters, accuracy) the seeds report for their full runs on the real data: hollow markers on the plot.
SEED_POINTS = [
    ("01", "two-layer", 3_318_898, 0.5756),
    ("01", "ResNet34", 21_310_322, 0.6022),
    ("02", "ResNet50 + CBAM", 23_800_022, 0.8067),
    ("03", "CIFAR ResNet", 1_177_130, 0.9461),
]


def dig(tree, *keys):
    """tree[k1][k2]...; None when any level is missing or is not a mapping."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def first(tree, *paths):
    """The first non-None value among several key paths (tuples of keys)."""
    for path in paths:
        value = dig(tree, *path)
        if value is not None:
            return value
    return None


def number(value):
    """value as a finite float, or None (strings, None, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def ratio(numerator, denominator):
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    a, b = number(numerator), number(denominator)
    return None if a is None or not b else a / b


def fmt_duration(seconds):
    """Seconds as '42 s', '3 min 20 s' or '2 h 05 min'."""
    seconds = number(seconds)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min {int(seconds % 60):02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def plural(count, word, words=None):
    """'1 epoch', '3 epochs' (words: the plural when it is not word + 's')."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def fmt(value, kind="text"):
    """A figure as table text: kind 'pct' (0.5756 -> 57.56%), 'int', 'mib', 'seconds' or 'text'; None, NaN -> '—'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if kind == "text":
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    v = number(value)
    if v is None:
        return str(value)
    if kind == "pct":
        return f"{v:.2%}"
    if kind == "int":
        return f"{v:,.0f}"
    if kind == "mib":
        return f"{v:.2f} MiB"
    if kind == "seconds":
        return fmt_duration(v)
    return f"{v:g}"


def histories(metrics):
    """{model name: per-epoch history}, from 'histories' or a single 'history' (named after the only model)."""
    many = dig(metrics, "histories")
    if isinstance(many, dict):
        return {name: h for name, h in many.items() if isinstance(h, dict)}
    one = dig(metrics, "history")
    if isinstance(one, dict):
        models = dig(metrics, "models")
        name = next(iter(models)) if isinstance(models, dict) and len(models) == 1 else "model"
        return {name: one}
    return {}


def hardware(metrics):
    """Where the run ran: the device, with the GPU's name on CUDA or the thread count on the CPU."""
    device = dig(metrics, "device")
    if device is None:
        return MISSING
    if str(device).startswith("cuda"):
        return f"{device} · {dig(metrics, 'environment', 'gpu') or 'GPU unknown'}"
    threads = dig(metrics, "environment", "cpu_threads")
    return f"{device} · {threads} threads" if threads else str(device)


def total_seconds(metrics):
    """Training time: the run's own total if recorded, else its histories' seconds, else seconds_per_epoch x epochs."""
    recorded = number(first(metrics, ("seconds_total",), ("total_seconds",), ("wall_seconds",)))
    if recorded is not None:
        return recorded
    search = number(dig(metrics, "search", "trial_seconds")) or 0.0  # a random search's trials, before its retrain
    timed = [number(s) for h in histories(metrics).values() for s in (h.get("seconds") or [])]
    if timed and None not in timed:
        return sum(timed) + search
    epochs = number(dig(metrics, "epochs_run"))
    models = dig(metrics, "models")
    if epochs is None or not isinstance(models, dict):
        return None
    per_epoch = [number(dig(m, "seconds_per_epoch")) for m in models.values()]
    return sum(per_epoch) * epochs + search if per_epoch and None not in per_epoch else None


def epochs_text(metrics):
    """Epochs run, with a search's trials ('8 + 20 trials × 2') and any cap on batches per epoch."""
    epochs = fmt(dig(metrics, "epochs_run"), "int")
    trials, per_trial = dig(metrics, "search", "trials"), dig(metrics, "search", "trial_epochs")
    if number(trials) is not None and number(per_trial) is not None:
        epochs = f"{epochs} + {trials:,} trials × {per_trial:,}"
    cap = number(dig(metrics, "cfg", "max_steps_per_epoch"))
    return f"{epochs} (≤ {plural(int(cap), 'batch', 'batches')} each)" if cap else epochs


def run_facts(metrics):
    """The columns that say what a figure comes from: data set, epochs, hardware, time taken."""
    if metrics is None:
        return {"data": MISSING, "epochs": MISSING, "hardware": MISSING, "time": MISSING}
    return {"data": fmt(dig(metrics, "data")), "epochs": epochs_text(metrics), "hardware": hardware(metrics),
            "time": fmt(total_seconds(metrics), "seconds")}


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
            return dig(json.load(fh), "metadata", "papermill", "exception") is True
    except (OSError, ValueError):
        return False


def read_study(runs_dir, study):
    """One study's record: study, stem, title, path, status ('ok' | 'not run'), reason, command, metrics."""
    stem = STUDIES[study]["stem"]
    path = os.path.join(runs_dir, stem, "metrics.json")
    record = {"study": study, "stem": stem, "title": STUDIES[study]["title"], "path": path, "status": NOT_RUN,
              "reason": "", "command": run_command(runs_dir, stem), "metrics": None}
    notebook = os.path.join(runs_dir, f"{stem}.ipynb")
    failed = executed_notebook_failed(runs_dir, stem)
    if not os.path.isfile(path):
        record["reason"] = f"the run failed (see {display_path(notebook)})" if failed else "no metrics.json yet"
        return record
    if failed and os.path.getmtime(notebook) > os.path.getmtime(path):
        record["reason"] = f"the latest run failed (see {display_path(notebook)}); its metrics.json is older"
        return record
    try:
        with open(path) as fh:
            metrics = json.load(fh)
    except (OSError, ValueError) as err:
        record["reason"] = f"unreadable metrics.json ({type(err).__name__}: {str(err)[:80]})"
        return record
    if not isinstance(metrics, dict):
        record["reason"] = "metrics.json does not hold a JSON object"
        return record
    record.update(status="ok", metrics=metrics)
    return record


def read_runs(runs_dir):
    """Every study's record, in study order."""
    return {study: read_study(runs_dir, study) for study in STUDIES}


def model_entries(metrics):
    """{name: results} of every model or experiment a run reports ('models' and, if present, 'experiments')."""
    entries = {}
    for key in ("models", "experiments"):
        block = dig(metrics, key)
        if isinstance(block, dict):
            entries.update({name: v for name, v in block.items() if isinstance(v, dict) and name not in entries})
    return entries


def tokens(name):
    """Lower-case word pieces of a model name ('resnet50_cbam-focal' -> {'resnet50', 'cbam', 'focal'})."""
    return set(re.split(r"[^a-z0-9]+", name.lower())) - {""}


def best_entry(metrics):
    """(name, results) of the model with the highest best_val_acc, or (None, None)."""
    scored = [(number(v.get("best_val_acc")), name) for name, v in model_entries(metrics).items()]
    scored = [(acc, name) for acc, name in scored if acc is not None]
    if not scored:
        return None, None
    name = max(scored)[1]
    return name, model_entries(metrics)[name]


def _acc(entry, key="best_val_acc"):
    """An accuracy field of a model entry (None if the entry or field is missing)."""
    return dig(entry, key) if isinstance(entry, dict) else None


def _rows_01(m):
    """Study 01: two-layer vs ResNet34, relative performance and size, ablations (seed: validation accuracy)."""
    two, res = dig(m, "models", "two_layer"), dig(m, "models", "resnet34")
    rel_perf = first(m, ("relative_performance",))
    rel_size = first(m, ("relative_size",))
    rel_perf = ratio(_acc(two), _acc(res)) if rel_perf is None else rel_perf
    rel_size = ratio(_acc(two, "parameters"), _acc(res, "parameters")) if rel_size is None else rel_size
    size = dig(m, "image_size")
    pixels = f"ours at {size} px, the seed at 224 px" if size else ""
    ablation = "the seed's ablation runs, where its full model scored 20.00%"
    return [
        ("two-layer accuracy (val)", 0.5756, _acc(two), "pct", pixels),
        ("ResNet34 accuracy (val)", 0.6022, _acc(res), "pct", pixels),
        ("relative performance (two-layer / ResNet34)", 0.956, rel_perf, "pct", "the study's goal: at least 90%"),
        ("relative size (parameters)", 0.156, rel_size, "pct", ""),
        ("two-layer parameters", 3_318_898, _acc(two, "parameters"), "int", ""),
        ("ResNet34 parameters", 21_310_322, _acc(res, "parameters"), "int", ""),
        ("ablation: single-layer accuracy", 0.1578, _acc(dig(m, "models", "single_layer")), "pct", ablation),
        ("ablation: smaller-kernel accuracy", 0.1911, _acc(dig(m, "models", "smaller_kernel")), "pct", ablation),
    ]


def find_experiment(m, cbam, loss):
    """Study 02's run with or without CBAM and with loss 'ce' or 'focal': by its fields, else by its name."""
    for name, entry in model_entries(m).items():
        if "use_cbam" in entry and "loss" in entry:
            if bool(entry["use_cbam"]) == cbam and entry["loss"] == loss:
                return entry
        elif ("cbam" in tokens(name)) == cbam and loss in tokens(name):
            return entry
    return None


def _rows_02(m):
    """Study 02: the final model (ResNet50 + CBAM, focal) and the loss x CBAM grid, size, time per epoch."""
    final = dig(m, "models", dig(m, "final_experiment") or "") or find_experiment(m, True, "focal")
    size = first(m, ("model_file", "mib")) or first(final or {}, ("saved_mib",), ("size_mib",))
    weights = {True: "ImageNet-pretrained", False: "trained from scratch (no ImageNet weights)"}.get(
        dig(m, "pretrained"), "")
    return [
        ("final model val accuracy (CBAM + focal)", 0.8067, _acc(final), "pct", weights),
        ("final model train accuracy", 0.9588, _acc(final, "final_train_acc"), "pct", ""),
        ("ResNet50 + cross-entropy val accuracy (baseline)", 0.7845, _acc(find_experiment(m, False, "ce")), "pct",
         "the seed's baseline for both comparisons"),
        ("ResNet50 + focal val accuracy", None, _acc(find_experiment(m, False, "focal")), "pct", ""),
        ("CBAM + cross-entropy val accuracy", None, _acc(find_experiment(m, True, "ce")), "pct", ""),
        ("trainable parameters, final model", 23_800_022, _acc(final, "parameters"), "int", ""),
        ("saved model size", 90.99, size, "mib", "the seed's 'MB' are MiB; limit 100 MB"),
        ("seconds per epoch, final model", 2.11 * 60, _acc(final, "seconds_per_epoch"), "seconds",
         "the seed: 2.11 min on its GPU"),
    ]


def _rows_03(m):
    """Study 03: peak validation accuracy, test accuracy, training accuracy, parameters."""
    model = dig(m, "models", "cifar_resnet") or best_entry(m)[1]
    return [
        ("peak validation accuracy", 0.9461, _acc(model), "pct", ""),
        ("test accuracy", 0.84161, _acc(model, "test_acc"), "pct",
         "seed: the course's unlabeled Kaggle set; ours: CIFAR-10 test batch"),
        ("final training accuracy", 0.9941, _acc(model, "final_train_acc"), "pct", ""),
        ("trainable parameters", 1_177_130, _acc(model, "parameters"), "int", "budget 5,000,000"),
    ]


def count_text(value):
    """A count stored as a number, a list of items, or a dict of counts by reason ('draws' left out)."""
    if isinstance(value, list):
        return fmt(len(value), "int")
    if isinstance(value, dict):
        counts = {k: v for k, v in value.items() if k != "draws" and number(v) is not None}
        if not counts:
            return MISSING
        detail = ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in counts.items() if v)
        return fmt(sum(counts.values()), "int") + (f" ({detail})" if detail else "")
    return fmt(value, "int")


def _rows_04(m):
    """Study 04: the best design under 5M parameters, its configuration and accuracy, trials and rejections."""
    best = dig(m, "models", "best_design") or best_entry(m)[1] or {}
    search = dig(m, "search") or {}
    skipped = dig(search, "skipped") or {}
    reasons = {k: v for k, v in skipped.items() if k not in ("draws", "duplicates", "duplicate")}
    rejected = count_text(reasons) if reasons else count_text(first(search, ("rejections",), ("rejected",)))
    trial_epochs = dig(search, "trial_epochs")
    none = "the seed gives the search space, no figure"
    return [
        ("best design: val accuracy (retrained)", None, _acc(best), "pct", none),
        ("best design: val accuracy in the search", None, _acc(best, "trial_val_acc"), "pct",
         f"after {plural(trial_epochs, 'epoch')} per trial" if trial_epochs else ""),
        ("best design: test accuracy", None, _acc(best, "test_acc"), "pct", "CIFAR-10 test batch"),
        ("best design: configuration", None, first(best, ("design",), ("config",)), "text",
         "train it in notebook 03 with its best_config.yaml" if dig(search, "best_config") else ""),
        ("best design: trainable parameters", None, _acc(best, "parameters"), "int", "budget 5,000,000"),
        ("trials trained", None, count_text(dig(search, "trials")), "text", ""),
        ("designs rejected before training", None, rejected, "text", "infeasible: over budget or no feature map left"),
    ]


SEED_ROWS = {"01": _rows_01, "02": _rows_02, "03": _rows_03, "04": _rows_04}


def seed_table(record):
    """The seed's figures beside ours, each row with data set, epochs, hardware and time taken."""
    metrics = record["metrics"] or {}
    facts = run_facts(record["metrics"])
    rows = []
    for quantity, seed, ours, kind, note in SEED_ROWS[record["study"]](metrics):
        shown = fmt(ours, kind) if record["status"] == "ok" else NOT_RUN
        seed_text = NOT_REPORTED if seed is None else fmt(seed, kind)
        rows.append({"quantity": quantity, "seed (real data, full run)": seed_text, "ours": shown, **facts,
                     "note": note})
    return pd.DataFrame(rows)


def headline(metrics):
    """The run's headline as 'name: value' text."""
    name, value = dig(metrics, "headline", "name"), dig(metrics, "headline", "value")
    shown = fmt(value, "pct") if number(value) is not None and 0 <= value <= 1 else fmt(value)
    return f"{name or 'headline'}: {shown}"


def overview(runs):
    """One row per study: its status, headline and where the figure comes from (or the command to produce it)."""
    rows = []
    for record in runs.values():
        ok = record["status"] == "ok"
        rows.append({"study": record["study"], "notebook": record["stem"], "status": record["status"],
                     "headline": headline(record["metrics"]) if ok else MISSING, **run_facts(record["metrics"]),
                     "why not": record["reason"], "to produce it": "" if ok else record["command"]})
    return pd.DataFrame(rows)


def study_note(record):
    """Markdown saying where a study's figures come from, or that it was not run and how to run it."""
    if record["status"] != "ok":
        return (f"⚠ **{NOT_RUN}** ({record['reason']}). Produce it with\n\n```\n{record['command']}\n```\n\n"
                "or `make run` for every study.")
    facts = run_facts(record["metrics"])
    return (f"From `{display_path(record['path'])}`: **{facts['data']} data**, {facts['epochs']} epochs on "
            f"{facts['hardware']}, {facts['time']} of training.")


def models_table(runs):
    """Every model of every study with results: parameters, accuracies and seconds per epoch."""
    rows = []
    for record in runs.values():
        for name, entry in model_entries(record["metrics"]).items():
            rows.append({"study": record["study"], "model": name, "data": dig(record["metrics"], "data"),
                         "device": dig(record["metrics"], "device"), "parameters": number(entry.get("parameters")),
                         "best_val_acc": number(entry.get("best_val_acc")), "test_acc": number(entry.get("test_acc")),
                         "seconds_per_epoch": number(entry.get("seconds_per_epoch"))})
    columns = ["study", "model", "data", "device", "parameters", "best_val_acc", "test_acc", "seconds_per_epoch"]
    return pd.DataFrame(rows, columns=columns)


def data_kinds(runs):
    """The set of data kinds ('demo', 'real', ...) among the studies with results."""
    return {str(dig(r["metrics"], "data")) for r in runs.values() if r["status"] == "ok"}


def banner_html(runs):
    """A loud HTML banner when any study ran on demo data or none has results; '' otherwise."""
    ok = [r for r in runs.values() if r["status"] == "ok"]
    if not ok:
        message = "No study has results here yet: run <code>make run</code> first. Nothing below is a result."
    elif data_kinds(runs) - {"real"}:
        demo = [r["study"] for r in ok if dig(r["metrics"], "data") != "real"]
        message = (f"{'Studies' if len(demo) > 1 else 'Study'} {', '.join(demo)} ran on <b>DEMO DATA</b> "
                   "(lib.demo's synthetic images, a few CPU epochs). These numbers show the pipeline working; "
                   "they are <b>not a reproduction</b> of the seeds' figures.")
    else:
        return ""
    return ('<div style="border:4px solid #c62828;background:#ffebee;color:#b71c1c;padding:12px 16px;'
            f'font-size:1.25em;font-weight:bold;margin:8px 0">⚠ {message}</div>')


def data_label(runs):
    """'demo data', 'real data' or 'demo + real data' for figure titles."""
    kinds = sorted(data_kinds(runs)) or ["no"]
    return " + ".join(kinds) + " data"


def plot_learning_curves(runs, path=None):
    """One panel per study: validation (solid) and training (dashed) accuracy per epoch, models overlaid."""
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.8), squeeze=False)
    for ax, record in zip(axes[0], runs.values()):
        curves = histories(record["metrics"]) if record["status"] == "ok" else {}
        ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
        ax.set_title(f"{record['study']} {record['title']} ({dig(record['metrics'], 'data') or NOT_RUN})", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        crowded, last_epoch = len(curves) > 6, 1  # many search trials: validation only, no legend
        for i, (name, h) in enumerate(curves.items()):
            val, train_acc = h.get("val_acc") or [], h.get("train_acc") or []
            epochs = h.get("epoch") or list(range(1, max(len(val), len(train_acc)) + 1))  # fit counts from 1
            marker = "o" if len(epochs) < 8 else None  # a 1-epoch run is a point, not a line
            if val:
                ax.plot(epochs[:len(val)], val, "-", marker=marker, color=f"C{i % 10}", label=name,
                        alpha=0.6 if crowded else 1)
            if train_acc and not crowded:
                ax.plot(epochs[:len(train_acc)], train_acc, "--", marker=marker, color=f"C{i % 10}", alpha=0.6)
            last_epoch = max([last_epoch, *epochs])
        ax.set_xlim(0.5, last_epoch + 0.5)
        if last_epoch <= 10:
            ax.set_xticks(range(1, last_epoch + 1))
        if not curves:
            ax.text(0.5, 0.5, NOT_RUN if record["status"] != "ok" else "no history", ha="center", va="center",
                    transform=ax.transAxes, fontsize=14, color="0.4")
        elif not crowded:
            ax.legend(fontsize=7)
        else:
            ax.text(0.02, 0.95, f"{len(curves)} trials (validation)", transform=ax.transAxes, fontsize=8, va="top")
    fig.suptitle(f"learning curves: validation solid, training dashed ({data_label(runs)})")
    fig.tight_layout()
    return plots._save(fig, path)


def search_trials(record):
    """A random search's trial log (trials.csv beside its metrics.json: params, val_acc), or an empty frame."""
    path = os.path.join(os.path.dirname(record["path"]), "trials.csv")
    if record["status"] != "ok" or not os.path.isfile(path):
        return pd.DataFrame(columns=["params", "val_acc"])
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return pd.DataFrame(columns=["params", "val_acc"])
    if not {"params", "val_acc"} <= set(table.columns):
        return pd.DataFrame(columns=["params", "val_acc"])
    return table


def plot_accuracy_vs_parameters(runs, path=None):
    """Best validation accuracy against parameters (log x) for every model of every study; seeds' figures hollow."""
    table = models_table(runs).dropna(subset=["parameters", "best_val_acc"])
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = {study: f"C{i}" for i, study in enumerate(STUDIES)}
    for study, group in table.groupby("study"):
        ax.scatter(group["parameters"], group["best_val_acc"], color=colors[study], s=40,
                   label=f"{study} ours ({data_kinds({study: runs[study]}).pop()} data)")
        for _, row in group.iterrows():
            ax.annotate(row["model"], (row["parameters"], row["best_val_acc"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
    for study, record in runs.items():
        trials = search_trials(record)
        if len(trials):
            epochs = dig(record["metrics"], "search", "trial_epochs")
            ax.scatter(trials["params"], trials["val_acc"], color=colors[study], s=12, alpha=0.4, marker="x",
                       label=f"{study} search trials" + (f" ({plural(epochs, 'epoch')} each)" if epochs else ""))
    for study, name, params, acc in SEED_POINTS:
        ax.scatter([params], [acc], facecolors="none", edgecolors=colors[study], s=70, linewidths=1.5)
        right = params > 1e7  # label big models on their left, inside the axes
        ax.annotate(f"{study} {name} (seed)", (params, acc), fontsize=7, xytext=(-6 if right else 6, -9),
                    textcoords="offset points", ha="right" if right else "left")
    ax.scatter([], [], facecolors="none", edgecolors="0.3", s=70, linewidths=1.5, label="seeds (real data, full runs)")
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters (log scale)", ylabel="best validation accuracy", ylim=(0, 1),
           title=f"accuracy vs parameters, all studies ({data_label(runs)})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: low demo points sit bottom right
    fig.tight_layout()
    return plots._save(fig, path)


def plot_seconds_per_epoch(runs, path=None):
    """Horizontal bars of seconds per epoch for every model, labelled with its study and device."""
    table = models_table(runs).dropna(subset=["seconds_per_epoch"])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(table) + 1.2)))
    if table.empty:
        ax.text(0.5, 0.5, "no timings: no study has results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        labels = [f"{r.study} {r.model} ({r.device})" for r in table.itertuples()]
        colors = [f"C{list(STUDIES).index(s)}" for s in table["study"]]
        ax.barh(labels, table["seconds_per_epoch"], color=colors)
        for y, v in enumerate(table["seconds_per_epoch"]):
            ax.annotate(fmt_duration(v), (v, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        ax.invert_yaxis()
        ax.margins(x=0.12)  # room for the labels right of the bars
        if table["seconds_per_epoch"].max() > 30 * table["seconds_per_epoch"].min() > 0:
            ax.set_xscale("log")  # a GPU run beside CPU demos, or a tiny search trial beside ResNet50
        ax.set(xlabel="seconds per epoch (different data and devices: compare within a study)")
    ax.set_title(f"seconds per epoch per model ({data_label(runs)})")
    fig.tight_layout()
    return plots._save(fig, path)


def comparison_table(runs):
    """All studies' seed-vs-ours rows in one long table (for the CSV beside the report)."""
    return pd.concat([seed_table(r).assign(study=r["study"]) for r in runs.values()], ignore_index=True)


def models_display(runs):
    """models_table with its figures formatted for reading ('—' where a run did not report one)."""
    table = models_table(runs)
    for column, kind in (("parameters", "int"), ("best_val_acc", "pct"), ("test_acc", "pct"),
                         ("seconds_per_epoch", "seconds")):
        table[column] = [fmt(None if pd.isna(v) else v, kind) for v in table[column]]
    return table.fillna(MISSING)


def styled(table):
    """A table for the report: no index column, text left-aligned."""
    left = [{"selector": "th, td", "props": [("text-align", "left")]}]
    return table.style.hide(axis="index").set_table_styles(left)


def report_metrics(runs, runs_dir):
    """The report's own metrics.json fields: which studies have results, from where, on which data."""
    kinds = data_kinds(runs)
    found = [s for s, r in runs.items() if r["status"] == "ok"]
    return {"study": "05", "data": ("demo" if kinds - {"real"} else "real") if found else "none",
            "epochs_run": 0, "device": "cpu", "amp": False, "compile": False, "runs_dir": runs_dir,
            "headline": {"name": f"studies with results (of {len(runs)})", "value": len(found)},
            "models": {},
            "studies": {s: {"status": r["status"], "reason": r["reason"], "data": dig(r["metrics"], "data"),
                            "headline": headline(r["metrics"]) if r["status"] == "ok" else None,
                            "command": None if r["status"] == "ok" else r["command"]} for s, r in runs.items()}}
