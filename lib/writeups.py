"""The four studies' write-ups and the figures they publish, in one place.

Each study is a notebook (its number is the notebook's, 01-04); its write-up reports figures for its own full run on
the real data. The notebooks, the report (05) and the tests read those figures from here, never typed in again.
`figure("03", "parameters")` is one value; `STUDIES["03"].figures` holds them all with what each one measures.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    """One published figure: its value, how to show it ('pct', 'int', 'mib', 'seconds') and what it measures."""
    value: float
    kind: str
    what: str


@dataclass(frozen=True)
class Study:
    """A study: its notebook stem, a short title, its write-up's figures and the (label, parameters, accuracy) points
    the report plots (figure keys)."""
    number: str
    stem: str
    title: str
    figures: dict = field(default_factory=dict)
    points: tuple = ()


STUDIES = {
    "01": Study("01", "01_two_layer_imagenet_mini", "two-layer CNN vs ResNet34", {
        "two_layer_val_acc": Figure(0.5756, "pct", "two-layer net, best validation accuracy (224 px, 20 epochs)"),
        "resnet34_val_acc": Figure(0.6022, "pct", "ResNet34, best validation accuracy (224 px, 20 epochs)"),
        "two_layer_pct_of_resnet34": Figure(0.956, "pct", "two-layer accuracy as a share of ResNet34's"),
        "two_layer_size_of_resnet34": Figure(0.156, "pct", "two-layer parameters as a share of ResNet34's"),
        "goal_pct_of_resnet34": Figure(0.9, "pct", "the study's goal: at least this share of ResNet34's accuracy"),
        "two_layer_parameters": Figure(3_318_898, "int", "two-layer net, trainable parameters (50 classes)"),
        "resnet34_parameters": Figure(21_310_322, "int", "ResNet34, trainable parameters (50 classes)"),
        "ablation_two_layer_val_acc": Figure(0.2000, "pct", "two-layer net in the shorter ablation runs"),
        "ablation_single_layer_val_acc": Figure(0.1578, "pct", "ablation: one effective layer"),
        "ablation_smaller_kernel_val_acc": Figure(0.1911, "pct", "ablation: smaller kernels"),
    }, (("two-layer", "two_layer_parameters", "two_layer_val_acc"),
        ("ResNet34", "resnet34_parameters", "resnet34_val_acc"))),
    "02": Study("02", "02_resnet50_cbam_100class", "ResNet50 + CBAM, focal loss", {
        "final_val_acc": Figure(0.8067, "pct", "ResNet50 + CBAM with focal loss, best validation accuracy"),
        "final_train_acc": Figure(0.9588, "pct", "ResNet50 + CBAM with focal loss, final training accuracy"),
        "final_seconds_per_epoch": Figure(2.11 * 60, "seconds", "ResNet50 + CBAM, seconds per epoch on its GPU"),
        "baseline_val_acc": Figure(0.7845, "pct", "ResNet50 with cross-entropy, best validation accuracy"),
        "baseline_train_acc": Figure(0.9423, "pct", "ResNet50 with cross-entropy, final training accuracy"),
        "baseline_seconds_per_epoch": Figure(2.05 * 60, "seconds", "ResNet50, seconds per epoch on its GPU"),
        "final_parameters": Figure(23_800_022, "int", "ResNet50 + CBAM, trainable parameters (100 classes)"),
        "cbam_parameters": Figure(87_090, "int", "parameters the CBAM modules add to ResNet50"),
        "model_mib": Figure(90.99, "mib", "saved model size (the write-up's 'MB' are MiB)"),
    }, (("ResNet50 + CBAM", "final_parameters", "final_val_acc"),)),
    "03": Study("03", "03_cifar10_resnet", "CIFAR ResNet under 5M", {
        "peak_val_acc": Figure(0.9461, "pct", "peak validation accuracy on CIFAR-10"),
        "kaggle_test_acc": Figure(0.84161, "pct", "accuracy on the course's unlabeled Kaggle test set"),
        "final_train_acc": Figure(0.9941, "pct", "final training accuracy"),
        "parameters": Figure(1_177_130, "int", "trainable parameters (32/64/128 channels, 4/4/3 blocks)"),
    }, (("CIFAR ResNet", "parameters", "peak_val_acc"),)),
    "04": Study("04", "04_cifar10_random_search", "random search under 5M"),  # the write-up gives a space, no figure
}


def figure(study, key):
    """The value of one published figure, e.g. figure("01", "two_layer_val_acc") -> 0.5756."""
    try:
        return STUDIES[study].figures[key].value
    except KeyError:
        raise KeyError(f"study {study!r} publishes no figure {key!r}; see lib/writeups.py") from None


def published_points():
    """(study, label, parameters, accuracy) of every model whose write-up gives both figures."""
    return [(number, label, figure(number, params), figure(number, acc))
            for number, study in STUDIES.items() for label, params, acc in study.points]
