"""What lib.train checks before it continues a checkpoint: every field resume needs, and the same schedule."""
import math

import torch


def _is_count(value):
    """True for an int (not a bool) >= 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_resumable(ckpt, path, keys, history_keys):
    """Fail naming the file and the field if last.pt lacks what resume needs or holds it in the wrong type or range."""
    def bad(field, found, wanted):
        raise ValueError(f"{path}: field {field!r} is {found!r:.80}, it should be {wanted}. The checkpoint is damaged "
                         "or not written by this project's fit: delete it, or pass resume=False to start over.")
    if not isinstance(ckpt, dict):
        bad("<top level>", type(ckpt).__name__, "a mapping of the checkpoint's fields")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        bad(missing[0], "<missing>", f"present (a resumable checkpoint holds {', '.join(keys)})")
    if not _is_count(ckpt["epoch"]):
        bad("epoch", ckpt["epoch"], "a whole number >= 0")
    best = ckpt["best_metric"]
    if not isinstance(best, (int, float)) or isinstance(best, bool) or not (0 <= best <= 1 or best == -math.inf):
        bad("best_metric", best, "a validation accuracy in [0, 1]")
    history = ckpt["history"]
    if not isinstance(history, dict) or any(not isinstance(history.get(k), list) for k in history_keys):
        bad("history", history, f"a mapping of {', '.join(history_keys)} to lists")
    if any(len(history[k]) != ckpt["epoch"] + 1 for k in history_keys):
        bad("history", {k: len(history[k]) for k in history_keys}, f"{ckpt['epoch'] + 1} entries per list (epoch "
            f"{ckpt['epoch']} is the checkpoint's)")
    for field in ("optimizer", "rng"):
        if not isinstance(ckpt[field], dict):
            bad(field, type(ckpt[field]).__name__, "a mapping (torch's state_dict)")
    if not isinstance(ckpt["rng"].get("cpu"), torch.Tensor):
        bad("rng.cpu", ckpt["rng"].get("cpu"), "torch's RNG state tensor")


# what a scheduler's state records of its progress; everything else in it is the schedule itself
SCHEDULE_PROGRESS = {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial", "T_cur",
                     "T_i", "best", "num_bad_epochs", "cooldown_counter"}


def check_schedule(scheduler, saved, saved_cfg, cfg, path, free_keys):
    """Refuse to continue a checkpoint whose learning-rate schedule differs from the one this run builds.

    A schedule whose shape depends on the run's length (cosine's T_max, one-cycle's total_steps) changes with
    `epochs`: the epochs already trained followed the old one, so no continuation equals a fresh run with the new
    settings. A schedule that does not (MultiStepLR's milestones, warm restarts) lets a run grow longer.
    """
    if scheduler is None or not isinstance(saved, dict):
        return
    fresh = scheduler.state_dict()
    changed = sorted(k for k in set(fresh) | set(saved)
                     if k not in SCHEDULE_PROGRESS and fresh.get(k) != saved.get(k))
    if changed:
        given = {k: (saved_cfg.get(k), cfg.get(k)) for k in free_keys
                 if isinstance(saved_cfg, dict) and isinstance(cfg, dict) and saved_cfg.get(k) != cfg.get(k)
                 and k not in ("resume", "out_dir")}
        raise ValueError(f"{path}: the learning-rate schedule differs from the one this run builds ("
                         + ", ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {fresh.get(k)!r} now" for k in changed)
                         + (f"; changed since: {', '.join(f'{k} {a!r} -> {b!r}' for k, (a, b) in given.items())}"
                            if given else "") + "). The epochs trained so far followed the old schedule, so "
                         "continuing would not be the run these settings describe. Resume with the checkpoint's "
                         "settings, or start over: resume=False with another out_dir, or overwrite=True.")
