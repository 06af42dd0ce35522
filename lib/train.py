"""`fit` and `evaluate`, with per-epoch history, atomic checkpoints (last and best) and exact resume."""
import contextlib
import glob
import json
import math
import os
import pickle
import time

import torch
from torch import nn
from .progress import tqdm

from .data import set_epoch
from .utils import atomic_torch_save, atomic_write_json

CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "best_metric", "history", "cfg", "rng")
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


def autocast(device, amp):
    """bfloat16 autocast on CUDA when `amp`; a no-op context otherwise (CPU runs stay bit-exact float32)."""
    if amp and torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(x, y, device, channels_last):
    """Move a batch to the device without blocking (pinned memory makes the copy asynchronous)."""
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


@torch.no_grad()
def evaluate(model, loader, device, loss_fn=None, amp=False, channels_last=False, return_predictions=False,
             progress=False, desc="eval"):
    """Mean loss and accuracy over a loader; optionally the predictions and targets too."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.eval()
    total_loss, correct, count, preds, targets = 0.0, 0, 0, [], []
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not progress):
        x, y = _to_device(x, y, device, channels_last)
        with autocast(device, amp):
            logits = model(x)
        total_loss += loss_fn(logits.float(), y).item() * len(y)
        pred = logits.argmax(1)
        correct += (pred == y).sum().item()
        count += len(y)
        if return_predictions:
            preds.append(pred.cpu())
            targets.append(y.cpu())
    result = {"loss": total_loss / max(count, 1), "acc": correct / max(count, 1), "count": count}
    if return_predictions:
        result["predictions"] = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
        result["targets"] = torch.cat(targets) if targets else torch.empty(0, dtype=torch.long)
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


def _rng_state():
    """Torch RNG states (CPU and CUDA), so a resumed run draws the same dropout masks as an uninterrupted one."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    """Restore what `_rng_state` saved."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, *, epoch, model, optimizer, scheduler, best_metric, history, cfg, resumable=None):
    """Write a checkpoint atomically: a crash during the save leaves the previous file usable.

    A resumable checkpoint (last.pt) holds everything resume needs: optimizer, scheduler and RNG state. Otherwise
    (best.pt, the default for that name) only the weights and their record: epoch, metric, history, cfg; the
    optimizer state would triple the file (AdamW) and nothing resumes from the best epoch.
    """
    if resumable is None:
        resumable = os.path.basename(os.fspath(path)) != "best.pt"
    state = {"epoch": epoch, "model": model.state_dict(), "best_metric": best_metric, "history": history, "cfg": cfg}
    if resumable:
        state.update(optimizer=optimizer.state_dict(), rng=_rng_state(),
                     scheduler=scheduler.state_dict() if scheduler is not None else None)
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


# settings a resumed run may change: how long and where it runs, not what it trains
RESUME_FREE_KEYS = {"resume", "epochs", "device", "amp", "compile", "num_workers", "out_dir", "models",
                    "max_steps_per_epoch", "progress"}


def _check_resume_cfg(saved, current, path):
    """Refuse to continue a checkpoint under other training settings (the result would mix two runs)."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return
    changed = sorted(k for k in set(saved) | set(current)
                     if k not in RESUME_FREE_KEYS and saved.get(k, "<unset>") != current.get(k, "<unset>"))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k, '<unset>')!r} in the checkpoint, {current.get(k, '<unset>')!r} now"
                            for k in changed)
        raise ValueError(f"{path} was trained with other settings ({details}). Resume with the checkpoint's "
                         "settings, or start over: resume=False, or another out_dir.")


def load_model_state(model, state, path="checkpoint"):
    """load_state_dict that explains an architecture mismatch instead of listing a hundred keys."""
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


def fit(model, train_loader, val_loader, *, epochs, optimizer, loss_fn=None, scheduler=None, device="cpu",
        checkpoint_dir=None, cfg=None, resume=False, max_steps_per_epoch=None, amp=False, channels_last=False,
        compile=False, progress=True, name="model"):
    """Train for `epochs`, evaluating after each; keep last.pt and best.pt in checkpoint_dir; return the history.

    With resume=True and a last.pt present, training continues after its epoch with the saved optimizer,
    scheduler and RNG state: the result equals an uninterrupted run (exactly, on the CPU).
    """
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    kind = scheduler_kind(scheduler)
    history = {k: [] for k in HISTORY_KEYS}
    best, start_epoch = -math.inf, 0
    last_path = os.path.join(checkpoint_dir, "last.pt") if checkpoint_dir else None
    best_path = os.path.join(checkpoint_dir, "best.pt") if checkpoint_dir else None
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if resume and checkpoint_dir:
        _remove_stale_temp_files(checkpoint_dir, name)
    if resume and last_path and os.path.isfile(last_path):
        ckpt = load_checkpoint(last_path, map_location=device)
        _check_resume_cfg(ckpt.get("cfg"), cfg, last_path)
        load_model_state(model, ckpt["model"], last_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt["scheduler"] is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        history, best, start_epoch = ckpt["history"], ckpt["best_metric"], ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"])
        print(f"[{name}] resumed from {last_path} after epoch {start_epoch} (best val acc {best:.4f})")
    elif resume and last_path:
        print(f"[{name}] resume=True but there is no {last_path}: starting at epoch 1")
    # the compiled wrapper shares the model's parameters; checkpoints keep the plain model's state_dict
    step_model = torch.compile(model) if compile else model
    steps = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
    epoch_bar = tqdm(range(start_epoch, epochs), desc=name, unit="epoch", disable=not progress,
                     initial=start_epoch, total=epochs)
    for epoch in epoch_bar:
        step_model.train()
        set_epoch(train_loader, epoch)
        started = time.perf_counter()
        total_loss, correct, count = 0.0, 0, 0
        batch_bar = tqdm(train_loader, total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                         disable=not progress)
        for step, (x, y) in enumerate(batch_bar):
            if step >= steps:
                break
            x, y = _to_device(x, y, device, channels_last)
            with autocast(device, amp):
                logits = step_model(x)
                loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"[{name}] loss became {loss.item()} at epoch {epoch + 1}, step {step}: "
                                         "lower the learning rate. The last good checkpoint is " + str(last_path))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if kind == "batch":
                step_batch_scheduler(scheduler, epoch, step, steps)
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            count += len(y)
            batch_bar.set_postfix(loss=f"{total_loss / count:.3f}", acc=f"{correct / count:.3f}")
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        val = evaluate(step_model, val_loader, device, loss_fn, amp, channels_last)
        lr = optimizer.param_groups[0]["lr"]
        if kind == "plateau":
            scheduler.step(val["loss"])
        elif kind == "epoch":
            scheduler.step()
        row = {"epoch": epoch + 1, "train_loss": total_loss / max(count, 1), "train_acc": correct / max(count, 1),
               "val_loss": val["loss"], "val_acc": val["acc"], "lr": lr, "seconds": seconds,
               "images_per_s": count / seconds if seconds > 0 else float("nan")}
        for k in HISTORY_KEYS:
            history[k].append(row[k])
        improved = val["acc"] > best
        best = max(best, val["acc"])
        if checkpoint_dir:
            state = dict(epoch=epoch, model=model, optimizer=optimizer, scheduler=scheduler, best_metric=best,
                         history=history, cfg=cfg)
            save_checkpoint(last_path, **state)
            if improved:
                save_checkpoint(best_path, **state)
        epoch_bar.set_postfix(train_loss=f"{row['train_loss']:.3f}", val_acc=f"{row['val_acc']:.3f}")
    return history


FINISHED = "finished.json"


def _plain(cfg):
    """cfg as it reads back from JSON, so a saved and a current cfg compare equal."""
    return json.loads(json.dumps(cfg, default=str))


def train_model(model, train_loader, val_loader, *, epochs, checkpoint_dir=None, cfg=None, resume=False,
                device="cpu", name="model", **fit_kwargs):
    """`fit`, then keep what a finished model needs: best.pt (weights) and finished.json (history); last.pt goes.

    last.pt, with the optimizer state, exists only while a model trains, so an interrupted run resumes exactly.
    With resume=True a model that finished earlier in checkpoint_dir is not trained again: its best weights are
    loaded into `model` and its history returned. A finished model cannot be extended to more epochs.
    """
    if checkpoint_dir is None:
        return fit(model, train_loader, val_loader, epochs=epochs, cfg=cfg, resume=resume, device=device, name=name,
                   **fit_kwargs)
    done = os.path.join(checkpoint_dir, FINISHED)
    if resume and os.path.isfile(done):
        with open(done, encoding="utf-8") as fh:
            record = json.load(fh)
        _check_resume_cfg(record.get("cfg"), _plain(cfg), done)
        if record["epochs"] < epochs:
            raise ValueError(f"[{name}] finished after {record['epochs']} epochs in {checkpoint_dir} and keeps no "
                             f"optimizer state, so it cannot be extended to epochs={epochs}. Train afresh: another "
                             "out_dir, or overwrite=True.")
        best = load_checkpoint(os.path.join(checkpoint_dir, "best.pt"), map_location=device)
        load_model_state(model, best["model"], os.path.join(checkpoint_dir, "best.pt"))
        model.to(device)
        print(f"[{name}] finished earlier ({record['epochs']} epochs, {done}): not trained again")
        return record["history"]
    history = fit(model, train_loader, val_loader, epochs=epochs, checkpoint_dir=checkpoint_dir, cfg=cfg,
                  resume=resume, device=device, name=name, **fit_kwargs)
    atomic_write_json(done, {"epochs": epochs, "history": history, "cfg": _plain(cfg)})
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(checkpoint_dir, "last.pt"))
    return history


def predict_logits(model, loader, device, amp=False, channels_last=False):
    """Concatenated logits for every batch of a loader whose items are (images, anything)."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for x, _ in loader:
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                outputs.append(model(x).float().cpu())
    return torch.cat(outputs)
