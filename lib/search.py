"""Study 04's random search over CIFAR ResNet designs: the space as data, a seeded sampler, the parameter formula,
feasibility before training, one trial function, an atomic resumable trial log, and local or Ray Tune backends.

A design (`config`) uses notebook 03's parameter names, so the best one can be handed to it as a papermill file:
channels C_i, blocks B_i, conv_kernels F_i, skip_kernels K_i, pool_kernel P (None: global pooling), dropout.
"""
import csv
import dataclasses
import hashlib
import io
import json
import os
import random
import time

import torch

from . import cifar, files, models, precision, utils
from .run import Run

# notebook 03's parameter names: a design exported under these names runs there unchanged
DESIGN_KEYS = ("channels", "blocks", "conv_kernels", "skip_kernels", "pool_kernel", "dropout")
# what a space must say; per-stage keys are drawn once for every stage of a design
SPACE_KEYS = ("stages", "first_channels", "channel_growth", "blocks", "conv_kernels", "skip_kernels", "pool_kernel",
              "dropout")
PER_STAGE_KEYS = ("blocks", "conv_kernels", "skip_kernels")
# the training settings a trial's result depends on; device, amp and compile only change its speed
TRIAL_SETTINGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "seed", "max_steps_per_epoch",
                  "num_classes", "input_size")
# stopped_early: Tune's ASHA ended the trial before its last epoch (val_acc and epochs are then its last report's)
LOG_COLUMNS = ("trial", "stages", "first_channels", *DESIGN_KEYS, "params", "val_acc", "train_loss", "epochs",
               "stopped_early", "seconds", "key")
# a log written before stopped_early existed reads back with stopped_early False, so its search can be resumed
OLD_LOG_COLUMNS = tuple(c for c in LOG_COLUMNS if c != "stopped_early")
JSON_COLUMNS = DESIGN_KEYS  # lists and None survive a CSV round trip as JSON text
BACKENDS = ("local", "ray")
SCHEDULERS = ("fifo", "asha")  # fifo: every trial trains all its epochs; asha: Tune stops weak trials early (Ray only)


# ---------------------------------------------------------------- the space

def check_space(space):
    """Fail with the fix if `space` lacks a key, has an empty or non-list choice, or an even kernel."""
    if not isinstance(space, dict):
        raise ValueError(f"space should be a dict of lists of choices, got {type(space).__name__}")
    missing = [k for k in SPACE_KEYS if k not in space]
    unknown = [k for k in space if k not in SPACE_KEYS]
    if missing or unknown:
        raise ValueError(f"space: missing keys {missing}, unknown keys {unknown}. It takes exactly "
                         f"{', '.join(SPACE_KEYS)}, each a list of choices.")
    for key in SPACE_KEYS:
        choices = space[key]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ValueError(f"space[{key!r}] = {choices!r} should be a non-empty list of choices")
        allowed_none = key == "pool_kernel"  # None: adaptive (global) average pooling
        for c in choices:
            if c is None and allowed_none:
                continue
            if key == "dropout":
                ok = isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c < 1
            elif key == "channel_growth":
                ok = isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 1
            else:
                ok = isinstance(c, int) and not isinstance(c, bool) and c >= 1
            if not ok:
                raise ValueError(f"space[{key!r}] has the bad choice {c!r}")
            if key in ("conv_kernels", "skip_kernels") and c % 2 == 0:
                raise ValueError(f"space[{key!r}] has the even kernel {c}: with 'same' padding k // 2 only odd "
                                 "kernels keep the feature maps of the residual and skip paths equal. Use 1, 3, 5, 7.")
    return space


def sample_design(space, rng):
    """Draw one design from the space with a random.Random: N, C_1 and growth, then B_i, F_i, K_i per stage, P."""
    n = rng.choice(space["stages"])
    first, growth = rng.choice(space["first_channels"]), rng.choice(space["channel_growth"])
    channels = [int(round(first * growth ** i)) for i in range(n)]
    per_stage = {k: [rng.choice(space[k]) for _ in range(n)] for k in PER_STAGE_KEYS}
    return {"channels": channels, **per_stage, "pool_kernel": rng.choice(space["pool_kernel"]),
            "dropout": float(rng.choice(space["dropout"]))}


def feature_map_size(num_stages, input_size=32):
    """Side of the last stage's feature map: every stage after the first halves the input."""
    return input_size // 2 ** (num_stages - 1)


def parameter_count(design, num_classes=10, input_size=32):
    """Trainable parameters of models.CifarResNet(**design), in closed form (no model is built)."""
    channels, n = design["channels"], len(design["channels"])
    blocks, convs, skips = (models._as_list(design[k], n, k) for k in ("blocks", "conv_kernels", "skip_kernels"))
    total = 3 * channels[0] * 9 + 2 * channels[0]  # 3 x 3 stem convolution (no bias) + BatchNorm
    in_c = channels[0]
    for i, (c, b, f) in enumerate(zip(channels, blocks, convs)):
        for j in range(b):
            block_in = in_c if j == 0 else c
            total += block_in * c * f * f + c * c * f * f + 4 * c  # two convolutions, two BatchNorms
            if j == 0 and (i > 0 or block_in != c):  # projection shortcut where the shape changes
                total += block_in * c * skips[i] ** 2 + 2 * c
        in_c = c
    pool = design["pool_kernel"]
    features = channels[-1] if pool is None else channels[-1] * (feature_map_size(n, input_size) // pool) ** 2
    return total + features * num_classes + num_classes


def infeasibility(design, max_params, num_classes=10, input_size=32):
    """Why a design cannot be trained ('too_many_params', 'pool_too_large', 'no_feature_map'), or None if it can."""
    size = feature_map_size(len(design["channels"]), input_size)
    if size < 1:
        return "no_feature_map"
    if design["pool_kernel"] is not None and design["pool_kernel"] > size:
        return "pool_too_large"
    if parameter_count(design, num_classes, input_size) > max_params:
        return "too_many_params"
    return None


def plan_trials(space, num_trials, seed, max_params, num_classes=10, input_size=32, max_draws=None):
    """The first `num_trials` distinct feasible designs drawn with `seed`, and every draw that was skipped.

    Infeasible draws are rejected here, before any model exists, each with its reason and formula parameter count;
    repeated designs are skipped as 'duplicate'. The plan depends on nothing but the arguments, so an interrupted
    search and its resumption agree on every trial, and a larger num_trials extends the same plan.
    """
    check_space(space)
    rng = random.Random(seed)
    max_draws = max_draws or 1000 * num_trials + 1000
    trials, rejected, seen, draws = [], [], set(), 0
    while len(trials) < num_trials:
        if draws >= max_draws:
            raise ValueError(f"only {len(trials)} distinct feasible designs in {draws} draws from space "
                             f"(skipped: {skip_counts(rejected)}); widen the space, raise max_params={max_params:,} "
                             f"or lower num_trials={num_trials}.")
        design, draws = sample_design(space, rng), draws + 1
        reason = infeasibility(design, max_params, num_classes, input_size)
        signature = json.dumps(design, sort_keys=True)
        if reason is None and signature in seen:
            reason = "duplicate"
        params = parameter_count(design, num_classes, input_size)
        if reason:
            rejected.append({"design": design, "reason": reason, "params": params})
            continue
        seen.add(signature)
        trials.append({"trial": len(trials), "design": design, "params": params})
    return trials, rejected


def skip_counts(rejected):
    """How many draws were skipped for each reason (all reasons listed, zeros included)."""
    counts = {"too_many_params": 0, "pool_too_large": 0, "no_feature_map": 0, "duplicate": 0}
    for r in rejected:
        counts[r["reason"]] += 1
    return counts


# ---------------------------------------------------------------- training one design

@dataclasses.dataclass(frozen=True)
class TrialSettings:
    """How every trial trains: the values its result depends on (TRIAL_SETTINGS), then the run's switches."""
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    seed: int
    max_steps_per_epoch: int | None
    num_classes: int
    input_size: int  # image side in pixels
    device: str = "auto"  # resolved per trial, on its worker
    amp: bool | str | None = None
    channels_last: bool | None = None
    compile: bool | None = None


def design_run(settings, checkpoint_dir=None, resume=False, progress=False):
    """The run object a trial trains with: its device and precision resolved where it runs."""
    device = utils.resolve_device(settings.device)
    amp = precision.resolve_amp(settings.amp, device)
    channels_last = precision.resolve_channels_last(settings.channels_last, device, amp)
    return Run(device=device, amp=amp, channels_last=channels_last, compile=utils.auto_flag(settings.compile, device),
               resume=resume,
               max_steps_per_epoch=settings.max_steps_per_epoch, checkpoints=checkpoint_dir, progress=progress,
               record=dataclasses.asdict(settings))


def train_design(design, settings, tensors, checkpoint_dir=None, resume=False, progress=False, name="design",
                 on_epoch=None):
    """Build a design and train it with the CIFAR tensor path and SGD + cosine decay; return (model, history).

    on_epoch(model, history), if given, is called after every epoch.
    """
    x_train, y_train, x_val, y_val = tensors
    run = design_run(settings, checkpoint_dir, resume, progress)
    utils.seed_everything(settings.seed)  # every trial starts alike: same init stream, same batches
    model = models.CifarResNet(**design, num_classes=settings.num_classes, input_size=settings.input_size)
    train_loader = cifar.TensorBatchLoader(x_train, y_train, settings.batch_size, train=True, device=run.device,
                                           seed=settings.seed, channels_last=run.channels_last, drop_last=run.compile)
    val_loader = cifar.TensorBatchLoader(x_val, y_val, 500, train=False, device=run.device,
                                         channels_last=run.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    hook = (lambda history: on_epoch(model, history)) if on_epoch else None
    history = run.fit(model, train_loader, val_loader, optimizer=optimizer, scheduler=scheduler,
                      epochs=settings.epochs, name=name, on_epoch=hook)
    return model, history


def train_trial(design, settings, tensors, on_epoch=None):
    """One trial: train the design for settings.epochs; best validation accuracy, parameters, seconds.

    on_epoch(result), if given, gets the same result as it stands after every epoch (Ray Tune reports it, so a
    scheduler can stop the trial). A trial compiles only with settings.compile True: None means off here, because
    torch.compile takes about a minute on CUDA, longer than a short trial gains.
    """
    started = time.perf_counter()

    def result(model, history):
        return {"val_acc": max(history["val_acc"]), "params": utils.count_parameters(model),
                "train_loss": history["train_loss"][-1], "epochs": len(history["epoch"]),
                "seconds": time.perf_counter() - started}

    hook = (lambda model, history: on_epoch(result(model, history))) if on_epoch else None
    settings = dataclasses.replace(settings, compile=settings.compile is True)
    return result(*train_design(design, settings, tensors, on_epoch=hook))


def trial_key(design, settings):
    """Short hash of a design and the settings its result depends on: a logged row is reused only if it matches."""
    text = json.dumps({"design": design, **{k: getattr(settings, k) for k in TRIAL_SETTINGS}}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_trial(trial, settings, tensors, trial_fn=train_trial, on_epoch=None):
    """Run the trial function on one planned trial and return its log row (both backends call exactly this).

    With on_epoch the trial function is called with it too, and on_epoch gets the trial's log row after every epoch.
    """
    design = trial["design"]
    if on_epoch is None:  # the local backend: a trial function may take just (design, settings, tensors)
        return trial_row(trial, trial_fn(design, settings, tensors), settings)
    result = trial_fn(design, settings, tensors, on_epoch=lambda r: on_epoch(trial_row(trial, r, settings)))
    return trial_row(trial, result, settings)


def trial_row(trial, result, settings):
    """The log row of a planned trial from its trial function's result, once the parameter count is checked."""
    design = trial["design"]
    if result["params"] != trial["params"]:
        raise AssertionError(f"trial {trial['trial']}: the model has {result['params']:,} parameters but the formula "
                             f"gave {trial['params']:,}")
    return {"trial": trial["trial"], "stages": len(design["channels"]), "first_channels": design["channels"][0],
            **{k: design[k] for k in DESIGN_KEYS}, "params": result["params"], "val_acc": result["val_acc"],
            "train_loss": result["train_loss"], "epochs": result["epochs"], "stopped_early": False,
            "seconds": result["seconds"], "key": trial_key(design, settings)}


# ---------------------------------------------------------------- the trial log

def write_trials(path, rows):
    """Rewrite the whole trials.csv atomically, one row per trial in trial order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows, key=lambda r: r["trial"]):
        writer.writerow({k: json.dumps(row[k]) if k in JSON_COLUMNS else row[k] for k in LOG_COLUMNS})
    files.atomic_write_text(path, buffer.getvalue())


def read_trials(path):
    """The rows of a trials.csv written by write_trials, typed back (floats exactly, lists as lists)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) not in (LOG_COLUMNS, OLD_LOG_COLUMNS):
            raise ValueError(f"{path} is not a trial log of this version (columns {reader.fieldnames}); "
                             "move it away or use another out_dir.")
        ints, floats = ("trial", "stages", "first_channels", "params", "epochs"), ("val_acc", "train_loss", "seconds")
        rows = []
        for raw in reader:
            row = {k: json.loads(raw[k]) if k in JSON_COLUMNS else raw.get(k) for k in LOG_COLUMNS}
            row.update({k: int(raw[k]) for k in ints})
            row.update({k: float(raw[k]) for k in floats})
            row["stopped_early"] = row["stopped_early"] == "True"
            rows.append(row)
    return rows


def ranked(rows):
    """Rows best first: highest validation accuracy, then the earlier trial."""
    return sorted(rows, key=lambda r: (-r["val_acc"], r["trial"]))


def trials_frame(rows):
    """The trial log as a pandas DataFrame, best first; design columns keep their Python values (None stays None)."""
    import pandas as pd
    rows = ranked(rows)
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    for key in DESIGN_KEYS:  # a column of ints and None would otherwise become floats and NaN
        frame[key] = pd.Series([r[key] for r in rows], dtype=object)
    return frame


# ---------------------------------------------------------------- the search

def check_backend(backend, scheduler="fifo"):
    """Fail with the fix if the backend or the scheduler is unknown, or asha is asked of the local backend."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: use 'local' (sequential, in this process) or 'ray' (Ray Tune)")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler={scheduler!r}: use 'fifo' (every trial trains all its epochs) or 'asha' (Ray "
                         "Tune's ASHA stops weak trials early; backend='ray' only)")
    if scheduler == "asha" and backend != "ray":
        raise ValueError(f"scheduler='asha' needs backend='ray': ASHA is Ray Tune's, and backend={backend!r} trains "
                         "every trial to the end. Use backend='ray', or scheduler='fifo'.")


def run_search(trials, settings, tensors, log_path, *, backend="local", resume=True, trial_fn=train_trial,
               cpus_per_trial=1, gpus_per_trial=None, ray_address=None, ray_dir=None, scheduler="fifo",
               progress=True):
    """Run every planned trial not yet in the log, writing the log after each; return all rows in trial order.

    With resume=True the rows already in `log_path` whose design and settings match the plan are kept and their
    trials skipped; resume=False starts the log afresh. backend='ray' runs the same `run_trial` as Ray Tune trials
    (lib.search_ray: resources per trial, and scheduler='asha' to stop weak trials early); the local backend
    ignores cpus_per_trial and gpus_per_trial. A second search writing the same log stops at once (an OS lock beside
    it), naming the first one's process.
    """
    check_backend(backend, scheduler)
    with files.locked(files.lock_path_for(log_path), f"trial log {log_path}"):
        return _run_search(trials, settings, tensors, log_path, backend, resume, trial_fn, progress,
                           dict(cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial,
                                ray_address=ray_address, scheduler=scheduler,
                                ray_dir=ray_dir or os.path.join(os.path.dirname(os.path.abspath(log_path)),
                                                                "ray_results")))


def _run_search(trials, settings, tensors, log_path, backend, resume, trial_fn, progress, ray_options):
    """run_search's work, under its lock."""
    done = {}
    if resume:
        planned = {t["trial"]: trial_key(t["design"], settings) for t in trials}
        for row in read_trials(log_path):
            if planned.get(row["trial"]) != row["key"]:
                raise ValueError(f"{log_path} holds trial {row['trial']} of a different search (another space, seed, "
                                 "budget, num_trials or training settings). Use a new out_dir, or delete that "
                                 "trials.csv to start the search over.")
            done[row["trial"]] = row
    pending = [t for t in trials if t["trial"] not in done]
    if done:
        print(f"resuming: {len(done)} trials already in {log_path}, {len(pending)} to run")
    write_trials(log_path, done.values())

    def record(row):
        done[row["trial"]] = row
        write_trials(log_path, done.values())

    if backend == "local":
        for t in pending:
            row = run_trial(t, settings, tensors, trial_fn)
            record(row)
            if progress:
                print(f"trial {row['trial']:3d}: {row['params']:>10,} params, val acc {row['val_acc']:.4f}, "
                      f"{row['seconds']:.1f} s  {row['channels']} x {row['blocks']}")
    elif pending:
        from . import search_ray  # Ray is optional: imported only when asked for
        search_ray.run_ray(pending, settings, tensors, record, trial_fn, **ray_options)
    missing = [t["trial"] for t in trials if t["trial"] not in done]
    if missing:
        raise RuntimeError(f"trials {missing} produced no result; see the errors above, then rerun with resume=True")
    return [done[t["trial"]] for t in trials]


# ---------------------------------------------------------------- handing the best design to notebook 03

def export_design(path, design, comment=""):
    """Write a design as a papermill parameter file (notebook 03's names only) that `papermill -f` accepts."""
    import yaml
    body = yaml.safe_dump({k: design[k] for k in DESIGN_KEYS}, sort_keys=False, default_flow_style=None)
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    files.atomic_write_text(path, header + body)
    return path


def check_search(log_path, rows, num_trials, max_params, exported_path):
    """The search's checks for any data: every trial logged once, none over the budget, sane accuracies and losses,
    the log reading back as the rows, the best design exported."""
    import math  # noqa: E401

    import yaml
    trials = sorted(r["trial"] for r in rows)
    assert trials == list(range(num_trials)), f"trials logged: {trials}, planned {num_trials}"
    assert all(r["params"] <= max_params for r in rows), "a design over the budget was trained"
    assert all(0 <= r["val_acc"] <= 1 and math.isfinite(r["train_loss"]) for r in rows), "a bad accuracy or loss"
    assert read_trials(log_path) == [dict(r) for r in rows], f"{log_path} does not read back as the search's rows"
    with open(exported_path, encoding="utf-8") as fh:
        assert yaml.safe_load(fh) == {k: ranked(rows)[0][k] for k in DESIGN_KEYS}, f"{exported_path}: not the best"
