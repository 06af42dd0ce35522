"""A notebook run's set-up in one object, and scoring a saved checkpoint.

`prepare(cfg)` resolves the device and the precision switches and seeds the RNGs, writing nothing; once the data is
found, `Session.start()` claims `out_dir` (lock, resume/overwrite rules, cfg.json: `utils.start_run`). Every figure
title goes through `Session.title`, so none can forget to say whether it shows demo or real data.
"""
import os
from dataclasses import dataclass

import torch

from lib import precision, train, utils


@dataclass
class Session:
    """What a run resolved from its parameters: where it runs, how precisely, where it writes, on which data."""
    cfg: dict
    device: torch.device
    amp: str  # "bf16", "fp16" or "fp32"
    channels_last: bool
    compile: bool  # torch.compile the models
    out_dir: str  # the parameter as given until start(), then the absolute folder start() claimed
    data_kind: str  # "demo" or "real"
    started: bool = False

    def start(self):
        """Claim out_dir for this run (lock, no accidental overwrite, cfg.json); call it once the data is found."""
        self.out_dir = utils.start_run(self.cfg, self.out_dir, resume=self.cfg.get("resume", False),
                                       overwrite=self.cfg.get("overwrite", False))
        self.started = True
        return self.out_dir

    def path(self, *parts):
        """A path under the claimed out_dir (nothing may be written before start())."""
        if not self.started:
            raise RuntimeError("Session.path before Session.start: nothing is written before the data is found")
        return os.path.join(self.out_dir, *parts)

    def title(self, text):
        """A figure title that says which data it shows: 'text (demo data)' or 'text (real data)'."""
        return f"{text} ({self.data_kind} data)"

    def describe(self):
        """One line saying what the run chose: device, precision, memory format, compile, data."""
        return (f"device: {self.device}, precision: {self.amp}, channels_last: {self.channels_last}, "
                f"compile: {self.compile}, data: {self.data_kind}")


def prepare(cfg):
    """Resolve cfg's device and precision switches (None: the device's best) and seed every RNG; writes nothing."""
    device = utils.resolve_device(cfg["device"])
    amp = precision.resolve_amp(cfg["amp"], device)
    channels_last = precision.resolve_channels_last(cfg["channels_last"], device, amp)
    compile_model = utils.auto_flag(cfg["compile_model"], device)
    if device.type == "cuda":  # fixed input shapes: cuDNN times its algorithms once per shape and keeps the fastest
        torch.backends.cudnn.benchmark = True
    utils.seed_everything(cfg["seed"])
    return Session(cfg=cfg, device=device, amp=amp, channels_last=channels_last, compile=compile_model,
                   out_dir=cfg["out_dir"], data_kind=utils.data_kind(utils.repo_path(cfg["data_dir"])))


def score_checkpoint(model, path, loader, device, *, amp=None, return_predictions=True):
    """Load a checkpoint's weights into model and evaluate them: evaluate's dict plus their 1-based 'epoch'."""
    state = train.load_checkpoint(path, map_location=device)
    train.load_model_state(model, state["model"], os.fspath(path))
    scored = train.evaluate(model, loader, device, amp=amp, return_predictions=return_predictions)
    return {**scored, "epoch": state["epoch"] + 1}


def misclassified_sample(scored, loader, count, seed):
    """Indices and images of up to `count` wrongly predicted items, a seeded sample across the whole loader.

    `scored` holds evaluate's predictions and targets in the order the (unshuffled) loader yields its items; a
    sample across all of them, rather than the first few, avoids showing one class only when the set is sorted.
    """
    wrong = (scored["predictions"] != scored["targets"]).nonzero().flatten()
    wrong = wrong[torch.randperm(len(wrong), generator=torch.Generator().manual_seed(seed))[:count]]
    wrong = wrong.sort().values.tolist()
    images, seen = [], 0
    for x, _ in loader:
        images += [x[i - seen] for i in wrong if seen <= i < seen + len(x)]
        seen += len(x)
        if not wrong or seen > wrong[-1]:
            break
    return wrong, images

