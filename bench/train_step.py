"""Training step: images/s of forward + backward + optimizer step for each notebook's model at its input size.

Each figure runs `lib.train.train_one_epoch` (the notebooks' loop) over one batch repeated, so it counts what `fit`
does per step; the settings of a model are timed in turn, round after round, so load changes hit them alike.
Rows: plain float32 eager (the baseline), each switch alone (bf16 autocast, channels_last, torch.compile) and the
defaults (`amp=None`, `channels_last=None`, `compile=None`: what lib.precision picks for
this device). On the CPU, compile is timed for the CIFAR model only (compiling a 224-px model takes minutes on a
small CPU); `--cpu-compile` times it for every model. FLOPs per image come from FlopCounterMode; the share of
peak uses the device's dense peak where it is known.

    python -m bench.train_step [--repeats 5] [--device cpu|cuda] [--cpu-compile]
"""
import argparse
import os
import time

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib import models, precision, train
from lib.utils import auto_flag

from .common import device_name, fmt, print_header, print_table

# on this project's 2-core CPU, the defaults' training step against fp32 eager (issue 12's targets)
TARGETS = {"CifarResNet 32/64/128": 1.8, "StrictTwoLayerNet": 1.6, "ResNet34": 1.6, "ResNet50+CBAM": 1.6}
# dense peak TFLOP/s by GPU name fragment: (float32 via TF32 tensor cores, bf16), from the vendors' datasheets
GPU_PEAKS = {"H100 SXM": (494.7, 989.4), "H100 80GB HBM3": (494.7, 989.4), "H200": (494.7, 989.4),
             "H100 PCIe": (378.0, 756.0), "H100 NVL": (417.5, 835.0), "A100": (156.0, 312.0), "L4": (60.0, 121.0)}


def notebook_models():
    """(notebook, model name, constructor, input size, batch size on CUDA, batch size on the CPU)."""
    return [
        ("01", "StrictTwoLayerNet", lambda: models.StrictTwoLayerNet(50), 224, 64, 8),
        ("01", "ResNet34", lambda: torchvision.models.resnet34(num_classes=50), 224, 64, 8),
        ("02", "ResNet50+CBAM", lambda: models.resnet50_cbam(100), 224, 16, 8),
        ("03/04", "CifarResNet 32/64/128", lambda: models.CifarResNet((32, 64, 128), (4, 4, 3), dropout=0.1), 32,
         128, 128),
    ]


def cpu_peak_tflops():
    """Nominal float32 peak of this CPU: cores x clock x FLOPs/cycle (2 FMA units of 8 (AVX2) or 16 (AVX-512)
    lanes); None when the clock or the vector width is unknown. An estimate, labelled as such."""
    try:
        with open("/proc/cpuinfo") as fh:
            info = fh.read()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")]
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    lanes = 16 if " avx512f" in flags else 8 if " avx2" in flags and " fma" in flags else None
    if not mhz or lanes is None:
        return None
    return os.cpu_count() * mhz[0] * 1e6 * 2 * 2 * lanes / 1e12


def peak_tflops(device, bf16):
    """Dense peak of the device for the row's precision, or None."""
    if torch.device(device).type == "cpu":
        return None if bf16 else cpu_peak_tflops()
    name = device_name(device)
    for fragment, (tf32, bf16_peak) in GPU_PEAKS.items():
        if fragment in name:
            return bf16_peak if bf16 else tf32
    return None


def training_flops(make_model, size, batch=2):
    """(forward FLOPs, forward+backward FLOPs) per image, counted by FlopCounterMode."""
    model = make_model()
    x, y = torch.randn(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
    with FlopCounterMode(display=False) as forward:
        model(x)
    with FlopCounterMode(display=False) as step:
        nn.functional.cross_entropy(model(x), y).backward()
    return forward.get_total_flops() / batch, step.get_total_flops() / batch


class RepeatedBatch:
    """A loader that yields one batch `steps` times: the step's cost without the input pipeline's."""

    def __init__(self, x, y, steps):
        self.x, self.y, self.steps = x, y, steps

    def __len__(self):
        return self.steps

    def __iter__(self):
        return iter([(self.x, self.y)] * self.steps)


def step_round(make_model, size, batch, device, *, amp=False, channels_last=False, compile=False):
    """A function that runs one timed round of training steps in the notebooks' own loop and returns its images/s."""
    torch.manual_seed(0)
    model = make_model().to(device, memory_format=precision.memory_format(channels_last))
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=precision.memory_format(
        channels_last))
    loader = RepeatedBatch(x, torch.randint(0, 10, (batch,), device=device), steps=2 if size <= 64 else 1)
    scaler = precision.grad_scaler(device, amp)

    def one_round(epoch=0):
        done = train.train_one_epoch(step_model, loader, optimizer, nn.CrossEntropyLoss(), device=device, amp=amp,
                                     scaler=scaler, scheduler=None, epoch=epoch, steps=len(loader), progress=False)
        return done["count"] / done["seconds"]
    for epoch in range(3 if compile else 1):  # warm-up: compilation, allocator, oneDNN's kernel choices
        one_round(epoch)
    return one_round


def interleaved_rates(rounds, repeats):
    """Median images/s of each round function, timed in turn (A, B, C, A, B, C, ...) so that a change in the
    machine's load during the run reaches every setting alike."""
    rates = {label: [] for label in rounds}
    for _ in range(repeats):
        for label, one_round in rounds.items():
            rates[label].append(one_round())
    return {label: sorted(r)[len(r) // 2] for label, r in rates.items()}


def variants_for(device, name, cpu_compile):
    """(label, settings) rows for one model: the baseline, each switch alone, and the device's defaults."""
    amp = precision.resolve_amp(None, device)
    defaults = {"amp": amp, "channels_last": precision.resolve_channels_last(None, device, amp),
                "compile": auto_flag(None, device)}
    rows = [("fp32 eager (baseline)", {}), ("bf16 autocast", {"amp": "bf16"}),
            ("channels_last", {"channels_last": True})]
    if device.type == "cuda" or cpu_compile or name.startswith("CifarResNet"):
        rows.append(("torch.compile", {"compile": True}))
    label = " + ".join([amp] + ["channels_last"] * defaults["channels_last"] + ["compile"] * defaults["compile"])
    rows.append((f"defaults ({label})", defaults))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cpu-compile", action="store_true",
                        help="also time torch.compile for the 224-px models on the CPU (minutes each)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print_header(f"training step: images/s of forward + backward + SGD step in lib.train's loop (median of "
                 f"{args.repeats} after warm-up)", device)
    rows, ratios = [], {}
    for notebook, name, make_model, size, gpu_batch, cpu_batch in notebook_models():
        batch = gpu_batch if device.type == "cuda" else cpu_batch
        forward_flops, step_flops = training_flops(make_model, size)
        started = time.perf_counter()
        variants = variants_for(device, name, args.cpu_compile)
        rounds = {label: step_round(make_model, size, batch, device, **settings) for label, settings in variants}
        rates = interleaved_rates(rounds, args.repeats)
        del rounds
        baseline = rates[variants[0][0]]
        for label, settings in variants:
            rate = rates[label]
            peak = peak_tflops(device, settings.get("amp") == "bf16")
            achieved = step_flops * rate / 1e12
            share = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
            if label.startswith("defaults"):
                ratios[name] = rate / baseline
            rows.append([notebook, name, f"{size} px", batch, label, fmt(rate, 1), f"{rate / baseline:.2f}x",
                         f"{forward_flops / 1e9:.2f}", f"{achieved:.3f}", share])
            print(f"  {name}, {label}: {rate:.1f} img/s", flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    print_table(["notebook", "model", "input", "batch", "settings", "img/s", "vs fp32 eager", "GFLOP/img fwd",
                 "TFLOP/s achieved", "% of peak"], rows)
    peak = cpu_peak_tflops()
    print("note: achieved = (forward + backward FLOPs per image) x img/s. " + (
        "fp32 rows are measured against the TF32 peak (cuDNN convolutions use TF32 by default)." if device.type ==
        "cuda" else f"CPU fp32 peak: nominal {peak:.3f} TFLOP/s (cores x clock x 2 FMA x vector lanes x 2), an "
        "estimate; no bf16 peak is claimed for the CPU." if peak else "CPU peak unknown."))
    parts = []
    for name, ratio in ratios.items():
        target = TARGETS.get(name) if device.type == "cpu" else None
        verdict = f" [target >= {target}x: {'met' if ratio >= target else 'NOT met'}]" if target else ""
        parts.append(f"{name} {ratio:.2f}x{verdict}")
    print(f"SUMMARY training step on {device.type}, defaults / fp32 eager: " + ", ".join(parts))
    return all(ratios[n] >= t for n, t in TARGETS.items()) if device.type == "cpu" else True


if __name__ == "__main__":
    main()
