"""CIFAR-10 shipped as image files (train/<class>/*.png, test/<class>/*.png, as many copies are) rebuilt into the
python batches the notebooks read, so such a copy (20 MB as JPEG, against 163 MB for the batches) can travel."""
import os

import numpy as np
from PIL import Image

from .demo import cifar_rows, dump_py2

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def find_split_root(root):
    """The folder under root holding train/ and test/ (root itself or one level down, as archives nest them)."""
    for candidate in [root] + sorted(os.path.join(root, d) for d in os.listdir(root)):
        if os.path.isdir(os.path.join(candidate, "train")) and os.path.isdir(os.path.join(candidate, "test")):
            return candidate
    raise ValueError(f"{root}: no train/ and test/ folders of class folders. Expected train/<class>/*.png and "
                     "test/<class>/*.png (CIFAR-10's ten classes).")


def read_split(folder, classes):
    """(N x 32 x 32 x 3 uint8 images, labels, file names) of one split, classes numbered in `classes` order."""
    images, labels, names = [], [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(folder, name)
        for file in sorted(os.listdir(class_dir)):
            if not file.lower().endswith(IMAGE_SUFFIXES) or file.startswith("."):
                continue
            with Image.open(os.path.join(class_dir, file)) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
            if pixels.shape != (32, 32, 3):
                raise ValueError(f"{os.path.join(class_dir, file)}: {pixels.shape[1]} x {pixels.shape[0]} pixels; "
                                 "CIFAR-10 images are 32 x 32. Is this the right data set?")
            images.append(pixels)
            labels.append(label)
            names.append(f"{name}_{file}".encode())
    return np.stack(images), labels, names


def write_cifar_batches(root, out_dir, num_train_batches=5, seed=0):
    """Write data_batch_1..5, test_batch and batches.meta into out_dir from root's train/ and test/ folders.

    Classes are numbered in sorted folder order, which is CIFAR-10's own (airplane, automobile, ... truck); the
    training images are shuffled with `seed` before they are cut into batches, so every batch holds every class.
    """
    split_root = find_split_root(root)
    classes = sorted(d for d in os.listdir(os.path.join(split_root, "train"))
                     if os.path.isdir(os.path.join(split_root, "train", d)))
    os.makedirs(out_dir, exist_ok=True)
    images, labels, names = read_split(os.path.join(split_root, "train"), classes)
    order = np.random.default_rng(seed).permutation(len(labels))
    for b, part in enumerate(np.array_split(order, num_train_batches)):
        dump_py2({b"batch_label": f"training batch {b + 1} of {num_train_batches}".encode(),
                  b"labels": [labels[i] for i in part], b"data": cifar_rows(images[part]),
                  b"filenames": [names[i] for i in part]}, os.path.join(out_dir, f"data_batch_{b + 1}"))
    images, labels, names = read_split(os.path.join(split_root, "test"), classes)
    dump_py2({b"batch_label": b"testing batch 1 of 1", b"labels": labels, b"data": cifar_rows(images),
              b"filenames": names}, os.path.join(out_dir, "test_batch"))
    dump_py2({b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": len(order) // num_train_batches,
              b"num_vis": 3072}, os.path.join(out_dir, "batches.meta"))
    return classes
