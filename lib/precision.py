"""Precision and memory format per device: what `amp=None` and `channels_last=None` mean on this machine.

A precision is one of "fp32", "bf16" or "fp16". bfloat16 keeps float32's range, so it needs no loss scaling; float16
does (`grad_scaler`), and is the choice only on GPUs without native bfloat16 (before Ampere: T4, V100).
On CPUs, bfloat16 autocast and channels_last were measured faster only together and only where the CPU computes
bfloat16 natively (AVX-512 BF16 or AMX); elsewhere the CPU stays in float32, channels-first (docs/performance.md).
"""
import contextlib

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16():
    """True when torch says this CPU has bfloat16 arithmetic in hardware (AVX-512 BF16 or AMX tiles)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cuda_has_native_bf16(device):
    """True when the CUDA device computes bfloat16 natively (compute capability 8.0, Ampere, and newer)."""
    return torch.cuda.get_device_capability(torch.device(device))[0] >= 8


def auto_precision(device):
    """What `amp=None` picks: bf16 where the device has it natively, fp16 on older GPUs, fp32 elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if cuda_has_native_bf16(device) else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def resolve_amp(amp, device):
    """Turn the `amp` parameter (None or True: auto, False, "fp32", "bf16", "fp16") into a precision name."""
    if amp is None or amp is True:
        return auto_precision(device)
    if amp is False:
        return "fp32"
    if amp not in PRECISIONS:
        raise ValueError(f"amp={amp!r} is not a precision: use None (the device's best), False (float32), "
                         "'bf16' or 'fp16'.")
    return amp


def resolve_channels_last(channels_last, device, precision):
    """Turn the `channels_last` parameter into a bool: None means on for CUDA, and on CPUs that run bfloat16."""
    if channels_last is not None:
        return bool(channels_last)
    device = torch.device(device)
    return device.type == "cuda" or (device.type == "cpu" and precision == "bf16")


def autocast(device, precision):
    """The autocast context for a precision name; float32 runs without one (and stay bit-exact)."""
    precision = resolve_amp(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(device, precision):
    """A GradScaler for float16 (small gradients would flush to zero without it); disabled, a no-op, otherwise."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=resolve_amp(precision, device) == "fp16")


def memory_format(channels_last):
    """The torch memory format for the channels_last switch."""
    return torch.channels_last if channels_last else torch.contiguous_format
