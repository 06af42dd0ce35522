"""The training engine under lib.run.Run.fit: restore, train one epoch, evaluate, save, `loop` over them;
per-epoch history, atomic checkpoints (last and best) and exact resume."""
import contextlib
import glob
import json
import math
import os
import pickle
import time

import torch
from torch import nn

from . import precision, resume_checks
from .files import atomic_torch_save, atomic_write_json
from .folders import set_epoch
from .precision import autocast
from .progress import tqdm

CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "scaler", "best_metric", "history", "cfg", "rng")
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")
REFRESH_S = 2.0  # seconds between the training loop's reads of its running loss and accuracy (progress, NaN check)


def _to_device(x, y, device):
    """Move a batch to the device without blocking (pinned memory makes the copy asynchronous); the loaders have
    already given it the model's memory format."""
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def _accumulate(totals, loss, logits, y):
    """Add a batch's summed loss and correct count to the device-side totals, with no read back to the host."""
    n = len(y)
    totals += torch.stack([loss.detach().float() * n, (logits.argmax(1) == y).sum().float()])


def _read_totals(totals, count, where):
    """(mean loss, accuracy) from the device-side totals, failing on a non-finite loss.

    The host waits for the device here: callers read at most every few seconds and once at the end.
    """
    loss_sum, correct = totals.tolist()  # host waits for the device
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"the loss became {loss_sum} {where}: lower the learning rate (or use amp=False "
                                 "if it only happens in reduced precision).")
    return loss_sum / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def evaluate(model, loader, device, loss_fn=None, amp=None, return_predictions=False, progress=False,
             desc="eval"):
    """Mean loss and accuracy over a loader; optionally the predictions and targets too (one host read in all)."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.eval()
    totals, count, preds, targets = torch.zeros(2, device=device), 0, [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = _to_device(x, y, device)
        with autocast(device, amp):
            logits = model(x)
        _accumulate(totals, loss_fn(logits.float(), y), logits, y)
        count += len(y)
        if return_predictions:
            preds.append(logits.argmax(1))
            targets.append(y)
    loss, acc = _read_totals(totals, count, f"in evaluation ({desc})")
    result = {"loss": loss, "acc": acc, "count": count}
    if return_predictions:
        empty = torch.empty(0, dtype=torch.long)
        result["predictions"] = torch.cat(preds).cpu() if preds else empty
        result["targets"] = torch.cat(targets).cpu() if targets else empty
    return result


def scheduler_kind(scheduler):
    """How a scheduler is stepped: 'plateau' (on val loss), 'batch' (warm restarts, fractional epochs) or 'epoch'."""
    if scheduler is None:
        return None
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return "plateau"
    if isinstance(scheduler, (torch.optim.lr_scheduler.CosineAnnealingWarmRestarts,
                              torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)):
        return "batch"
    return "epoch"


def step_batch_scheduler(scheduler, epoch, step, steps):
    """Step a per-batch scheduler after batch `step` (0-based) of `steps` in `epoch`.

    Warm restarts take the fractional epoch reached, so the next batch trains at lr(epoch + (step + 1) / steps)
    and a restart falls exactly on an epoch boundary. OneCycleLR and CyclicLR count batches: they are stepped
    without an argument (an epoch argument would make them use it as a batch count).
    """
    if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts):
        scheduler.step(epoch + (step + 1) / steps)
    else:
        scheduler.step()


def step_epoch_scheduler(scheduler, val_loss):
    """Step a per-epoch scheduler after validation: a plateau scheduler on the validation loss, others plainly."""
    kind = scheduler_kind(scheduler)
    if kind == "plateau":
        scheduler.step(val_loss)
    elif kind == "epoch":
        scheduler.step()


def _rng_state():
    """Torch RNG states (CPU and CUDA), so a resumed run draws the same dropout masks as an uninterrupted one."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    """Restore what `_rng_state` saved; torch takes RNG states only as CPU byte tensors, wherever they were loaded."""
    torch.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(path, *, epoch, model, optimizer, scheduler, best_metric, history, cfg, scaler=None,
                    resumable=None):
    """Write a checkpoint atomically: a crash during the save leaves the previous file usable.

    A resumable checkpoint (last.pt) holds everything resume needs: optimizer, scheduler, gradient scaler and RNG
    state. Otherwise (best.pt, the default for that name) only the weights and their record: epoch, metric,
    history, cfg; the optimizer state would triple the file (AdamW) and nothing resumes from the best epoch.
    """
    if resumable is None:
        resumable = os.path.basename(os.fspath(path)) != "best.pt"
    state = {"epoch": epoch, "model": model.state_dict(), "best_metric": best_metric, "history": history, "cfg": cfg}
    if resumable:
        state.update(optimizer=optimizer.state_dict(), rng=_rng_state(),
                     scheduler=scheduler.state_dict() if scheduler is not None else None,
                     scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None)
    atomic_torch_save(state, path)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint safely (weights_only: tensors and plain containers, no code), naming the file on failure."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} not found. Train first, or point to the right out_dir.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message suggests weights_only=False, which is exactly what must not be done with such a file
        detail = next((line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line),
                      str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise ValueError(f"refusing to load checkpoint {path!r}: it holds Python objects beyond tensors and plain "
                         f"containers ({detail}), and loading those can run code from the file. Use a checkpoint "
                         "written by this project's fit, or delete it and pass resume=False to start over.") from err
    except Exception as err:
        raise ValueError(f"cannot load checkpoint {path!r} ({type(err).__name__}: {err}). It is damaged or not a "
                         "checkpoint written by this project: delete it, or pass resume=False to start over.") from err


# the run's switches (lib.run.Run), which a resumed run may change: how long and where it runs, not what it trains
RUN_SWITCHES = frozenset({"resume", "epochs", "device", "amp", "channels_last", "compile_model", "num_workers",
                          "out_dir", "max_steps_per_epoch", "progress",
                          "compile",  # compile_model's former name, as older checkpoints hold it
                          "profile"})  # how the values were given (a -f file or a profile name): values are compared
PATH_KEYS = ("data_dir",)  # compared by the folder they lead to, not by how they are spelt


def _resolved(key, value):
    """A cfg value as it acts: a path by the folder it leads to, so `data/x` and its absolute form are one value."""
    if key in PATH_KEYS and isinstance(value, str) and value:
        from .utils import repo_path
        return os.path.realpath(repo_path(value))
    return value


def _check_resume_cfg(saved, current, path, free_keys=RUN_SWITCHES):
    """Refuse to continue a checkpoint under other training settings (the result would mix two runs)."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return
    changed = sorted(k for k in set(saved) | set(current) if k not in free_keys
                     and _resolved(k, saved.get(k, "<unset>")) != _resolved(k, current.get(k, "<unset>")))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k, '<unset>')!r} in the checkpoint, {current.get(k, '<unset>')!r} now"
                            for k in changed)
        raise ValueError(f"{path} was trained with other settings ({details}). Resume with the checkpoint's "
                         "settings, or start over: resume=False, or another out_dir.")


def load_model_state(model, state, path="checkpoint"):
    """load_state_dict that explains an architecture mismatch instead of listing a hundred keys, and refuses
    non-finite weights (they would surface later as a NaN loss, blamed on the learning rate)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: field 'model' should map parameter names to tensors, got "
                         f"{type(state).__name__}. The file is damaged: delete it, or resume=False to start over.")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise ValueError(f"{path}: field 'model' holds non-finite weights (NaN or inf in {bad!r}). The file is "
                         "damaged or saved from a diverged run: use an earlier checkpoint (best.pt), or start over "
                         "with resume=False (another out_dir, or overwrite=True).")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).split("\n")[1:3]
        raise ValueError(f"{path} holds weights of a different architecture than this model "
                         f"({'; '.join(s.strip() for s in first)}). Use the same model parameters it was trained "
                         "with, or a different out_dir to start afresh.") from err


def _remove_stale_temp_files(checkpoint_dir, name):
    """Delete the temporary files a run killed mid-save left beside its checkpoints (they are never complete)."""
    stale = glob.glob(os.path.join(glob.escape(os.fspath(checkpoint_dir)), ".tmp-*"))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    if stale:
        print(f"[{name}] removed {len(stale)} unfinished checkpoint file(s) left by an interrupted save")


def restore(checkpoint_dir, *, model, optimizer, scheduler, scaler, cfg, device, name, free_keys=RUN_SWITCHES):
    """Load last.pt into the model, optimizer, scheduler, scaler and RNGs; return (history, best, start epoch)."""
    _remove_stale_temp_files(checkpoint_dir, name)
    last_path = os.path.join(checkpoint_dir, "last.pt")
    if not os.path.isfile(last_path):
        print(f"[{name}] resume=True but there is no {last_path}: starting at epoch 1")
        return {k: [] for k in HISTORY_KEYS}, -math.inf, 0
    # loaded on the CPU: the RNG states must stay there, and load_state_dict moves the weights and the optimizer
    # state to wherever the model's parameters live
    ckpt = load_checkpoint(last_path, map_location="cpu")
    resume_checks.check_resumable(ckpt, last_path, CHECKPOINT_KEYS, HISTORY_KEYS)
    _check_resume_cfg(ckpt.get("cfg"), cfg, last_path, free_keys)
    load_model_state(model, ckpt["model"], last_path)
    optimizer.load_state_dict(ckpt["optimizer"])
    resume_checks.check_schedule(scheduler, ckpt["scheduler"], ckpt.get("cfg"), cfg, last_path, free_keys)
    if scheduler is not None and ckpt["scheduler"] is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    _set_rng_state(ckpt["rng"])
    start_epoch = ckpt["epoch"] + 1
    print(f"[{name}] resumed from {last_path} after epoch {start_epoch} (best val acc {ckpt['best_metric']:.4f})")
    return ckpt["history"], ckpt["best_metric"], start_epoch


def train_one_epoch(model, loader, optimizer, loss_fn, *, device, amp, scaler, scheduler, epoch, steps,
                    progress=True, desc="train", refresh_s=None):
    """One epoch of training (at most `steps` batches); returns mean loss, accuracy, images and seconds.

    The loss and the correct count stay on the device; the host reads them (and checks the loss is finite) at
    most every `refresh_s` seconds for the progress bar, and once at the end, so it never waits on a step.
    """
    refresh_s = REFRESH_S if refresh_s is None else refresh_s
    model.train()
    set_epoch(loader, epoch)
    per_batch_scheduler = scheduler_kind(scheduler) == "batch"
    totals, count, next_read = torch.zeros(2, device=device), 0, time.monotonic() + refresh_s
    started = time.perf_counter()
    bar = tqdm(loader, total=steps, desc=desc, leave=False, disable=not progress)
    for step, (x, y) in enumerate(bar):
        if step >= steps:
            break
        x, y = _to_device(x, y, device)
        with autocast(device, amp):
            logits = model(x)
            loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        # float16 only: the scaler multiplies the loss up and skips a step whose gradients overflowed (it reads
        # that verdict on the host once per step, torch's design); for bf16 and fp32 these are plain calls
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if per_batch_scheduler:
            step_batch_scheduler(scheduler, epoch, step, steps)
        _accumulate(totals, loss, logits, y)
        count += len(y)
        if time.monotonic() >= next_read:
            mean_loss, acc = _read_totals(totals, count, f"in epoch {epoch + 1} by step {step + 1}")
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{acc:.3f}")
            next_read = time.monotonic() + refresh_s
    mean_loss, acc = _read_totals(totals, count, f"in epoch {epoch + 1}")  # also waits for the epoch's last step
    seconds = time.perf_counter() - started
    return {"loss": mean_loss, "acc": acc, "count": count, "seconds": seconds}


def save_epoch(checkpoint_dir, improved, **state):
    """last.pt after every epoch, best.pt when validation accuracy improved."""
    save_checkpoint(os.path.join(checkpoint_dir, "last.pt"), **state)
    if improved:
        save_checkpoint(os.path.join(checkpoint_dir, "best.pt"), **state)


def _history_row(epoch, trained, val, lr):
    """One epoch's entry of the history (HISTORY_KEYS)."""
    seconds = trained["seconds"]
    return {"epoch": epoch + 1, "train_loss": trained["loss"], "train_acc": trained["acc"], "val_loss": val["loss"],
            "val_acc": val["acc"], "lr": lr, "seconds": seconds,
            "images_per_s": trained["count"] / seconds if seconds > 0 else float("nan")}


def loop(model, train_loader, val_loader, *, epochs, optimizer, loss_fn=None, scheduler=None, device="cpu",
                 checkpoint_dir=None, cfg=None, free_keys=RUN_SWITCHES, resume=False, max_steps_per_epoch=None,
                 amp=None, channels_last=None, compile=False, progress=True, name="model", on_epoch=None):
    """The engine under lib.run.Run.fit: train for `epochs`, evaluating after each; keep last.pt and best.pt in
    checkpoint_dir; return the history.

    amp: None picks the device's best precision (lib.precision), False is float32, or "bf16" / "fp16".
    channels_last: the model's memory format (None: the device's best); the loaders give batches theirs.
    With resume=True and a last.pt present, training continues after its epoch with the saved optimizer,
    scheduler and RNG state: the result equals an uninterrupted run (exactly, on the CPU).
    on_epoch(history), if given, sees the history after every epoch (Ray Tune's per-epoch report, lib.search).
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    amp = precision.resolve_amp(amp, device)
    channels_last = precision.resolve_channels_last(channels_last, device, amp)
    model.to(device, memory_format=precision.memory_format(channels_last))
    scaler = precision.grad_scaler(device, amp)
    history, best, start_epoch = {k: [] for k in HISTORY_KEYS}, -math.inf, 0
    if resume and checkpoint_dir:
        history, best, start_epoch = restore(checkpoint_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                                             scaler=scaler, cfg=cfg, device=device, name=name, free_keys=free_keys)
        if start_epoch > epochs:  # the run would keep epochs beyond the end a fresh run with these settings has
            raise ValueError(f"[{name}] {os.path.join(checkpoint_dir, 'last.pt')} already holds {start_epoch} epochs, "
                             f"more than epochs={epochs}. Resume with epochs >= {start_epoch}, or start over: "
                             "resume=False with another out_dir, or overwrite=True.")
    # the compiled wrapper shares the model's parameters; checkpoints keep the plain model's state_dict
    step_model = torch.compile(model) if compile else model
    steps = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
    for epoch in range(start_epoch, epochs):
        trained = train_one_epoch(step_model, train_loader, optimizer, loss_fn, device=device, amp=amp,
                                  scaler=scaler, scheduler=scheduler, epoch=epoch, steps=steps, progress=progress,
                                  desc=f"{name} epoch {epoch + 1}/{epochs}")
        val = evaluate(step_model, val_loader, device, loss_fn, amp)
        row = _history_row(epoch, trained, val, optimizer.param_groups[0]["lr"])
        step_epoch_scheduler(scheduler, val["loss"])
        for k in HISTORY_KEYS:
            history[k].append(row[k])
        improved, best = val["acc"] > best, max(best, val["acc"])
        if checkpoint_dir:
            save_epoch(checkpoint_dir, improved, epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler,
                       scaler=scaler, best_metric=best, history=history, cfg=cfg)
        if progress:
            print(f"[{name}] epoch {epoch + 1}/{epochs}: train loss {row['train_loss']:.3f} acc "
                  f"{row['train_acc']:.3f} | val loss {row['val_loss']:.3f} acc {row['val_acc']:.3f} | "
                  f"{row['seconds']:.1f} s", flush=True)
        if on_epoch:
            on_epoch(history)
    return history


FINISHED = "finished.json"


def _plain(cfg):
    """cfg as it reads back from JSON, so a saved and a current cfg compare equal."""
    return json.loads(json.dumps(cfg, default=str))


def is_finished(checkpoint_dir):
    """True if a model finished training in checkpoint_dir (its finished.json is there)."""
    return os.path.isfile(os.path.join(checkpoint_dir, FINISHED))


def load_finished(checkpoint_dir, model, *, epochs, record, free_keys, device, name):
    """A model that finished earlier: its best weights into `model`, its history returned, after the same checks as
    a resume (the record's values; the same epochs, since no optimizer state is kept to extend it)."""
    done = os.path.join(checkpoint_dir, FINISHED)
    with open(done, encoding="utf-8") as fh:
        saved = json.load(fh)
    _check_resume_cfg(saved.get("cfg"), _plain(record), done, free_keys)
    if saved["epochs"] != epochs:
        raise ValueError(f"[{name}] finished after {saved['epochs']} epochs in {checkpoint_dir} and keeps no "
                         f"optimizer state, so it cannot be changed to epochs={epochs}: resume with "
                         f"epochs={saved['epochs']}, or train afresh: another out_dir, or overwrite=True.")
    best = load_checkpoint(os.path.join(checkpoint_dir, "best.pt"), map_location=device)
    load_model_state(model, best["model"], os.path.join(checkpoint_dir, "best.pt"))
    model.to(device)
    print(f"[{name}] finished earlier ({saved['epochs']} epochs, {done}): not trained again")
    return saved["history"]


def mark_finished(checkpoint_dir, epochs, history, record):
    """What a finished model keeps: best.pt (weights) and finished.json (history); last.pt goes.

    last.pt, with the optimizer state, exists only while a model trains, so an interrupted run resumes exactly.
    """
    atomic_write_json(os.path.join(checkpoint_dir, FINISHED), {"epochs": epochs, "history": history,
                                                               "cfg": _plain(record)})
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(checkpoint_dir, "last.pt"))


def predict_logits(model, loader, device, amp=None):
    """Concatenated logits for every batch of a loader whose items are (images, anything), on the CPU."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for x, _ in loader:
            with autocast(device, amp):
                outputs.append(model(x.to(device, non_blocking=True)).float())
    return torch.cat(outputs).cpu()  # host waits for the device, once
