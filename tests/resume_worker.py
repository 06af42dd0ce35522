"""A small training run of notebook 03's pipeline that tests/test_train.py starts, kills and resumes.

`python tests/resume_worker.py OUT [--resume] [--pause-at EPOCH STEP] [--block-save-at EPOCH] [--start-when FILE]`,
or `run(OUT)` in-process.

It trains notebook 03's CifarResNet (narrow: 8/16/32 channels, one block per stage, dropout kept so the resumed
run must restore the RNG) on the demo CIFAR batches with the notebook's loaders, SGD and MultiStepLR, keeping
checkpoints in OUT/checkpoints, then writes the final weights and history to OUT/final.pt.
--pause-at stops before batch STEP of epoch EPOCH (0-based) and writes OUT/paused, so the test can SIGKILL it
mid-epoch; --block-save-at makes the save of epoch EPOCH's checkpoint write half the file, write OUT/blocked and
hang inside atomic_torch_save, so the test can SIGKILL it mid-save.
"""
import argparse
import io
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lib import cifar, files, models, train, utils  # noqa: E402

SEED, EPOCHS, BATCH, STEPS, VAL_SIZE = 0, 3, 32, 6, 200


class PausingLoader:
    """Wrap a loader; before batch `step` of epoch `epoch` write a marker and sleep until killed."""

    def __init__(self, loader, epoch, step, marker):
        self.loader, self.pause, self.marker, self.epoch = loader, (epoch, step), marker, 0

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.loader.set_epoch(epoch)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if (self.epoch, step) == self.pause:
                open(self.marker, "w").close()
                time.sleep(600)
            yield batch


def block_checkpoint_save(epoch, marker):
    """Make torch.save of the checkpoint for `epoch` write half its bytes, then hang (as if killed mid-write)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == epoch:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            # a file object from atomic_open, or a plain path if someone saved without it
            fh = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
            fh.write(buffer.getvalue()[: buffer.tell() // 2])
            fh.flush()
            open(marker, "w").close()
            time.sleep(600)
        return real_save(obj, f, *args, **kwargs)

    torch.save = save


def run(out, resume=False, pause_at=None, block_save_at=None):
    """Train (or resume) into out/checkpoints; return and save to out/final.pt the final weights and history."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same float summation order in every process
    try:
        utils.seed_everything(SEED)
        x_train, y_train, _, _, _ = cifar.load_cifar10(os.path.join(ROOT, "data", "demo", "cifar10"))
        x_train, y_train, x_val, y_val = cifar.split_train_val(x_train, y_train, VAL_SIZE, SEED)
        train_loader = cifar.TensorBatchLoader(x_train, y_train, BATCH, train=True, seed=SEED)
        val_loader = cifar.TensorBatchLoader(x_val, y_val, 100, train=False)
        if pause_at:
            train_loader = PausingLoader(train_loader, *pause_at, os.path.join(out, "paused"))
        if block_save_at is not None:
            block_checkpoint_save(block_save_at, os.path.join(out, "blocked"))
        model = models.CifarResNet((8, 16, 32), (1, 1, 1), dropout=0.1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.1)
        history = train.loop(model, train_loader, val_loader, epochs=EPOCHS, optimizer=optimizer,
                            scheduler=scheduler, checkpoint_dir=os.path.join(out, "checkpoints"), resume=resume,
                            max_steps_per_epoch=STEPS, progress=False, name="worker")
    finally:
        torch.set_num_threads(threads)
    final = {"model": model.state_dict(), "history": history}
    files.atomic_torch_save(final, os.path.join(out, "final.pt"))
    return final


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--pause-at", nargs=2, type=int, metavar=("EPOCH", "STEP"))
    parser.add_argument("--block-save-at", type=int, metavar="EPOCH")
    parser.add_argument("--start-when", metavar="FILE", help="import everything, then wait for FILE to appear")
    args = parser.parse_args()
    while args.start_when and not os.path.exists(args.start_when):
        time.sleep(0.02)  # started early so its imports overlap the previous run; training begins on the signal
    run(args.out, args.resume, args.pause_at, args.block_save_at)


if __name__ == "__main__":
    main()
