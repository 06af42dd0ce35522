"""What the benchmarks share: the machine header, warm-up + median timing, tables, and generated data sets."""
import os
import pickle
import platform
import statistics
import time

import numpy as np
import torch
from torch.utils.data import Dataset

from lib import cifar
from lib.utils import cpu_model

cpu_name = cpu_model  # the CPU model name (lib.utils)


def device_name(device):
    """'NVIDIA H100 80GB HBM3' for a CUDA device, else the CPU's name."""
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def print_header(title, device="cpu"):
    """Print what the figures depend on: machine, device, versions, threads, load."""
    import torchvision
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"== {title}")
    print(f"machine: {platform.node()} | {platform.platform()} | CPU: {cpu_name()}, {os.cpu_count()} logical cores")
    print(f"device: {torch.device(device)} ({device_name(device)}) | torch {torch.__version__}, torchvision "
          f"{torchvision.__version__} | torch threads {torch.get_num_threads()} | load average {load}")


def sync(device):
    """Wait for queued GPU work so wall-clock times mean something."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(fn, repeats=5, warmup=1, device="cpu"):
    """Median wall-clock seconds of `fn()` over `repeats` runs after `warmup` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def print_table(columns, rows):
    """A markdown table (so it can be pasted into the README as it is)."""
    cells = [[str(c) for c in columns]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(cells[0]))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in cells[1:]:
        print(line(r))


def fmt(x, digits=0):
    """Thousands separators for rates, fixed decimals for ratios."""
    return f"{x:,.{digits}f}"


# ---------------------------------------------------------------- generated data

def _noise_field(rng, width, height):
    """Film-grain-like noise plus a mid-frequency texture, shared by all images (windows at random offsets)."""
    from PIL import Image
    texture = (rng.normal(0, 40, (height // 4, width // 4, 3)) + 128).clip(0, 255).astype(np.uint8)
    texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.BICUBIC), dtype=np.int16) - 128
    return (texture // 2 + rng.normal(0, 12, (height, width, 3))).astype(np.int16)


def _photo_like(rng, noise, width, height):
    """A 500 x 375-ish picture with smooth colour, shapes and grain: JPEG sizes and decode times like photos'."""
    from PIL import Image, ImageDraw, ImageFilter
    base = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(rng.integers(4, 9)):
        x0, y0 = int(rng.integers(-100, width)), int(rng.integers(-100, height))
        x1, y1 = x0 + int(rng.integers(40, 300)), y0 + int(rng.integers(40, 250))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    base = base.filter(ImageFilter.BoxBlur(1))
    y, x = rng.integers(0, noise.shape[0] - height), rng.integers(0, noise.shape[1] - width)
    pixels = np.asarray(base, dtype=np.int16) + noise[y:y + height, x:x + width]
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def make_jpeg_tree(root, classes=8, per_class=(40, 8), size=(500, 375), quality=90, seed=0):
    """ImageFolder tree root/{train,val}/<class>/*.JPEG of photo-sized JPEGs; returns the mean file size in KiB.

    One in four images is portrait (375 x 500), as in ImageNet, so the canvas's aspect handling is exercised.
    """
    rng = np.random.default_rng(seed)
    noise = _noise_field(rng, 2 * max(size), 2 * max(size))
    total, count = 0, 0
    for split, n in zip(("train", "val"), per_class):
        for c in range(classes):
            folder = os.path.join(root, split, f"n{c:08d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                w, h = size if i % 4 else size[::-1]
                path = os.path.join(folder, f"{split}_{c}_{i}.JPEG")
                _photo_like(rng, noise, w, h).save(path, "JPEG", quality=quality)
                total, count = total + os.path.getsize(path), count + 1
    return total / count / 1024


def random_cifar(n, seed=0):
    """n random CIFAR-shaped uint8 images (N x 3 x 32 x 32) and labels: the pipelines' cost ignores content."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), \
        torch.randint(0, 10, (n,), generator=g)


def write_cifar_batches(root, per_batch, seed=0):
    """The CIFAR-10 python batch format (5 data batches, test_batch, batches.meta) with random images."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = cifar.CIFAR_TRAIN_FILES + ["test_batch"]
    for k, name in enumerate(names):
        x, y = random_cifar(per_batch, seed + k)
        with open(os.path.join(folder, name), "wb") as fh:
            pickle.dump({"data": x.reshape(per_batch, -1).numpy(), "labels": y.tolist()}, fh)
    with open(os.path.join(folder, "batches.meta"), "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, fh)
    return root


class NaiveCIFAR(Dataset):
    """The student pipeline's dataset: torchvision.datasets.CIFAR10's per-item work (array -> PIL -> transform).

    torchvision's class itself refuses any files but the original download (MD5 check), so the generated batches
    go through this one, which does exactly what its __getitem__ does.
    """

    def __init__(self, images, labels, transform):
        self.data = images.permute(0, 2, 3, 1).numpy()  # N x 32 x 32 x 3, as torchvision keeps it
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        from PIL import Image
        return self.transform(Image.fromarray(self.data[index])), self.targets[index]


def naive_cifar_transform(train):
    """Notebook 03's augmentation as per-sample PIL transforms: crop with 4 px padding, flip, normalise."""
    from torchvision import transforms
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    return transforms.Compose(steps + [transforms.ToTensor(),
                                       transforms.Normalize(cifar.CIFAR10_MEAN, cifar.CIFAR10_STD)])
