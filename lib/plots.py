"""Figures: learning curves, confusion matrix, per-class accuracy, comparisons. Each is saved as PNG and returned."""
import os

import matplotlib.pyplot as plt
import numpy as np


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
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    ax_acc.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(targets, predictions, num_classes):
    """num_classes x num_classes counts, rows = true class, columns = predicted class."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    return np.bincount(targets * num_classes + predictions, minlength=num_classes ** 2).reshape(num_classes, num_classes)


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
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.8 * nrows), squeeze=False)
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
