"""Small, deterministic, learnable demo datasets in the real on-disk formats.

``python -m lib.demo`` writes stand-ins for CIFAR-10 (the python batches plus the
course's Kaggle unlabeled pickle), ImageNet-mini and the hw1 100-class set under
``data/demo/``. The files use exactly the layouts of the real data, so notebooks and
tests exercise the real loaders without any download.

Every class is a distinct (shape, colour, background texture) combination; each
image gets a random position, scale, rotation, brightness and pixel noise, so a
small CNN learns the classes quickly but cannot just memorise pixels.
"""
import argparse
import csv
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from . import utils
from .demo_images import class_styles, render_batch, render_image
from .progress import tqdm
from .utils import DEMO_DATA, in_demo_data, repo_root

# Bump when the rendering or a file layout changes, so existing demo folders are rewritten.
FORMAT_VERSION = 2
MARKER = ".complete"
# hw1-10: notebook 02's demo profile; a ResNet50 without ImageNet weights learns 10 classes in CPU minutes, not 100
DATASETS = ("cifar10", "imagenet-mini", "hw1", "hw1-10")

CIFAR_LABELS = ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck")
CIFAR_TRAIN_BATCHES = 5
CIFAR_SIZE = 32

JPEG_QUALITY = 90
WNID_STEP = 7919  # a prime, so the fake WordNet ids look irregular
MINI_WNID_BASE = 1440764
HW1_WNID_BASE = 1443537
# Style offsets keep the default datasets from sharing class looks (CIFAR's offset must
# stay 0: the ten CIFAR classes then get the ten most distinct colours).
CIFAR_STYLE_OFFSET = 0
HW1_STYLE_OFFSET = 100
MINI_STYLE_OFFSET = 200

DEFAULT_SIZES = {
    "cifar_per_batch": 1000, "cifar_test": 1000, "cifar_unlabeled": 500,
    "mini_classes": 50, "mini_train": 20, "mini_val": 6, "mini_size": 64,
    "hw1_classes": 100, "hw1_train": 12, "hw1_val": 4, "hw1_test": 200, "hw1_size": 64,
    "hw1_10_train": 40, "hw1_10_val": 10, "hw1_10_test": 100,
}


def wnids(n_classes, base):
    """Deterministic 9-character WordNet-like ids whose sorted order is the class order."""
    names = ["n%08d" % (base + WNID_STEP * i) for i in range(n_classes)]
    assert names == sorted(names) and all(len(n) == 9 for n in names)
    return names


def balanced_labels(n, n_classes, rng):
    """Shuffled labels in which every class occurs ``n // n_classes`` or one more times."""
    return rng.permutation(np.arange(n) % n_classes)


# ----------------------------------------------------------------------------- file formats

class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that stores ``bytes`` as Python-2 ``str``, like the original CIFAR files."""
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + n.to_bytes(4, "little") + obj)
        self.memoize(obj)
    dispatch[bytes] = _save_py2_str


def dump_py2(obj, path):
    """Pickle ``obj`` to ``path`` the way Python 2 wrote the CIFAR-10 batches."""
    with open(path, "wb") as fh:
        _Py2Pickler(fh, protocol=2).dump(obj)


def cifar_rows(images):
    """Flatten HWC images to CIFAR rows: the R plane (1024 bytes), then G, then B."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def write_csv(path, header, rows):
    """Write a small CSV with Unix line endings, so the bytes do not depend on the platform."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def save_jpeg(array, path):
    """Save a uint8 HWC array as a baseline JPEG with fixed settings (no metadata)."""
    Image.fromarray(array, mode="RGB").save(path, format="JPEG", quality=JPEG_QUALITY)


# ----------------------------------------------------------------------------- atomic folders

def read_marker(root):
    """Return the arguments recorded in ``root/.complete``, or None if absent or unreadable."""
    try:
        return json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def materialize(root, params, force, fill):
    """Build ``root`` with ``fill(tmp_dir)`` unless its marker already matches ``params``.

    The data is written to a hidden sibling folder that only gets the marker and its
    final name once complete, so an interrupted run never looks like a finished one.
    """
    root = Path(root)
    params = json.loads(json.dumps(params))  # normalise (tuples -> lists) to compare with JSON
    if not force and read_marker(root) == params:
        print(f"{root}: up to date")
        return root
    if root.exists() and read_marker(root) is None and (not root.is_dir() or any(root.iterdir())):
        # not a folder lib.demo wrote (no marker): real data, say, under a mistaken --out; replacing it would lose it
        raise FileExistsError(f"{root} holds files lib.demo did not write (no {MARKER} in it); nothing was written. "
                              "Choose another --out (the default is data/demo), or move that folder away yourself.")
    tmp = root.with_name(f".{root.name}.partial")
    old = root.with_name(f".{root.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    (tmp / MARKER).write_text(json.dumps(params, sort_keys=True, indent=2) + "\n")
    # Move the old folder aside first so the final name only ever points at a whole dataset.
    if root.exists():
        root.rename(old)
    tmp.rename(root)
    shutil.rmtree(old, ignore_errors=True)
    return root


# ----------------------------------------------------------------------------- datasets

def write_cifar10(out_dir, per_batch=1000, n_test=1000, n_unlabeled=500, seed=0, force=False):
    """Write CIFAR-10 python batches and the Kaggle-style unlabeled pickle; return ``out_dir``."""
    params = {"dataset": "cifar10", "version": FORMAT_VERSION, "per_batch": per_batch,
              "n_test": n_test, "n_unlabeled": n_unlabeled, "seed": seed}
    styles = class_styles(len(CIFAR_LABELS), CIFAR_STYLE_OFFSET)
    n_train = CIFAR_TRAIN_BATCHES * per_batch

    def batch_dict(label, images, labels, first_index):
        # Same key order and value types as the original files.
        return {b"batch_label": label.encode(),
                b"labels": [int(c) for c in labels],
                b"data": cifar_rows(images),
                b"filenames": [f"{CIFAR_LABELS[c]}_s_{first_index + i:06d}.png".encode()
                               for i, c in enumerate(labels)]}

    def fill(tmp):
        batches = tmp / "cifar-10-batches-py"
        batches.mkdir()
        total = n_train + n_test + n_unlabeled
        with tqdm(total=total, desc="cifar10", unit="img") as pbar:
            # One generator per split, so changing one split's size leaves the others unchanged.
            rng = np.random.default_rng([seed, 0])
            labels = balanced_labels(n_train, len(CIFAR_LABELS), rng)
            for b in range(CIFAR_TRAIN_BATCHES):
                part = labels[b * per_batch:(b + 1) * per_batch]
                images = render_batch(part, styles, CIFAR_SIZE, rng, pbar)
                dump_py2(batch_dict(f"training batch {b + 1} of {CIFAR_TRAIN_BATCHES}",
                                    images, part, b * per_batch),
                         batches / f"data_batch_{b + 1}")
            rng = np.random.default_rng([seed, 1])
            labels = balanced_labels(n_test, len(CIFAR_LABELS), rng)
            images = render_batch(labels, styles, CIFAR_SIZE, rng, pbar)
            dump_py2(batch_dict("testing batch 1 of 1", images, labels, n_train),
                     batches / "test_batch")
            dump_py2({b"label_names": [name.encode() for name in CIFAR_LABELS],
                      b"num_cases_per_batch": per_batch,
                      b"num_vis": CIFAR_SIZE * CIFAR_SIZE * 3},
                     batches / "batches.meta")
            rng = np.random.default_rng([seed, 2])
            labels = rng.integers(0, len(CIFAR_LABELS), n_unlabeled)
            images = render_batch(labels, styles, CIFAR_SIZE, rng, pbar)
            with open(tmp / "cifar_test_nolabels.pkl", "wb") as fh:
                pickle.dump({b"data": images, b"ids": np.arange(n_unlabeled, dtype=np.int64)},
                            fh, protocol=4)
            # The real Kaggle set ships no labels; the demo does, so tests can score a submission.
            write_csv(tmp / "cifar_test_nolabels_labels.csv", ["ID", "Labels"],
                      [(i, int(c)) for i, c in enumerate(labels)])

    return materialize(out_dir, params, force, fill)


def write_image_folder_set(root, class_names, styles, counts, size, seed, filename, pbar=None):
    """Write ``counts[split]`` JPEGs per class into ``root/<split>/<class>/``; return the split folders.

    ``filename(class_name, k)`` names the k-th image of a class; k runs on across the
    splits so that no file name repeats between train and val.
    """
    root = Path(root)
    first = 0
    folders = []
    for split_id, (split, n_per_class) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, split_id])
        for name, style in zip(class_names, styles):
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(first, first + n_per_class):
                save_jpeg(render_image(style, size, rng), folder / filename(name, k))
                if pbar is not None:
                    pbar.update(1)
        first += n_per_class
        folders.append(root / split)
    return folders


def write_imagenet_mini(out_dir, n_classes=50, n_train=20, n_val=6, size=64, seed=0, force=False):
    """Write an ImageFolder-style ImageNet-mini (train/val, WordNet-like ids); return ``out_dir``."""
    params = {"dataset": "imagenet-mini", "version": FORMAT_VERSION, "n_classes": n_classes,
              "n_train": n_train, "n_val": n_val, "size": size, "seed": seed}
    names = wnids(n_classes, MINI_WNID_BASE)
    styles = class_styles(n_classes, MINI_STYLE_OFFSET)

    def fill(tmp):
        with tqdm(total=n_classes * (n_train + n_val), desc="imagenet-mini", unit="img") as pbar:
            write_image_folder_set(tmp, names, styles, {"train": n_train, "val": n_val}, size,
                                   seed, lambda wnid, k: f"{wnid}_{k}.JPEG", pbar)

    return materialize(out_dir, params, force, fill)


def write_hw1(out_dir, n_classes=100, n_train=12, n_val=4, n_test=200, size=64, seed=0,
              force=False):
    """Write the hw1 100-class layout (train/val folders, flat test/ + labels); return ``out_dir``."""
    params = {"dataset": "hw1", "version": FORMAT_VERSION, "n_classes": n_classes,
              "n_train": n_train, "n_val": n_val, "n_test": n_test, "size": size, "seed": seed}
    names = wnids(n_classes, HW1_WNID_BASE)
    styles = class_styles(n_classes, HW1_STYLE_OFFSET)

    def fill(tmp):
        total = n_classes * (n_train + n_val) + n_test
        with tqdm(total=total, desc="hw1", unit="img") as pbar:
            write_image_folder_set(tmp, names, styles, {"train": n_train, "val": n_val}, size,
                                   seed, lambda wnid, k: f"{wnid}{k:08d}.jpg", pbar)
            test = tmp / "test"
            test.mkdir()
            # Split id 2 continues the train (0) / val (1) numbering of the generators.
            rng = np.random.default_rng([seed, 2])
            labels = rng.integers(0, n_classes, n_test)
            rows = []
            for i, c in enumerate(labels):
                name = f"{i:05d}.jpg"
                save_jpeg(render_image(styles[c], size, rng), test / name)
                rows.append((name, names[c]))
                pbar.update(1)
            # the real set's test_labels.csv names the class folder (its wnid), not an index
            write_csv(tmp / "test_labels.csv", ["image_name", "label"], rows)

    return materialize(out_dir, params, force, fill)


def write_all(out="data/demo", only=None, force=False, seed=0, **sizes):
    """Write the selected demo datasets (all by default) under ``out``; return {name: folder}."""
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise TypeError(f"unknown size arguments: {sorted(unknown)}")
    s = {**DEFAULT_SIZES, **sizes}
    only = list(DATASETS) if not only else list(dict.fromkeys(only))
    bad = set(only) - set(DATASETS)
    if bad:
        raise ValueError(f"unknown datasets {sorted(bad)}; choose from {DATASETS}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writers = {
        "cifar10": lambda: write_cifar10(out / "cifar10", s["cifar_per_batch"], s["cifar_test"],
                                         s["cifar_unlabeled"], seed, force),
        "imagenet-mini": lambda: write_imagenet_mini(out / "imagenet-mini", s["mini_classes"],
                                                     s["mini_train"], s["mini_val"],
                                                     s["mini_size"], seed, force),
        "hw1": lambda: write_hw1(out / "hw1", s["hw1_classes"], s["hw1_train"], s["hw1_val"],
                                 s["hw1_test"], s["hw1_size"], seed, force),
        "hw1-10": lambda: write_hw1(out / "hw1-10", 10, s["hw1_10_train"], s["hw1_10_val"],
                                    s["hw1_10_test"], s["hw1_size"], seed, force),
    }
    return {name: writers[name]() for name in DATASETS if name in only}


# ----------------------------------------------------------------------------- CLI

def parse_args(argv=None):
    """Parse the command line of ``python -m lib.demo``."""
    p = argparse.ArgumentParser(prog="python -m lib.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "data" / "demo"),
                   help="root folder of the demo datasets (default: data/demo under the repository root)")
    p.add_argument("--only", action="append", choices=DATASETS,
                   help="dataset to write (repeatable; default: all)")
    p.add_argument("--force", action="store_true", help="rewrite even if up to date")
    p.add_argument("--seed", type=int, default=0, help="base random seed")
    for key, default in DEFAULT_SIZES.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=int, default=default,
                       metavar="N", help=f"default: {default}")
    return p.parse_args(argv)


def write_if_missing(path):
    """Write the demo data set `path` lies in when it is under data/demo and was never written; True if it wrote.

    `profile = "demo"` on a fresh clone finds nothing there; the set takes seconds, so it is written on the spot.
    """
    if not in_demo_data(path):
        return False
    root = Path(repo_root()) / DEMO_DATA
    parts = Path(os.path.abspath(path)).relative_to(root).parts
    if not parts or parts[0] not in DATASETS or read_marker(root / parts[0]) is not None:
        return False
    print(f"{DEMO_DATA}/{parts[0]} is missing: writing lib.demo's synthetic {parts[0]} there now (seconds; "
          "`make demo-data` writes every demo set)")
    write_all(root, only=[parts[0]])
    return True


def main(argv=None):
    """Command-line entry point."""
    args = parse_args(argv)
    sizes = {key: getattr(args, key) for key in DEFAULT_SIZES}
    start = time.perf_counter()
    paths = write_all(args.out, args.only, args.force, args.seed, **sizes)
    for name, path in paths.items():
        print(f"{name:14s} {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return paths


if __name__ == "__main__":
    sys.exit(utils.run_command(main, "python -m lib.demo"))
