"""The report's tables (notebook 05): each study's figures beside its write-up's, every model, the runs found.

Every table reads `lib.results.StudyResults` through `lib.report.StudyRun` records and the write-ups' figures from
`lib.writeups`; a study that was not run shows as "not run", a figure a run did not record (None) as "—".
"""
import json
import math

import pandas as pd

from lib import writeups

MISSING = "—"
NOT_RUN = "not run"
NOT_REPORTED = "not reported"
STUDY_COLUMN = "write-up (real data, full run)"


def fmt_duration(seconds):
    """Seconds as '42 s', '3 min 20 s' or '2 h 05 min'."""
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
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "mib":
        return f"{value:.2f} MiB"
    if kind == "seconds":
        return fmt_duration(value)
    return f"{value:g}"


def metric_text(name, value):
    """One recorded figure as text: accuracies and ratios (names ending in _acc, or holding 'pct') as percentages."""
    if value is None:
        return MISSING
    if name.endswith("_acc") or "pct" in name:
        return f"{value:.2%}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def headline_text(headline):
    """A run's headline figures as 'name 57.56%, other 12' (accuracies and ratios in percent, counts as integers)."""
    return ", ".join(f"{name} {metric_text(name, value)}" for name, value in sorted(headline.items()))


def hardware(results):
    """Where the run ran: the GPU's model on CUDA, else the CPU's model and thread count."""
    env = results.environment
    if results.device.startswith("cuda"):
        return f"{results.device} · {env.get('gpu') or 'GPU model not recorded'}"
    threads = env.get("cpu_threads")
    return " · ".join([results.device, env.get("cpu") or "CPU model not recorded"]
                      + ([plural(threads, "thread")] if threads else []))


def total_seconds(results):
    """Training time: every model's epoch seconds (seconds per epoch x epochs without a history), plus search trials."""
    total = results.extra.get("search", {}).get("trial_seconds", 0.0)  # a random search's trials, before its retrain
    for model in results.models.values():
        seconds = (model.history or {}).get("seconds")
        total += sum(seconds) if seconds else model.seconds_per_epoch * results.epochs_run
    return total


def epochs_text(results):
    """Epochs run, with a search's trials ('8 + 20 trials × 2') and any cap on batches per epoch."""
    epochs = fmt(results.epochs_run, "int")
    search = results.extra.get("search")
    if search:
        epochs = f"{epochs} + {search['trials']:,} trials × {search['trial_epochs']:,}"
    cap = results.cfg.get("max_steps_per_epoch")
    return f"{epochs} (≤ {plural(int(cap), 'batch', 'batches')} each)" if cap else epochs


def run_facts(results, date=None):
    """The columns that say what a figure comes from: data set, epochs, hardware, torch, time taken, date."""
    if results is None:
        return dict.fromkeys(("data", "epochs", "hardware", "torch", "time", "date"), MISSING)
    return {"data": results.data, "epochs": epochs_text(results), "hardware": hardware(results),
            "torch": results.environment.get("torch") or MISSING, "time": fmt(total_seconds(results), "seconds"),
            "date": date or results.environment.get("date") or MISSING}


def data_kinds(runs):
    """The set of data kinds ('demo', 'real', ...) among the studies with results."""
    return {run.results.data for run in runs.values() if run.results is not None}


def data_label(runs):
    """'demo data', 'real data' or 'demo + real data' for figure titles."""
    return " + ".join(sorted(data_kinds(runs)) or ["no"]) + " data"


def _model(r, name):
    """The ModelResult `name` of a run, or None when the study was not run or did not train it."""
    return None if r is None else r.models.get(name)


def _field(model, key="best_val_acc"):
    """A field of a ModelResult, or None when there is no model."""
    return None if model is None else getattr(model, key)


def _rows_01(r):
    """Study 01: two-layer vs ResNet34, relative performance and size, ablations (write-up: validation accuracy)."""
    two, res = _model(r, "two_layer"), _model(r, "resnet34")
    pixels = f"ours at {r.extra['image_size']} px, the write-up's at 224 px" if r else ""
    ablation = ("the write-up's ablation runs, where its full model scored "
                f"{writeups.figure('01', 'ablation_two_layer_val_acc'):.2%}")
    goal = f"the study's goal: at least {writeups.figure('01', 'goal_pct_of_resnet34'):.0%}"
    return [
        ("two-layer accuracy (val)", "two_layer_val_acc", _field(two), "pct", pixels),
        ("ResNet34 accuracy (val)", "resnet34_val_acc", _field(res), "pct", pixels),
        ("relative performance (two-layer / ResNet34)", "two_layer_pct_of_resnet34",
         r and r.headline.get("two_layer_pct_of_resnet34"), "pct", goal),
        ("relative size (parameters)", "two_layer_size_of_resnet34", r and r.extra["relative_size"], "pct", ""),
        ("two-layer parameters", "two_layer_parameters", _field(two, "parameters"), "int", ""),
        ("ResNet34 parameters", "resnet34_parameters", _field(res, "parameters"), "int", ""),
        ("ablation: single-layer accuracy", "ablation_single_layer_val_acc", _field(_model(r, "single_layer")), "pct",
         ablation),
        ("ablation: smaller-kernel accuracy", "ablation_smaller_kernel_val_acc", _field(_model(r, "smaller_kernel")),
         "pct", ablation),
    ]


def find_experiment(results, cbam, loss):
    """Study 02's model with or without CBAM and with loss 'ce' or 'focal', or None when it was not trained."""
    if results is None:
        return None
    return next((m for m in results.models.values() if m.extra["use_cbam"] == cbam and m.extra["loss"] == loss), None)


def _rows_02(r):
    """Study 02: the final model (ResNet50 + CBAM, focal) and the loss x CBAM grid, size, time per epoch."""
    final = _model(r, r.extra["final_experiment"]) if r else None
    weights = "" if r is None else (
        "ImageNet-pretrained" if r.extra["pretrained"] else "trained from scratch (no ImageNet weights)")
    minutes = writeups.figure("02", "final_seconds_per_epoch") / 60
    return [
        ("final model val accuracy (CBAM + focal)", "final_val_acc", _field(final), "pct", weights),
        ("final model train accuracy", "final_train_acc", _field(final, "final_train_acc"), "pct", ""),
        ("ResNet50 + cross-entropy val accuracy (baseline)", "baseline_val_acc",
         _field(find_experiment(r, False, "ce")), "pct", "the write-up's baseline for both comparisons"),
        ("ResNet50 + focal val accuracy", None, _field(find_experiment(r, False, "focal")), "pct", ""),
        ("CBAM + cross-entropy val accuracy", None, _field(find_experiment(r, True, "ce")), "pct", ""),
        ("trainable parameters, final model", "final_parameters", _field(final, "parameters"), "int", ""),
        ("saved model size", "model_mib", r and r.extra["model_file"]["mib"], "mib",
         "the write-up's 'MB' are MiB; limit 100 MB"),
        ("seconds per epoch, final model", "final_seconds_per_epoch", _field(final, "seconds_per_epoch"), "seconds",
         f"the write-up: {minutes:.2f} min on its GPU"),
    ]


def _rows_03(r):
    """Study 03: peak validation accuracy, test accuracy, training accuracy, parameters."""
    model = _model(r, "cifar_resnet")
    budget = f"budget {r.cfg['max_params']:,}" if r else ""
    return [
        ("peak validation accuracy", "peak_val_acc", _field(model), "pct", ""),
        ("test accuracy", "kaggle_test_acc", _field(model, "test_acc"), "pct",
         "the write-up: the course's unlabeled Kaggle set; ours: CIFAR-10 test batch"),
        ("final training accuracy", "final_train_acc", _field(model, "final_train_acc"), "pct", ""),
        ("trainable parameters", "parameters", _field(model, "parameters"), "int", budget),
    ]


def count_text(counts):
    """Counts by reason as 'total (reason n, ...)', reasons with 0 left out of the detail."""
    detail = ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in counts.items() if v)
    return fmt(sum(counts.values()), "int") + (f" ({detail})" if detail else "")


def _rows_04(r):
    """Study 04: the best design under the budget, its configuration and accuracy, trials and rejections."""
    best, search = _model(r, "best_design"), r.extra["search"] if r else None
    design = best.extra if best else {}
    rejected = count_text({k: v for k, v in search["skipped"].items() if k != "duplicate"}) if search else None
    trial_note = f"after {plural(search['trial_epochs'], 'epoch')} per trial" if search else ""
    budget = f"budget {r.cfg['max_params']:,}" if r else ""
    return [
        ("best design: val accuracy (retrained)", None, _field(best), "pct",
         "the write-up gives the search space, no figure"),
        ("best design: val accuracy in the search", None, design.get("trial_val_acc"), "pct", trial_note),
        ("best design: test accuracy", None, _field(best, "test_acc"), "pct", "CIFAR-10 test batch"),
        ("best design: configuration", None, design.get("design"), "text",
         "train it in notebook 03 with its best_config.yaml" if search else ""),
        ("best design: trainable parameters", None, _field(best, "parameters"), "int", budget),
        ("trials trained", None, search and fmt(search["trials"], "int"), "text", ""),
        ("designs rejected before training", None, rejected, "text", "infeasible: over budget or no feature map left"),
    ]


STUDY_ROWS = {"01": _rows_01, "02": _rows_02, "03": _rows_03, "04": _rows_04}


def study_table(run):
    """A study's published figures beside ours, each row with data set, epochs, hardware and time taken."""
    facts = run_facts(run.results, run.date)
    rows = []
    for quantity, key, ours, kind, note in STUDY_ROWS[run.study](run.results):
        published = NOT_REPORTED if key is None else fmt(writeups.figure(run.study, key), kind)
        shown = fmt(ours, kind) if run.results else NOT_RUN
        rows.append({"quantity": quantity, STUDY_COLUMN: published, "ours": shown, **facts, "note": note})
    return pd.DataFrame(rows)


def comparison_table(runs):
    """All studies' write-up-vs-ours rows in one long table (for the CSV beside the report)."""
    return pd.concat([study_table(run).assign(study=run.study) for run in runs.values()], ignore_index=True)


MODEL_COLUMNS = ["study", "model", "data", "device", "parameters", "best_val_acc", "test_acc", "seconds_per_epoch"]


def models_table(runs):
    """Every model of every study with results: parameters, accuracies and seconds per epoch."""
    rows = [{"study": run.study, "model": name, "data": run.results.data, "device": run.results.device,
             "parameters": m.parameters, "best_val_acc": m.best_val_acc, "test_acc": m.test_acc,
             "seconds_per_epoch": m.seconds_per_epoch}
            for run in runs.values() if run.results for name, m in run.results.models.items()]
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def models_display(runs):
    """models_table with its figures formatted for reading ('—' where a run did not report one)."""
    table = models_table(runs)
    for column, kind in (("parameters", "int"), ("best_val_acc", "pct"), ("test_acc", "pct"),
                         ("seconds_per_epoch", "seconds")):
        table[column] = [fmt(None if pd.isna(v) else v, kind) for v in table[column]]
    return table.fillna(MISSING)


def overview(runs):
    """One row per study: its status, headline and where the figure comes from (or the command to produce it)."""
    rows = []
    for run in runs.values():
        ok = run.results is not None
        rows.append({"study": run.study, "notebook": run.stem, "status": run.status,
                     "headline": headline_text(run.results.headline) if ok else MISSING,
                     **run_facts(run.results, run.date),
                     "why not": run.reason, "to produce it": "" if ok else run.command})
    return pd.DataFrame(rows)


NOWRAP_COLUMNS = ("time", "date", "torch", "ours", STUDY_COLUMN, "seconds_per_epoch", "reference", "this run",
                  "difference", "tolerance")


def styled(table):
    """A table for the report: no index column, text left-aligned, short figures ('10 min 49 s') on one line."""
    left = [{"selector": "th, td", "props": [("text-align", "left")]}]
    nowrap = [c for c in table.columns if c in NOWRAP_COLUMNS]
    return (table.style.hide(axis="index").set_table_styles(left)
            .set_properties(subset=nowrap, **{"white-space": "nowrap"}))


def published_figures():
    """Every figure the write-ups publish (lib.writeups), one row each: study, figure, value as text, what it is."""
    rows = [{"study": number, "figure": key, "value": fmt(f.value, f.kind), "what": f.what}
            for number, study in writeups.STUDIES.items() for key, f in study.figures.items()]
    return pd.DataFrame(rows, columns=["study", "figure", "value", "what"])
