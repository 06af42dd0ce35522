"""Figures: learning curves, confusion matrix, per-class accuracy, comparisons, and the report's figures over every
study (`plot_studies_*`, notebook 05). Each is saved as PNG and returned."""
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from lib import tables, writeups


def _save(fig, path):
    """Save a figure beside the results (PNG, tight) if a path is given."""
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def plot_history(histories, path=None, title=None):
    """Loss and accuracy per epoch, train dashed and validation solid, one colour per model."""
    if not isinstance(next(iter(histories.values()), {}), dict) or "epoch" in histories:
        histories = {"model": histories}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"
        ax_loss.plot(h["epoch"], h["train_loss"], "--", color=color, label=f"{name} train")
        ax_loss.plot(h["epoch"], h["val_loss"], "-", color=color, label=f"{name} val")
        ax_acc.plot(h["epoch"], h["train_acc"], "--", color=color, label=f"{name} train")
        ax_acc.plot(h["epoch"], h["val_acc"], "-", color=color, label=f"{name} val")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # a log scale keeps one bad epoch from flattening every other point into a line at zero
    ax_loss.set(xlabel="epoch", ylabel="loss (log scale)", title="loss", yscale="log")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    ax_acc.legend(fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(targets, predictions, num_classes):
    """num_classes x num_classes counts, rows = true class, columns = predicted class."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    counts = np.bincount(targets * num_classes + predictions, minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def plot_confusion(targets, predictions, class_names, path=None, title="confusion matrix (row-normalised)"):
    """Row-normalised confusion matrix as a seaborn heatmap (labels hidden when there are too many classes)."""
    import seaborn as sns
    n = len(class_names)
    cm = confusion_matrix(targets, predictions, n).astype(float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = min(4 + n * 0.35, 14)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    labels = class_names if n <= 25 else False
    sns.heatmap(cm, ax=ax, cmap="Blues", vmin=0, vmax=1, square=True, xticklabels=labels, yticklabels=labels,
                annot=n <= 12, fmt=".2f", cbar_kws={"shrink": 0.7})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return _save(fig, path)


def per_class_accuracy(targets, predictions, num_classes):
    """Accuracy of each class (NaN where the class has no sample)."""
    cm = confusion_matrix(targets, predictions, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(cm) / cm.sum(1)


def plot_per_class_accuracy(targets, predictions, class_names, path=None, title="per-class accuracy", highlight=5):
    """Bar chart of per-class accuracy, sorted, with the weakest classes in red."""
    acc = per_class_accuracy(targets, predictions, len(class_names))
    order = np.argsort(np.nan_to_num(acc, nan=-1))
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(class_names) + 3), 4))
    colors = ["C3" if i < highlight else "C0" for i in range(len(order))]
    ax.bar(range(len(order)), np.nan_to_num(acc[order]), color=colors)
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([class_names[i] for i in order], rotation=90, fontsize=7 if len(order) > 20 else 9)
    ax.axhline(np.nanmean(acc), color="k", linestyle=":", label=f"mean {np.nanmean(acc):.2f}")
    ax.set(ylabel="accuracy", ylim=(0, 1), title=title)
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def show_images(images, titles=None, path=None, mean=None, std=None, ncols=8, title=None):
    """Grid of images (N x 3 x H x W tensors, normalised if mean/std are given) with optional per-image titles."""
    images = images.detach().cpu().float()
    if mean is not None:
        images = images * torch_view(std) + torch_view(mean)
    elif images.max() > 1.5:
        images = images / 255
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 2.0 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        ax.imshow(images[i].clamp(0, 1).permute(1, 2, 0).numpy())
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def torch_view(values):
    """Per-channel statistics as a 3 x 1 x 1 tensor for broadcasting over images."""
    import torch
    return torch.tensor(values).view(-1, 1, 1)


def plot_bars(names, values, ylabel, path=None, title=None, fmt="{:.3f}"):
    """Labelled bar chart for comparing a few models or experiments."""
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(names) + 2), 3.5))
    bars = ax.bar(names, values, color=[f"C{i}" for i in range(len(names))])
    for bar, v in zip(bars, values):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_vs_parameters(names, parameters, accuracies, path=None, title=None, reference=None):
    """Accuracy against parameter count (log scale), one labelled point per model; `reference` draws a dotted line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, n, acc) in enumerate(zip(names, parameters, accuracies)):
        ax.scatter(n, acc, s=60, color=f"C{i}", zorder=3)
        ax.annotate(name, (n, acc), textcoords="offset points", xytext=(6, 6), fontsize=9)
    if reference is not None:
        value, label = reference
        ax.axhline(value, color="k", linestyle=":", label=label)
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    if parameters:  # room for the labels on both sides of the log axis
        ax.set_xlim(min(parameters) / 2, max(parameters) * 2.5)
    top = max([1e-3, *accuracies]) * 1.15  # headroom for the labels
    ax.set(xlabel="parameters (log scale)", ylabel="best validation accuracy", title=title, ylim=(0, top))
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_search_trials(params, accuracies, max_params, rejected_params=(), labels=None, path=None,
                                title=None):
    """Search trials as accuracy against parameters (log scale), the budget as a line, rejected designs as ticks."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(params, accuracies, s=36, color="C0", edgecolor="k", linewidth=0.5, zorder=3, label="trained trials")
    for p, a, text in zip(params, accuracies, [] if labels is None else labels):
        ax.annotate(str(text), (p, a), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if len(rejected_params):
        # rejected designs were never trained: only their size is known, so they sit on the x axis
        ax.plot(rejected_params, np.zeros(len(rejected_params)), "|", color="C3", markersize=12, alpha=0.6,
                label=f"rejected before training ({len(rejected_params)})")
    ax.axvline(max_params, color="C3", linestyle="--", label=f"budget {max_params:,} parameters")
    ax.set_xscale("log")
    ax.set(xlabel="trainable parameters", ylabel="best validation accuracy", ylim=(0, 1), title=title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_design_effects(blocks, first_channels, accuracies, path=None, title=None):
    """Accuracy against the blocks in each stage (one colour per stage) and against the first stage's channels."""
    fig, (ax_b, ax_c) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    num_stages = max(len(b) for b in blocks)
    for stage in range(num_stages):
        pairs = [(b[stage], a) for b, a in zip(blocks, accuracies) if len(b) > stage]
        xs, ys = np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs])
        offset = (stage - (num_stages - 1) / 2) * 0.12  # side by side, so stages at the same B stay readable
        ax_b.scatter(xs + offset, ys, s=22, color=f"C{stage}", alpha=0.75, label=f"stage {stage + 1}")
        means = sorted({x: ys[xs == x].mean() for x in set(xs)}.items())
        ax_b.plot([m[0] + offset for m in means], [m[1] for m in means], "-", color=f"C{stage}", alpha=0.9)
    ax_b.set(xlabel="blocks in the stage (B_i)", ylabel="best validation accuracy", ylim=(0, 1),
             title="blocks per stage (lines: means)")
    block_values = sorted({x for b in blocks for x in b})
    ax_b.set_xticks(block_values)
    ax_b.set_xlim(block_values[0] - 0.6, block_values[-1] + 0.6)
    ax_b.legend(fontsize=8)
    xs, ys = np.asarray(first_channels, float), np.asarray(accuracies, float)
    ax_c.scatter(xs, ys, s=30, color="C0", alpha=0.75)
    means = sorted({x: ys[xs == x].mean() for x in set(xs)}.items())
    ax_c.plot([m[0] for m in means], [m[1] for m in means], "o-", color="k", markersize=4, label="mean")
    ax_c.set_xticks(sorted(set(first_channels)))
    ax_c.set(xlabel="channels of the first stage (C_1)", title="first-stage channels")
    ax_c.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _study_panel(ax, run):
    """One study's learning curves on ax: validation solid, training dashed; a search's many trials without legend."""
    curves = {name: m.history for name, m in run.results.models.items() if m.history} if run.results else {}
    ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    ax.set_title(f"{run.study} {run.title} ({run.results.data if run.results else tables.NOT_RUN})", fontsize=12)
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
        ax.text(0.5, 0.5, tables.NOT_RUN if run.results is None else "no history", ha="center", va="center",
                transform=ax.transAxes, fontsize=14, color="0.4")
    elif not crowded:
        ax.legend(fontsize=10, loc="upper left")
    else:
        ax.text(0.02, 0.95, f"{len(curves)} trials (validation)", transform=ax.transAxes, fontsize=10, va="top")


def plot_studies_learning_curves(runs, path=None):
    """One panel per study (lib.report's runs): validation (solid) and training (dashed) accuracy, models overlaid."""
    columns = min(2, len(runs))  # two by two: a row of four made every panel and legend too small to read
    rows = -(-len(runs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs.values()):
        _study_panel(ax, run)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_axis_off()
    fig.suptitle(f"learning curves: validation solid, training dashed ({tables.data_label(runs)})")
    fig.tight_layout()
    return _save(fig, path)


# where a label may sit around its point (offset in points, alignment), nearest first
LABEL_SPOTS = [((6, 4), "left", "bottom"), ((6, -4), "left", "top"), ((-6, 4), "right", "bottom"),
               ((-6, -4), "right", "top"), ((0, 9), "center", "bottom"), ((0, -9), "center", "top")]
LABEL_SPOTS += [((dx * 2.5, dy * 3), ha, va) for (dx, dy), ha, va in LABEL_SPOTS]


def _free(box, frame, taken):
    """True when a label's box lies inside the axes' frame and overlaps nothing taken."""
    inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    return inside and not any(box.overlaps(other) for other in taken)


def place_labels(ax, points, fontsize=8):
    """Annotate (x, y, text) points so that no label overlaps another label or a point, where any spot allows.

    Each label takes the nearest of LABEL_SPOTS around its point that is free (a far spot gets a thin leader line);
    when none is, it keeps the nearest. Returns the labels' boxes (display coordinates).
    """
    from matplotlib.transforms import Bbox
    fig = ax.figure
    fig.canvas.draw()  # text extents need a renderer
    renderer, frame = fig.canvas.get_renderer(), ax.get_window_extent()
    markers = [Bbox.from_extents(px - 4, py - 4, px + 4, py + 4)
               for px, py in ax.transData.transform([(x, y) for x, y, _ in points])] if points else []
    labels = []
    for x, y, text in points:
        for i, (offset, ha, va) in enumerate(LABEL_SPOTS + [LABEL_SPOTS[0]]):
            leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.5} if 6 <= i < len(LABEL_SPOTS) else None
            label = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va,
                                fontsize=fontsize, arrowprops=leader)
            box = label.get_window_extent(renderer)
            if i == len(LABEL_SPOTS) or _free(box.expanded(1.04, 1.1), frame, labels + markers):
                break
            label.remove()
        labels.append(box)
    return labels


def _published_points(ax, colors):
    """The write-ups' (parameters, accuracy) figures as hollow markers; their labels are placed with the others."""
    points = []
    for study, name, params, acc in writeups.published_points():
        ax.scatter([params], [acc], facecolors="none", edgecolors=colors[study], s=70, linewidths=1.5)
        points.append((params, acc, f"{study} {name} (write-up)"))
    ax.scatter([], [], facecolors="none", edgecolors="0.3", s=70, linewidths=1.5,
               label="write-ups (real data, full runs)")
    return points


def plot_studies_accuracy_vs_parameters(runs, path=None):
    """Best validation accuracy against parameters (log x) for every model of every study; write-ups' figures hollow."""
    table = tables.models_table(runs).dropna(subset=["parameters", "best_val_acc"])
    fig, ax = plt.subplots(figsize=(11, 6))
    colors = {study: f"C{i}" for i, study in enumerate(writeups.STUDIES)}
    points = []
    for study, group in table.groupby("study"):
        ax.scatter(group["parameters"], group["best_val_acc"], color=colors[study], s=40,
                   label=f"{study} ours ({runs[study].results.data} data)")
        points += [(row["parameters"], row["best_val_acc"], row["model"]) for _, row in group.iterrows()]
    for study, run in runs.items():
        if run.trials is not None and len(run.trials):
            epochs = run.results.extra["search"]["trial_epochs"]
            ax.scatter(run.trials["params"], run.trials["val_acc"], color=colors[study], s=12, alpha=0.4, marker="x",
                       label=f"{study} search trials ({tables.plural(epochs, 'epoch')} each)")
    points = _published_points(ax, colors) + points  # the write-ups' first: they sit where labels crowd least
    ax.set_xscale("log")
    trials = [n for run in runs.values() if run.trials is not None for n in run.trials["params"]]
    sizes = [p[0] for p in points] + trials
    low, high = min(sizes), max(sizes)
    ax.set_xlim(low / 2.5, high * 2.5)  # room for labels on both sides of the outermost points
    ax.set(xlabel="trainable parameters (log scale)", ylabel="best validation accuracy", ylim=(0, 1.05),
           title=f"accuracy vs parameters, all studies ({tables.data_label(runs)})")
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: low demo points sit bottom right
    fig.tight_layout()
    place_labels(ax, points)
    return _save(fig, path)


def plot_studies_seconds_per_epoch(runs, path=None):
    """Horizontal bars of seconds per epoch for every model of every study, labelled with its study and device."""
    table = tables.models_table(runs).dropna(subset=["seconds_per_epoch"])
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(table) + 1.2)))
    if table.empty:
        ax.text(0.5, 0.5, "no timings: no study has results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        labels = [f"{r.study} {r.model} ({r.device})" for r in table.itertuples()]
        colors = [f"C{list(writeups.STUDIES).index(s)}" for s in table["study"]]
        ax.barh(labels, table["seconds_per_epoch"], color=colors)
        for y, v in enumerate(table["seconds_per_epoch"]):
            ax.annotate(tables.fmt_duration(v), (v, y), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7)
        ax.invert_yaxis()
        ax.margins(x=0.12)  # room for the labels right of the bars
        if table["seconds_per_epoch"].max() > 30 * table["seconds_per_epoch"].min() > 0:
            ax.set_xscale("log")  # a GPU run beside CPU demos, or a tiny search trial beside ResNet50
        ax.set(xlabel="seconds per epoch (different data and devices: compare within a study)")
    ax.set_title(f"seconds per epoch per model ({tables.data_label(runs)})")
    fig.tight_layout()
    return _save(fig, path)
