"""Host time per training batch of the folder pipeline (notebooks 01 and 02) as a GPU machine's CPU makes it.

On a GPU the folder loader makes whole batches on CPU worker threads into pinned memory while the GPU trains, so what
limits a step is the host's time per batch. Measured here: core-milliseconds per batch of 64 at 224 px with one
worker thread (its torch kernels on one core), then the wall time per batch with this machine's cores as workers,
whose ratio gives the scaling efficiency. The extrapolation to a 16-core GPU machine assumes 15 worker threads (one
core left to the training loop) at that measured efficiency: core-ms / (15 x efficiency). The baseline, run in the
same process: the naive pipeline (torchvision ImageFolder, per-image PIL transforms) on one worker, per batch.

    python -m bench.host_batch [--repeats 5] [--batches 12]
"""
import argparse
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from lib import folder_cache

from .common import make_jpeg_tree, print_header

IMAGE_SIZE, BATCH = 224, 64
TARGET_MS, GPU_MACHINE_CORES = 4.0, 16


def ms_per_batch(loader, batches, repeats):
    """Median wall milliseconds per batch over `batches` consecutive batches, after one untimed batch."""
    times = []
    for r in range(repeats + 1):
        loader.set_epoch(r) if hasattr(loader, "set_epoch") else None
        stream = iter(loader)
        next(stream)
        started = time.perf_counter()
        for _ in range(batches):
            next(stream)
        if r:
            times.append((time.perf_counter() - started) * 1000 / batches)
        del stream
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per round")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    print_header(f"folder pipeline: host time per training batch ({BATCH} images, {IMAGE_SIZE} px)")
    with tempfile.TemporaryDirectory(prefix="bench-host-") as tmp:
        make_jpeg_tree(f"{tmp}/jpegs", classes=8, per_class=(120, 4))  # 960 photos: enough for 15 batches
        common = dict(image_size=IMAGE_SIZE, batch_size=BATCH, cache_dir=f"{tmp}/cache", progress=False,
                      channels_last=True)
        one, _ = folder_cache.folder_loaders(f"{tmp}/jpegs", num_workers=1, **common)
        core_ms = ms_per_batch(one["train"], args.batches, args.repeats)
        many, _ = folder_cache.folder_loaders(f"{tmp}/jpegs", num_workers=cores, **common)
        wall_ms = ms_per_batch(many["train"], args.batches, args.repeats)
        naive, _ = folder_cache.folder_loaders(f"{tmp}/jpegs", pipeline="naive", **common)
        dataset = naive["train"].dataset
        naive_loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=1, persistent_workers=True)
        naive_ms = ms_per_batch(naive_loader, max(3, args.batches // 4), args.repeats)
    efficiency = min(1.0, core_ms / (cores * wall_ms))
    workers = GPU_MACHINE_CORES - 1
    projected = core_ms / (workers * efficiency)
    print(f"1 worker thread: {core_ms:.1f} ms per batch (core-ms) | {cores} worker threads: {wall_ms:.1f} ms per batch "
          f"(scaling efficiency {efficiency:.0%}) | naive pipeline, 1 worker: {naive_ms:.1f} ms per batch")
    met = projected <= TARGET_MS
    print(f"SUMMARY folder host time per batch ({BATCH} x {IMAGE_SIZE} px): {core_ms:.1f} core-ms, "
          f"{core_ms / BATCH:.2f} per image; {naive_ms / core_ms:.1f}x less than the naive pipeline's per batch; "
          f"extrapolated to "
          f"{GPU_MACHINE_CORES} cores ({workers} workers at {efficiency:.0%} efficiency, measured 1 -> {cores} here): "
          f"{projected:.1f} ms [target <= {TARGET_MS:.0f} ms: {'met' if met else 'NOT met'}] "
          f"(torch {torch.__version__}, {cores} cores here)")
    return met


if __name__ == "__main__":
    main()
