"""The run object: the switches of a run (where and how precisely it trains, resume, step limit, checkpoints) and
its one training entry, `Run.fit(model, train_loader, val_loader, optimizer=..., scheduler=...)`.

`fit` trains with lib.train's engine (restore, train one epoch, evaluate, save), keeps last.pt while a model trains
and best.pt plus finished.json once it finished, and with `resume` continues where an interrupted run stopped or
loads a finished model instead of training it again. A resume compares the run's `record` (the parameters, as they
resolve) with the checkpoint's, except the names in `resume_free`: those a resumed run may change.
"""
import os
from dataclasses import dataclass, field

import torch

from . import train


@dataclass(kw_only=True)
class Run:
    """The switches every training call shares; the study's model, data, optimizer and schedule are passed to fit."""
    device: torch.device
    amp: str  # "bf16", "fp16" or "fp32"
    channels_last: bool
    compile: bool  # torch.compile the models
    resume: bool = False  # continue from the checkpoints, or load a model that finished
    max_steps_per_epoch: int | None = None  # None: whole epochs
    checkpoints: str | None = None  # folder of last.pt, best.pt, finished.json; None: keep none
    progress: bool = True  # per-batch bar and one line per epoch
    record: dict | None = None  # saved with every checkpoint and compared on resume
    resume_free: frozenset = field(default_factory=frozenset)  # names in record a resumed run may change

    def fit(self, model, train_loader, val_loader, *, optimizer, scheduler=None, loss_fn=None, epochs, name="model",
            subfolder=None, on_epoch=None):
        """Train `model` for `epochs` (each followed by validation); return the per-epoch history.

        Checkpoints go to `checkpoints/subfolder` (one folder per model where a run trains several).
        """
        folder = self.checkpoints and (os.path.join(self.checkpoints, subfolder) if subfolder else self.checkpoints)
        free = train.RUN_SWITCHES | set(self.resume_free)
        if folder and self.resume and train.is_finished(folder):
            return train.load_finished(folder, model, epochs=epochs, record=self.record, free_keys=free,
                                       device=self.device, name=name)
        history = train.loop(
            model, train_loader, val_loader, epochs=epochs, optimizer=optimizer, loss_fn=loss_fn, scheduler=scheduler,
            device=self.device, checkpoint_dir=folder, cfg=self.record, free_keys=free, resume=self.resume,
            max_steps_per_epoch=self.max_steps_per_epoch, amp=self.amp, channels_last=self.channels_last,
            compile=self.compile, progress=self.progress, name=name, on_epoch=on_epoch)
        if folder:
            train.mark_finished(folder, epochs, history, self.record)
        return history
