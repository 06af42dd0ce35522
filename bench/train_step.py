"""Training step: images/s of forward + backward + optimizer step for each notebook's model at its input size.

Rows: plain float32 eager (the baseline) and our settings, i.e. what `lib.train.fit` does with the notebooks'
defaults (amp and compile on for CUDA, off for the CPU, so on the CPU "ours" is the baseline itself); on CUDA also
bf16 autocast, channels_last and torch.compile one at a time. FLOPs per image come from
torch.utils.flop_counter.FlopCounterMode; the share of peak uses the device's dense peak where it is known.

    python -m bench.train_step [--repeats 5] [--device cpu|cuda] [--cpu-compile]
"""
import argparse
import contextlib
import os
import time

import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib import models
from lib.train import autocast
from lib.utils import auto_flag

from .common import device_name, fmt, median_time, print_header, print_table, sync

# dense peak TFLOP/s by GPU name fragment: (float32 via TF32 tensor cores, bf16), from the vendors' datasheets
GPU_PEAKS = {"H100 SXM": (494.7, 989.4), "H100 80GB HBM3": (494.7, 989.4), "H200": (494.7, 989.4),
             "H100 PCIe": (378.0, 756.0), "H100 NVL": (417.5, 835.0), "A100": (156.0, 312.0), "L4": (60.0, 121.0)}


def notebook_models():
    """(notebook, model name, constructor, input size, batch size on CUDA, batch size on the CPU)."""
    return [
        ("01", "StrictTwoLayerNet", lambda: models.StrictTwoLayerNet(50), 224, 64, 4),
        ("01", "ResNet34", lambda: torchvision.models.resnet34(num_classes=50), 224, 64, 4),
        # study 02's CBAM modules add 0.4% of ResNet50's parameters; lib has no ResNet50+CBAM on this branch
        ("02", "ResNet50 (100 classes)", lambda: torchvision.models.resnet50(num_classes=100), 224, 16, 4),
        ("03/04", "CifarResNet 32/64/128", lambda: models.CifarResNet((32, 64, 128), (4, 4, 3), dropout=0.1), 32,
         128, 32),
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


def step_rate(make_model, size, batch, device, repeats, *, amp=False, channels_last=False, compile=False):
    """Images/s of one SGD training step (median of repeats), as `fit` runs it."""
    torch.manual_seed(0)
    model = make_model().to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    step_model = torch.compile(model) if compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,), device=device)

    def step():
        with autocast(device, amp):
            loss = nn.functional.cross_entropy(step_model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = median_time(step, repeats, warmup=3 if compile else 1, device=device)
    return batch / seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cpu-compile", action="store_true",
                        help="also time torch.compile on the CPU (minutes of compilation per model)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    print_header(f"training step: images/s of forward + backward + SGD step (median of {args.repeats} after "
                 "warm-up)", device)
    ours = {"amp": auto_flag(None, device), "compile": auto_flag(None, device), "channels_last": False}
    variants = [("fp32 eager (baseline)", {})]
    if cuda:
        variants += [("bf16 autocast", {"amp": True}), ("bf16 + channels_last", {"amp": True, "channels_last": True}),
                     ("bf16 + torch.compile = ours", ours),
                     ("bf16 + channels_last + compile", {"amp": True, "channels_last": True, "compile": True})]
    elif args.cpu_compile:
        variants += [("fp32 + torch.compile", {"compile": True})]
    if not cuda:
        variants += [("fp32 + channels_last", {"channels_last": True})]
    rows, ratios = [], {}
    for notebook, name, make_model, size, gpu_batch, cpu_batch in notebook_models():
        batch = gpu_batch if cuda else cpu_batch
        forward_flops, step_flops = training_flops(make_model, size)
        baseline = None
        for label, settings in variants:
            started = time.perf_counter()
            rate = step_rate(make_model, size, batch, device, args.repeats, **settings)
            baseline = baseline or rate
            peak = peak_tflops(device, settings.get("amp", False))
            achieved = step_flops * rate / 1e12
            share = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
            if settings == ours or (not cuda and not settings):
                ratios[name] = rate / baseline
            rows.append([notebook, name, f"{size} px", batch, label, fmt(rate, 1), f"{rate / baseline:.2f}x",
                         f"{forward_flops / 1e9:.2f}", f"{achieved:.3f}", share])
            print(f"  {name}, {label}: {rate:.1f} img/s ({time.perf_counter() - started:.0f} s)", flush=True)
    cpu_note = ""
    if not cuda:
        peak = cpu_peak_tflops()
        cpu_note = (f" CPU peak used for the share: nominal {peak:.3f} TFLOP/s fp32 (cores x clock x 2 FMA x "
                    "vector lanes x 2), an estimate" if peak else " CPU peak unknown")
    print_table(["notebook", "model", "input", "batch", "settings", "img/s", "vs fp32 eager", "GFLOP/img fwd",
                 "TFLOP/s achieved", "% of peak"], rows)
    print(f"note: achieved = (forward + backward FLOPs per image) x img/s.{cpu_note}")
    if cuda:
        print("note: fp32 rows are measured against the TF32 peak (cuDNN convolutions use TF32 by default).")
    summary = ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items())
    if cuda:
        print(f"SUMMARY training step on cuda, ours (bf16 autocast + torch.compile) / fp32 eager: {summary}")
    else:
        others = "; ".join(f"{label}: " + ", ".join(f"{r[6]}" for r in rows if r[4] == label)
                           for label, settings in variants if settings)
        print(f"SUMMARY training step on cpu, ours = fp32 eager (amp and compile are off on the CPU), so 1.00x for "
              f"{', '.join(ratios)}; other settings vs fp32 eager: {others}")


if __name__ == "__main__":
    main()
