"""The one schema of a study's results: what every notebook writes to `<out_dir>/metrics.json` and reads back.

A `StudyResults` is one run of one notebook; `write(out_dir, results)` saves it atomically, `read(path_or_dir)` loads
and validates it, failing with a `ResultsError` that names the file and the field. The fields, all always written:

    study          "01" ... "05": the notebook's number
    data           "demo" | "real" (05: "none" while no study has results)
    cfg            the validated parameters (also in cfg.json and in every checkpoint)
    device, amp, channels_last, compile   where and how it ran (amp: "fp32" | "bf16" | "fp16")
    epochs_run     epochs of the longest training in the run
    headline       {stable name: float}, never empty: what lib.summary prints and lib.compare compares
                     01: two_layer_val_acc, resnet34_val_acc, two_layer_pct_of_resnet34 (0.956: 95.6% of
                         ResNet34's accuracy), each when its models ran; <model>_val_acc of the focus model always
                     02: final_val_acc (the final experiment), model_mib (the saved model.pt)
                     03: test_acc, best_val_acc
                     04: best_trial_val_acc (in the search), retrain_test_acc, designs_searched (trials trained)
                     05: studies_with_results
    models         {model name: ModelResult}: parameters, best_val_acc, seconds_per_epoch, test_acc (None if not
                   tested), final_train_acc (None if not recorded), history (per-epoch lists as lib.train.loop
                   records them) and extra (a study's per-model facts: 01 effective_layers, images_per_s;
                   02 use_cbam, loss, best_epoch, best_weights_val_acc, saved_mib; 04 trial, trial_val_acc, design)
    extra          the study's own facts (01 image_size, relative_size, goal_met, verdict, not_trained;
                   02 pretrained, weights_note, final_experiment, parameter_count, model_file, prediction_csv,
                   weakest_classes; 03 submission; 04 search; 05 runs_dir, studies)
    environment    python/torch/torchvision/numpy versions, platform, CPU threads, CUDA and GPU name
"""
import json
import math
import os
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Optional

from lib.files import atomic_write_json
from lib.utils import environment

FILE_NAME = "metrics.json"


class ResultsError(ValueError):
    """A metrics.json that is missing, unreadable or not in the schema; the message names the file and field."""


@dataclass
class ModelResult:
    """One trained model's results."""
    parameters: int
    best_val_acc: float
    seconds_per_epoch: float
    test_acc: Optional[float] = None
    final_train_acc: Optional[float] = None
    history: Optional[dict] = None
    extra: dict = field(default_factory=dict)


@dataclass
class StudyResults:
    """One run of one notebook (see the module docstring for every field)."""
    study: str
    data: str
    cfg: dict
    device: str
    amp: object
    channels_last: Optional[bool]
    compile: Optional[bool]
    epochs_run: int
    headline: dict
    models: dict
    extra: dict = field(default_factory=dict)
    environment: dict = field(default_factory=environment)


def from_history(history, parameters, test_acc=None, **extra):
    """A ModelResult from lib.train.loop's history: best validation accuracy, last training accuracy, epoch time.

    seconds_per_epoch is the median epoch, so the first one's compilation and warm-up do not inflate it; extra
    records the first epoch's seconds and that excess (`warmup_seconds`: torch.compile, cuDNN's autotuning, caches).
    """
    seconds = [float(s) for s in history["seconds"]]
    typical = median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    timing = {"first_epoch_seconds": seconds[0], "warmup_seconds": max(0.0, seconds[0] - typical)}
    return ModelResult(parameters=int(parameters), best_val_acc=float(max(history["val_acc"])),
                       seconds_per_epoch=float(median(seconds)), test_acc=test_acc,
                       final_train_acc=float(history["train_acc"][-1]), history=history, extra={**timing, **extra})


def write(out_dir, results):
    """Save results as out_dir/metrics.json (atomically) and return the path."""
    path = os.path.join(out_dir, FILE_NAME)
    atomic_write_json(path, asdict(results))
    return path


def _is_number(value):
    """True for an int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# field -> (test, what it must be); the tests run on the JSON values
_ANY_BOOL = (lambda v: v is None or isinstance(v, bool), "true, false or null")
_SCALAR = (lambda v: v is None or isinstance(v, (bool, str)), "a string, true, false or null")
_TEXT = (lambda v: isinstance(v, str), "a string")
_MAPPING = (lambda v: isinstance(v, dict), "an object")
_COUNT = (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "a whole number >= 0")
_OPTIONAL_FRACTION = (lambda v: v is None or (_is_number(v) and 0 <= v <= 1), "a number in [0, 1] or null")
STUDY_FIELDS = {"study": _TEXT, "data": _TEXT, "cfg": _MAPPING, "device": _TEXT, "amp": _SCALAR,
                "channels_last": _ANY_BOOL, "compile": _ANY_BOOL, "epochs_run": _COUNT, "headline": _MAPPING,
                "models": _MAPPING, "extra": _MAPPING, "environment": _MAPPING}
MODEL_FIELDS = {"parameters": _COUNT, "best_val_acc": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
                "seconds_per_epoch": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
                "test_acc": _OPTIONAL_FRACTION, "final_train_acc": _OPTIONAL_FRACTION,
                "history": (lambda v: v is None or isinstance(v, dict), "an object or null"), "extra": _MAPPING}


def _check_fields(tree, spec, where, path):
    """Raise ResultsError naming path and the field when tree lacks a field of spec, has another, or a wrong type."""
    prefix = f"{where}." if where else ""
    missing = [name for name in spec if name not in tree]
    unknown = sorted(set(tree) - set(spec))
    if missing or unknown:
        problem = f"missing field '{prefix}{missing[0]}'" if missing else f"unknown field '{prefix}{unknown[0]}'"
        raise ResultsError(f"{path}: {problem}; lib/results.py describes the schema")
    for name, (test, what) in spec.items():
        if not test(tree[name]):
            raise ResultsError(f"{path}: field '{prefix}{name}' must be {what}, not {tree[name]!r:.80}")


def _check_headline(headline, path):
    """Raise ResultsError unless headline maps names to finite numbers and holds at least one."""
    if not headline:
        raise ResultsError(f"{path}: field 'headline' is empty; every study reports at least one headline figure")
    for name, value in headline.items():
        if not _is_number(value) or not math.isfinite(value):
            raise ResultsError(f"{path}: field 'headline.{name}' must be a finite number, not {value!r:.80}")


def parse(tree, path="metrics.json"):
    """A StudyResults from the JSON tree of a metrics.json; ResultsError naming path on anything off the schema."""
    if not isinstance(tree, dict):
        raise ResultsError(f"{path}: holds {type(tree).__name__}, not a JSON object")
    _check_fields(tree, STUDY_FIELDS, "", path)
    _check_headline(tree["headline"], path)
    models = {}
    for name, entry in tree["models"].items():
        if not isinstance(entry, dict):
            raise ResultsError(f"{path}: field 'models.{name}' must be an object, not {entry!r:.80}")
        _check_fields(entry, MODEL_FIELDS, f"models.{name}", path)
        models[name] = ModelResult(**entry)
    headline = {name: float(value) for name, value in tree["headline"].items()}
    return StudyResults(**{**tree, "headline": headline, "models": models})


def read(path_or_dir):
    """The StudyResults saved at a metrics.json, or in a run folder holding one."""
    path = os.path.join(path_or_dir, FILE_NAME) if os.path.isdir(path_or_dir) else path_or_dir
    try:
        with open(path) as fh:
            tree = json.load(fh)
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file; the notebook writes it at the end of a finished run") from None
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: unreadable ({type(err).__name__}: {str(err)[:80]})") from None
    return parse(tree, path)


def _check_history(name, history, best_val_acc):
    """Raise AssertionError unless a history has epochs, finite losses, accuracies in [0, 1] and best_val_acc as max."""
    if not history.get("epoch"):
        raise AssertionError(f"{name}: the history records no epoch")
    if not all(v is not None and math.isfinite(v) for v in history["train_loss"] + history["val_loss"]):
        raise AssertionError(f"{name}: non-finite loss")
    if not all(0.0 <= v <= 1.0 for v in history["train_acc"] + history["val_acc"]):
        raise AssertionError(f"{name}: accuracy outside [0, 1]")
    if best_val_acc != max(history["val_acc"]):
        raise AssertionError(f"{name}: best_val_acc {best_val_acc} is not the history's best {max(history['val_acc'])}")


def check(results):
    """Raise AssertionError unless a run's results are sane for any data (a notebook's final check calls it)."""
    for name, model in results.models.items():
        if model.parameters <= 0 or model.seconds_per_epoch <= 0:
            raise AssertionError(f"{name}: parameters {model.parameters}, seconds per epoch {model.seconds_per_epoch}")
        if model.history is not None:
            _check_history(name, model.history, model.best_val_acc)
    if not results.headline or not all(math.isfinite(v) for v in results.headline.values()):
        raise AssertionError(f"the headline {results.headline} is empty or not finite")


def check_files(folder, names):
    """Raise AssertionError naming the first of folder/<name> that is missing or empty."""
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise AssertionError(f"{path} is missing or empty")


def check_run(out_dir, cfg, histories, files=()):
    """The end-of-run sanity checks that hold for any data, in one call: metrics.json reads back under the schema
    (finite losses, accuracies in [0, 1], each best as best_val_acc, a headline), with this run's parameters and
    per-model histories, and the named files exist and are not empty. Returns what was read."""
    import json
    saved = read(out_dir)
    check(saved)
    if saved.cfg != json.loads(json.dumps(cfg)):
        raise AssertionError(f"{out_dir}/metrics.json: its cfg is not this run's parameters")
    for name, history in histories.items():
        if name not in saved.models or saved.models[name].history != json.loads(json.dumps(history)):
            raise AssertionError(f"{out_dir}/metrics.json: model {name!r} is missing or its history is not the run's")
    check_files(out_dir, list(files))
    print("all checks passed")
    return saved
