"""End to end: seconds per epoch of notebook 03's model on the CIFAR-10 format, ours against the naive baseline.

Both read the same generated batches in the CIFAR python format and train notebook 03's model with `lib.train.loop`
and the notebook's optimiser. Ours: TensorBatchLoader (split resident on the device, augmented per batch) and the
notebook's defaults for precision, memory format and compile (lib.precision). Naive: the per-sample PIL pipeline in
a DataLoader with 2 worker processes, training in float32, channels-first, eager: what a first version does. A full
epoch takes minutes on a CPU, so each round times `steps` training batches and one validation pass, and the epoch
(45,000 training + 5,000 validation images) is extrapolated from those rates.

    python -m bench.end_to_end [--repeats 5] [--steps 3] [--device cpu|cuda]
"""
import argparse
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from lib import cifar, models, precision, train
from lib.utils import auto_flag

from .common import NaiveCIFAR, naive_cifar_transform, print_header, print_table, sync, write_cifar_batches

TRAIN_IMAGES, VAL_IMAGES, BATCH = 45_000, 5_000, 128
TARGET = 1.7  # issue 12's target on this project's 2-core CPU


def model_and_optimizer():
    """Notebook 03's model and optimiser with its defaults."""
    torch.manual_seed(0)
    model = models.CifarResNet((32, 64, 128), (4, 4, 3), dropout=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    return model, optimizer


def epoch_seconds(train_loader, val_loader, device, steps, repeats, amp, channels_last, compile):
    """Median over rounds of the extrapolated epoch time, plus the train and eval rates it came from."""
    model, optimizer = model_and_optimizer()
    results = []
    for r in range(repeats + 1):  # the first round warms up (and compiles, where compile is on)
        history = train.loop(model, train_loader, val_loader, epochs=1, optimizer=optimizer, device=device,
                            max_steps_per_epoch=steps, amp=amp, channels_last=channels_last, compile=compile,
                            progress=False)
        train_rate = history["images_per_s"][0]
        sync(device)
        started = time.perf_counter()
        val = train.evaluate(model, val_loader, device, amp=amp)
        sync(device)
        eval_rate = val["count"] / (time.perf_counter() - started)
        if r:
            results.append((TRAIN_IMAGES / train_rate + VAL_IMAGES / eval_rate, train_rate, eval_rate))
    return sorted(results)[len(results) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training batches of 128 timed per round")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    amp = precision.resolve_amp(None, device)
    channels_last = precision.resolve_channels_last(None, device, amp)
    compile = auto_flag(None, device)
    print_header(f"end to end: notebook 03 on the CIFAR-10 format (median of {args.repeats} rounds of "
                 f"{args.steps} training batches + a validation pass, after a warm-up round)", device)
    with tempfile.TemporaryDirectory(prefix="bench-cifar-") as tmp:
        x_train, y_train, _, _, _ = cifar.load_cifar10(write_cifar_batches(tmp, per_batch=2_000))
    x_train, y_train, x_val, y_val = cifar.split_train_val(x_train, y_train, 1_000, seed=0)
    ours = epoch_seconds(cifar.TensorBatchLoader(x_train, y_train, BATCH, train=True, device=device, seed=0,
                                                 channels_last=channels_last),
                         cifar.TensorBatchLoader(x_val, y_val, 500, train=False, device=device,
                                                 channels_last=channels_last),
                         device, args.steps, args.repeats, amp, channels_last, compile)
    pin = device.type == "cuda"
    settings = " + ".join([amp] + ["channels_last"] * channels_last + ["compile"] * compile)
    naive_train = DataLoader(NaiveCIFAR(x_train, y_train, naive_cifar_transform(True)), batch_size=BATCH,
                             shuffle=True, num_workers=2, pin_memory=pin, persistent_workers=True)
    naive_val = DataLoader(NaiveCIFAR(x_val, y_val, naive_cifar_transform(False)), batch_size=500, num_workers=2,
                           pin_memory=pin, persistent_workers=True)
    naive = epoch_seconds(naive_train, naive_val, device, args.steps, args.repeats, "fp32", False, False)
    rows = [[name, f"{s:,.0f}", f"{tr:,.1f}", f"{ev:,.0f}", f"{naive[0] / s:.2f}x"]
            for name, (s, tr, ev) in (("naive (PIL per sample, 2 workers, fp32 eager)", naive),
                                      (f"ours (TensorBatchLoader, {settings})", ours))]
    print_table(["pipeline", "s / epoch (extrapolated)", "train img/s", "eval img/s", "speed-up"], rows)
    print(f"batch {BATCH}, epoch = {TRAIN_IMAGES:,} train + {VAL_IMAGES:,} validation images")
    target = f" [target >= {TARGET}x: {'met' if naive[0] / ours[0] >= TARGET else 'NOT met'}]" if device.type == \
        "cpu" else ""
    print(f"SUMMARY end to end on {device.type}, notebook 03 seconds per epoch: naive fp32 {naive[0]:,.0f} s, ours "
          f"({settings}) {ours[0]:,.0f} s, {naive[0] / ours[0]:.2f}x faster{target}")


if __name__ == "__main__":
    main()
