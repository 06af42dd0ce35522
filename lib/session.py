"""A notebook's run object, and scoring a saved checkpoint.

`prepare(cfg)` reads the notebook contract's common parameters (device, amp, channels_last, compile_model, seed,
resume, overwrite, max_steps_per_epoch, out_dir, data_dir) into a `Session`, resolving the device and the precision
switches and seeding the RNGs, writing nothing. The Session is a `lib.run.Run`: `run.fit(model, train_loader,
val_loader, optimizer=..., scheduler=...)` trains with its switches. Once the data is found, `Session.start()` claims
`out_dir` (lock, resume/overwrite rules, cfg.json: `utils.start_run`). Every figure title goes through
`Session.title`, so none can forget to say whether it shows demo or real data.
"""
import os
from dataclasses import dataclass

import torch

from lib import precision, train, utils
from lib.run import Run


@dataclass(kw_only=True)
class Session(Run):
    """A Run that also knows its parameters, where it writes and on which data."""
    cfg: dict
    out_dir: str  # the parameter as given until start(), then the absolute folder start() claimed
    data_kind: str  # "demo" or "real"
    overwrite: bool = False
    started: bool = False

    def start(self):
        """Claim out_dir for this run (lock, no accidental overwrite, cfg.json); call it once the data is found."""
        self.out_dir = utils.start_run(self.cfg, self.out_dir, resume=self.resume, overwrite=self.overwrite)
        self.checkpoints = os.path.join(self.out_dir, "checkpoints")
        self.started = True
        print(self.describe())
        return self.out_dir

    def path(self, *parts):
        """A path under the claimed out_dir (nothing may be written before start())."""
        if not self.started:
            raise RuntimeError("Session.path before Session.start: nothing is written before the data is found")
        return os.path.join(self.out_dir, *parts)

    def title(self, text):
        """A figure title that says which data it shows: 'text (demo data)' or 'text (real data)'."""
        return f"{text} ({self.data_kind} data)"

    def write_results(self, study, *, epochs_run, headline, models, extra=None):
        """metrics.json (lib.results' schema) with this run's parameters, device and switches; returns what it wrote."""
        from lib import results
        written = results.StudyResults(study=study, data=self.data_kind, cfg=self.cfg, device=str(self.device),
                                       amp=self.amp, channels_last=self.channels_last, compile=self.compile,
                                       epochs_run=epochs_run, headline=headline, models=models, extra=extra or {})
        results.write(self.out_dir, written)
        return written

    def describe(self):
        """One line saying what the run chose: device, precision, memory format, compile, data."""
        return (f"device: {self.device}, precision: {self.amp}, channels_last: {self.channels_last}, "
                f"compile: {self.compile}, data: {self.data_kind}")


def prepare(cfg, resume_free=()):
    """Resolve cfg's device and precision switches (None: the device's best) and seed every RNG; writes nothing.

    `resume_free` names the notebook's own parameters a resumed run may change (those used only after training);
    the run's switches (train.RUN_SWITCHES) always may.
    """
    device = utils.resolve_device(cfg["device"])
    amp = precision.resolve_amp(cfg["amp"], device)
    channels_last = precision.resolve_channels_last(cfg["channels_last"], device, amp)
    compile_model = utils.auto_flag(cfg["compile_model"], device)
    if device.type == "cuda":  # fixed input shapes: cuDNN times its algorithms once per shape and keeps the fastest
        torch.backends.cudnn.benchmark = True
    utils.seed_everything(cfg["seed"])
    return Session(cfg=cfg, device=device, amp=amp, channels_last=channels_last, compile=compile_model,
                   resume=cfg["resume"], overwrite=cfg.get("overwrite", False),
                   max_steps_per_epoch=cfg.get("max_steps_per_epoch"), record=cfg,
                   resume_free=frozenset(resume_free), out_dir=cfg["out_dir"],
                   data_kind=utils.data_kind(utils.repo_path(cfg["data_dir"])))


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

