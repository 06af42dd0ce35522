"""Input pipeline: images/s delivered to the model, ours against the naive student pipeline, per notebook.

Naive = torchvision dataset + per-sample PIL transforms + DataLoader with 0 or 2 worker processes. Ours = what the
notebooks use: CIFAR kept as one uint8 tensor and augmented per batch (TensorBatchLoader, no workers); image
folders decoded once into a memory-mapped cache and augmented per batch (CachedFolderLoader; with 0 workers the
iterating thread works on torch's threads, with 2 workers two single-threaded worker threads make whole batches,
the counterpart of the naive loader's processes). Same augmentations, same batch sizes.
Rates are steady-state: timing starts after the first batch.

    python -m bench.input_pipeline [--repeats 5] [--device cpu|cuda]
"""
import argparse
import itertools
import tempfile
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

from lib import cifar, folder_cache

from .common import (
    NaiveCIFAR,
    fmt,
    make_jpeg_tree,
    naive_cifar_transform,
    print_header,
    print_table,
    random_cifar,
    sync,
)

# what notebooks 01 and 02 feed their models (02's batch size and crop scale are its write-up's)
FOLDER_NOTEBOOKS = {
    "01 ImageNet-mini": dict(image_size=224, batch_size=64, crop_scale=(0.08, 1.0)),
    "02 100-class": dict(image_size=224, batch_size=16, crop_scale=(0.8, 1.0)),
}
CIFAR_BATCH = 128  # notebooks 03 and 04
TARGETS = {"cifar": 10.0, "folder": 3.0}


def endless(loader):
    """Batches of consecutive epochs, as training sees them."""
    for epoch in itertools.count():
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader


def images_per_second(make_batches, n_images, repeats, device):
    """Median steady-state rate: a fresh batch stream per repeat, its first batch untimed, then n_images timed."""
    rates = []
    for r in range(repeats + 1):  # the first round is the warm-up
        batches = make_batches()
        x, y = next(batches)
        x.to(device, non_blocking=True)
        sync(device)
        start, count = time.perf_counter(), 0
        while count < n_images:
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            count += len(y)
        sync(device)
        if r:
            rates.append(count / (time.perf_counter() - start))
        if hasattr(batches, "close"):
            batches.close()
    return sorted(rates)[len(rates) // 2]


def naive_stream(dataset, batch_size, workers, n_images, device):
    """A DataLoader as a student writes it (shuffled, pinned for CUDA), long enough for one timed round."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=n_images + 4 * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0)
    return lambda: iter(loader)


def bench_cifar(repeats, device):
    """Notebook 03/04's training stream: rows and ratios."""
    x, y = random_cifar(45_000)
    ours_loader = cifar.TensorBatchLoader(x, y, CIFAR_BATCH, train=True, device=device, seed=0)
    ours = images_per_second(lambda: endless(ours_loader), 45_000, repeats, device)
    rows, ratios = [], {}
    dataset = NaiveCIFAR(x, y, naive_cifar_transform(train=True))
    for workers, n in ((0, 2_560), (2, 5_120)):
        naive = images_per_second(naive_stream(dataset, CIFAR_BATCH, workers, n, device), n, repeats, device)
        ratios[workers] = ours / naive
        rows.append(["03/04 CIFAR-10", "train", CIFAR_BATCH, workers, fmt(naive), fmt(ours), f"{ours / naive:.1f}x"])
    return rows, ratios


def bench_folders(repeats, device, root, cache_dir):
    """Notebooks 01 and 02: cache build once, then train (0 and 2 workers) and eval streams."""
    rows, ratios = [], {}
    for name, nb in FOLDER_NOTEBOOKS.items():
        common = dict(image_size=nb["image_size"], batch_size=nb["batch_size"], crop_scale=nb["crop_scale"], seed=0)
        started = time.perf_counter()
        cached, _ = folder_cache.folder_loaders(root, cache_dir=cache_dir, device=device, progress=False, **common)
        built = time.perf_counter() - started
        if name == next(iter(FOLDER_NOTEBOOKS)):  # the others use the same cache (same image size)
            n_cached = sum(len(loader.dataset) for loader in cached.values())
            rows.append([name, "cache build, once (decode)", "", "threads", "", f"{fmt(n_cached / built)}", ""])
        naive, _ = folder_cache.folder_loaders(root, pipeline="naive", **common)
        bs = nb["batch_size"]
        for workers, n_naive in ((0, 256), (2, 512)):
            cached, _ = folder_cache.folder_loaders(root, cache_dir=cache_dir, device=device, num_workers=workers,
                                                    progress=False, **common)
            ours = images_per_second(lambda: endless(cached["train"]), 2_048, repeats, device)
            ref = images_per_second(naive_stream(naive["train"].dataset, bs, workers, n_naive, device), n_naive,
                                    repeats, device)
            ratios[name, workers] = ours / ref
            rows.append([name, f"train {nb['image_size']} px", bs, workers, fmt(ref), fmt(ours),
                         f"{ours / ref:.1f}x"])
        ours = images_per_second(lambda: endless(cached["val"]), 1_024, repeats, device)
        ref = images_per_second(naive_stream(naive["val"].dataset, bs, 2, 512, device), 512, repeats, device)
        rows.append([name, f"eval {nb['image_size']} px", bs, 2, fmt(ref), fmt(ours), f"{ours / ref:.1f}x"])
    return rows, ratios


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per figure (median); >= 5")
    parser.add_argument("--device", default="cpu", help="where batches are delivered: cpu or cuda")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print_header("input pipeline: images/s delivered to the model (median of "
                 f"{args.repeats} rounds after a warm-up)", device)
    with tempfile.TemporaryDirectory(prefix="bench-input-") as tmp:
        started = time.perf_counter()
        kib = make_jpeg_tree(f"{tmp}/jpegs")
        print(f"generated JPEGs: 8 classes x (40 train + 8 val), 500 x 375 (1 in 4 portrait), quality 90, "
              f"mean {kib:.0f} KiB, in {time.perf_counter() - started:.0f} s")
        cifar_rows, cifar_ratio = bench_cifar(args.repeats, device)
        folder_rows, folder = bench_folders(args.repeats, device, f"{tmp}/jpegs", f"{tmp}/cache")
    print_table(["notebook", "stream", "batch", "workers", "naive img/s", "ours img/s", "ours / naive"],
                cifar_rows + folder_rows)
    cifar_ok = min(cifar_ratio.values()) >= TARGETS["cifar"]
    folder_ok = min(folder.values()) >= TARGETS["folder"]
    parts = [f"CIFAR {cifar_ratio[0]:.1f}x (0 workers) / {cifar_ratio[2]:.1f}x (2 workers) "
             f"[target >= {TARGETS['cifar']:.0f}x: {'met' if cifar_ok else 'NOT met'}]"]
    for name in FOLDER_NOTEBOOKS:
        parts.append(f"{name.split()[0]} folders {folder[name, 0]:.1f}x / {folder[name, 2]:.1f}x")
    parts[-1] += f" [target >= {TARGETS['folder']:.0f}x: {'met' if folder_ok else 'NOT met'}]"
    print(f"SUMMARY input pipeline on {device.type}, ours/naive: " + "; ".join(parts))
    return cifar_ok and folder_ok


if __name__ == "__main__":
    main()
