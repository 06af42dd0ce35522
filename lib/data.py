"""The on-disk formats (CIFAR batches, ImageFolder, flat unlabeled test folder) and the loaders that feed models."""
import collections
import contextlib
import hashlib
import io
import itertools
import json
import os
import pickle
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets, transforms
from .progress import tqdm

from . import augment, utils
from .utils import DEMO_SWITCH, README_DATA

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


# ---------------------------------------------------------------- safe pickles

class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a class or function outside the allowed data types."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only the numpy/builtin objects the CIFAR formats contain, never arbitrary code."""
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.dtypes", "UInt8DType"), ("numpy.dtypes", "Int64DType"), ("numpy.dtypes", "Int32DType"),
        ("_codecs", "encode"),  # Python 3 pickles of bytes at protocol 2 go through it
        ("builtins", "bytearray"), ("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: the file is not a plain data pickle")


def safe_unpickle(path, encoding="latin1"):
    """Load a data pickle with the restricted unpickler, naming the file and the fix if it is unreadable."""
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh, encoding=encoding).load()
    except FileNotFoundError:
        raise
    except UnsafePickleError as err:
        raise ValueError(f"{path}: {err}. Only pickles of numpy arrays, lists and dicts are read.") from err
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as err:
        raise ValueError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}). "
                         "Download it again, or re-create the demo data with `python -m lib.demo --force`.") from err


def _str_keys(d, path):
    """CIFAR pickles have bytes keys under encoding='bytes' and str keys under 'latin1': normalise to str."""
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a pickled dict (the CIFAR python format), got {type(d).__name__}. "
                         f"Is this the right file? See {README_DATA}.")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


# ---------------------------------------------------------------- CIFAR-10

def find_cifar_dir(root):
    """Return the folder holding the CIFAR python batches: `root` itself or `root/cifar-10-batches-py`."""
    for candidate in (os.path.join(root, "cifar-10-batches-py"), root):
        if os.path.isfile(os.path.join(candidate, "batches.meta")):
            return candidate
    raise FileNotFoundError(
        f"no CIFAR-10 batches under {root!r}. {DEMO_SWITCH} For the real data: {root}/cifar-10-batches-py/"
        "{data_batch_1..5, test_batch, batches.meta}; `make data` (python -m lib.data fetch) downloads them when "
        f"online. See {README_DATA}.")


def load_cifar_batch(path, num_classes=None):
    """Read one CIFAR python batch into (uint8 tensor N x 3 x 32 x 32, int64 labels), labels checked against
    `num_classes` when given."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing CIFAR batch file {path!r}; the folder should hold data_batch_1..5 and "
                                f"test_batch. See {README_DATA}.")
    batch = _str_keys(safe_unpickle(path), path)
    data, labels = batch.get("data"), batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' should be a uint8 array of shape (N, 3072), got "
                         f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}. Is this a CIFAR python batch?")
    if labels is None or len(labels) != len(data):
        raise ValueError(f"{path}: expected one label per image ({len(data)}), got "
                         f"{None if labels is None else len(labels)}. The file is damaged: download it again.")
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is not None:
        # an out-of-range label would crash training mid-epoch (or evaluation after it) without naming the file
        bad = (labels < 0) | (labels >= num_classes)
        if bad.any():
            raise ValueError(f"{path}: {int(bad.sum())} of {len(labels)} labels are outside 0..{num_classes - 1} "
                             f"(first: {labels[bad][:5].tolist()}). The file is damaged or from another data set: "
                             f"download it again, or re-create the demo data with `python -m lib.demo --force`.")
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return images, torch.from_numpy(labels)


def load_cifar10(root):
    """Load the CIFAR-10 python batches under `root` as uint8 tensors: (x_train, y_train, x_test, y_test, classes)."""
    folder = find_cifar_dir(root)
    meta_path = os.path.join(folder, "batches.meta")
    meta = _str_keys(safe_unpickle(meta_path), meta_path)
    classes = [c.decode() if isinstance(c, bytes) else c for c in meta["label_names"]]
    parts = [load_cifar_batch(os.path.join(folder, name), len(classes)) for name in CIFAR_TRAIN_FILES]
    x_train = torch.cat([p[0] for p in parts])
    y_train = torch.cat([p[1] for p in parts])
    x_test, y_test = load_cifar_batch(os.path.join(folder, "test_batch"), len(classes))
    return x_train, y_train, x_test, y_test, classes


def load_unlabeled_cifar(path):
    """Read the course's unlabeled test pickle ({b'data': N x 32 x 32 x 3 uint8, b'ids'}) as (N x 3 x 32 x 32, ids)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"unlabeled test file {path!r} not found. Set test_pickle to the Kaggle "
                                "cifar_test_nolabels.pkl, or to '' to skip the submission.")
    d = _str_keys(safe_unpickle(path, encoding="bytes"), path)
    data = d.get("data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or data.shape[1:] != (32, 32, 3):
        raise ValueError(f"{path}: b'data' should be a uint8 array of shape (N, 32, 32, 3), got "
                         f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}.")
    ids = np.asarray(d.get("ids", np.arange(len(data))))
    if ids.shape != (len(data),):
        raise ValueError(f"{path}: b'ids' should hold one id per image ({len(data)}), got shape {ids.shape}.")
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{path}: b'ids' should be integers (the submission's ID column), got {ids.dtype}.")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():  # a submission needs exactly one row per id
        raise ValueError(f"{path}: {int((counts > 1).sum())} ids occur more than once (first: "
                         f"{unique[counts > 1][:5].tolist()}). Use the original file: each image needs its own id.")
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2))), ids


def split_train_val(x, y, val_size, seed):
    """Carve a validation split of `val_size` images (int, or fraction if < 1) out of the training set, fixed by `seed`."""
    n = len(x)
    n_val = int(round(val_size * n)) if val_size < 1 else int(val_size)
    if not 1 <= n_val < n:
        # no validation images would make every epoch's validation accuracy 0 and the best epoch meaningless
        raise ValueError(f"val_size={val_size} gives {n_val} validation images out of {n}: choose from 1 to {n - 1}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def normalize_batch(images, mean, std, out=None):
    """uint8 N x C x H x W to normalised float32 on the tensor's device: one multiply and one add."""
    return augment.normalize(images, mean, std, out=out)


def random_crop_flip(images, padding, generator, flip=True):
    """Random crop with zero padding plus (optionally) random horizontal flip, per image, on a whole batch.

    One gather from the padded batch: each output pixel reads (row + dy, col + dx) of its padded image, with the
    columns reversed for flipped images.
    """
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < (0.5 if flip else 0.0)).to(device)
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    rows = dy[:, None] + torch.arange(h, device=device)
    index = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.view(n, c, -1).gather(2, index).view(n, c, h, w)


class TensorBatchLoader:
    """Iterate (images, labels) batches from uint8 tensors kept on the training device, augmenting per batch.

    The airbench approach: no per-sample PIL work and no worker processes. Shuffling and augmentation draw from a
    generator seeded by (seed, epoch), so an epoch is the same whether or not training was resumed before it.
    """

    def __init__(self, images, labels, batch_size, *, train, device="cpu", seed=0, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, crop_padding=4, flip=True, drop_last=False, channels_last=False):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.mean, self.std, self.crop_padding, self.flip = mean, std, crop_padding, flip
        self.drop_last, self.epoch = drop_last, 0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def __len__(self):
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.images)
        order = torch.randperm(n, generator=generator).to(self.images.device) if self.train else None
        for i in range(len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                idx = order[idx]  # index_select copies whole rows; fancy indexing goes element by element
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            else:
                x, y = self.images[idx], self.labels[idx]
            if self.train and self.crop_padding:
                x = random_crop_flip(x, self.crop_padding, generator, self.flip)
            out = torch.empty(x.shape, device=x.device, memory_format=self.memory_format)
            yield normalize_batch(x, self.mean, self.std, out=out), y


# ---------------------------------------------------------------- image folders

# what copying a data set between machines leaves behind (macOS resource forks and Finder files, Windows
# thumbnails, Jupyter autosaves): never images and never classes, whatever their extension
CLUTTER_NAMES = {"thumbs.db", "desktop.ini", "__macosx"}


def is_clutter(name):
    """True for hidden and system entries: `.*` (so `._*`, `.DS_Store`, `.ipynb_checkpoints`), Thumbs.db,
    desktop.ini, __MACOSX."""
    return name.startswith(".") or name.lower() in CLUTTER_NAMES


FolderListing = collections.namedtuple("FolderListing", "classes samples ignored")


def _class_images(class_dir, ignored):
    """Image files under one class folder, recursively in name order; clutter and links to folders go to `ignored`.

    A link to a folder inside a class folder (`up -> ..`, `same -> .`) would relabel or repeat other images, so it
    is not followed; a link to a file is read as that file.
    """
    images = []
    with os.scandir(class_dir) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        if is_clutter(entry.name) or (entry.is_symlink() and entry.is_dir()):
            ignored.append(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            images += _class_images(entry.path, ignored)
        elif entry.name.lower().endswith(IMAGE_EXTENSIONS) and entry.is_file():
            images.append(entry.path)
    return images


def list_image_folder(root, split):
    """Classes, (path, class index) samples and ignored entries of root/split, failing with the layout expected."""
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"missing folder {path!r}. {DEMO_SWITCH} For the real data: "
                                f"{root}/{split}/<class>/<image files>; see {README_DATA}.")
    ignored = []
    with os.scandir(path) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    ignored += [e.path for e in entries if is_clutter(e.name)]
    classes = [e.name for e in entries if not is_clutter(e.name) and e.is_dir()]
    if not classes:
        raise FileNotFoundError(f"{path!r} holds no class folders: expected {path}/<class>/<image files>. "
                                f"See {README_DATA}.")
    # a class folder may be a link (a set assembled from elsewhere), but not to the split or to another class
    real = {c: os.path.realpath(os.path.join(path, c)) + os.sep for c in classes}
    for c, target in sorted(real.items(), key=lambda item: not os.path.islink(os.path.join(path, item[0]))):
        overlaps = [o for o, other in real.items() if o != c and other.startswith(target)]
        holds_split = (os.path.realpath(path) + os.sep).startswith(target)
        if holds_split or overlaps:
            raise ValueError(f"class folder {os.path.join(path, c)!r} leads to {target[:-1]!r}, which holds "
                             f"{'the split itself' if holds_split else 'the class folders ' + str(overlaps[:3])}: "
                             "its images would be counted again under another label. Remove the link.")
    samples = []
    for index, c in enumerate(classes):
        images = _class_images(os.path.join(path, c), ignored)
        if not images:
            raise FileNotFoundError(f"class folder {os.path.join(path, c)!r} holds no images "
                                    f"({', '.join(IMAGE_EXTENSIONS)}). Add its images or remove the empty folder.")
        samples += [(image, index) for image in images]
    return FolderListing(classes, samples, ignored)


def _check_folder_split(root, split):
    """Fail with the expected layout if root/split is missing or holds no class folder with images; the classes."""
    return list_image_folder(root, split).classes


def warn_ignored(ignored, where):
    """Say how many hidden, system or linked entries a listing left out, so nothing vanishes silently."""
    if ignored:
        warnings.warn(f"ignored {len(ignored)} hidden or system entries and links to folders under {where} "
                      f"(first: {', '.join(os.path.basename(p) for p in ignored[:3])})", stacklevel=3)


def check_image_folders(root, splits=("train", "val")):
    """Check each split's layout and that all splits have the same classes; return the class list."""
    found = {s: _check_folder_split(root, s) for s in splits}
    reference = found[splits[0]]
    for s in splits[1:]:
        if found[s] != reference:
            only_a = sorted(set(reference) - set(found[s]))[:5]
            only_b = sorted(set(found[s]) - set(reference))[:5]
            raise ValueError(f"{root}: {splits[0]}/ and {s}/ have different class folders "
                             f"(only in {splits[0]}: {only_a}, only in {s}: {only_b}). Labels would not match: "
                             "make both hold the same class folders.")
    return reference


def open_rgb(path, draft=None):
    """Open an image file as 8-bit RGB whatever its mode (see `to_rgb`), naming the file if it is bad.

    `draft` (width, height) lets a JPEG decode at a reduced scale that is still at least that size (for caches);
    the original size is kept in `image.info["original_size"]`.
    """
    from PIL import Image
    try:
        with open(path, "rb") as fh:
            image = Image.open(io.BytesIO(fh.read()))
            original_size = image.size
            if draft is not None and image.format == "JPEG":
                image.draft(None, draft)
            image.load()
            image = to_rgb(image)
    except Exception as err:  # PIL raises several types for damaged files
        raise ValueError(f"cannot read image {path!r} ({type(err).__name__}: {err}). Replace or delete the file "
                         "(or pass skip_bad_images=True where the notebook offers it, --skip-bad-images to "
                         "`python -m lib.predict`).") from err
    image.info["original_size"] = original_size
    return image


WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def wide_gray_to_l(image):
    """16- and 32-bit integer or float grayscale as 8-bit 'L', scaled by the values' range instead of clipped at 255.

    16-bit modes span 0..65535. Mode I (32-bit) is what 16-bit PGM and TIFF files (and older Pillows' 16-bit PNGs)
    open as: values within 0..65535 are read on that scale, any others by the image's own min..max. Float images
    within [0, 1] are read on that scale, any others by their min..max (NaN as the minimum).
    """
    values = np.asarray(image).astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode.startswith("I;16") or (image.mode == "I" and low >= 0 and high <= 65535):
        low, high = 0.0, 65535.0
    elif image.mode == "F" and low >= 0 and high <= 1:
        low, high = 0.0, 1.0
    values = np.nan_to_num(values, nan=low, posinf=high, neginf=low)
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    from PIL import Image
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_rgb(image):
    """Convert a PIL image of any mode to 8-bit RGB: wide grayscale rescaled (`wide_gray_to_l`), transparency
    composed on white."""
    from PIL import Image
    if image.mode in WIDE_GRAY_MODES:
        image = wide_gray_to_l(image)  # PIL's own conversion clips at 255: a 16-bit image turns almost white
    elif image.mode == "RGBa":  # premultiplied alpha (TIFF): undo it before composing
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # compose on white so transparent pixels do not turn black
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def imagenet_train_transform(image_size, scale=(0.08, 1.0), jitter=0.2, affine_degrees=10):
    """The seeds' augmentation: random resized crop, flip, colour jitter, small affine, ImageNet normalisation."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size, scale=scale),
        transforms.RandomHorizontalFlip(),
        transforms.ColorJitter(jitter, jitter, jitter),
        transforms.RandomAffine(affine_degrees, translate=(0.1, 0.1)),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def imagenet_eval_geometry(image_size):
    """The PIL part of evaluation: shorter side resized to 8/7 of the size, then centre-cropped, as ImageNet does."""
    return transforms.Compose([transforms.Resize(int(round(image_size * 8 / 7))), transforms.CenterCrop(image_size)])


def imagenet_eval_transform(image_size):
    """Resize to 8/7 of the size and centre-crop, as ImageNet evaluation does."""
    return transforms.Compose([
        *imagenet_eval_geometry(image_size).transforms,
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _decodes(path):
    """True if the image file decodes."""
    try:
        open_rgb(path)
        return True
    except ValueError:
        return False


def readable_images(paths, where, skip=True):
    """Decode every file up front (a truncated JPEG passes a header check); return the readable paths.

    skip=True (skip_bad_images) warns how many are unreadable and leaves them out; skip=False stops naming them.
    Either way the outcome is known before training starts instead of a crash mid-epoch or after training.
    """
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # PIL releases the GIL while decoding
        ok = list(pool.map(_decodes, paths))
    good = [p for p, fine in zip(paths, ok) if fine]
    bad = [p for p, fine in zip(paths, ok) if not fine]
    names = ", ".join(os.path.basename(p) for p in bad[:3])
    if bad and not skip:
        raise ValueError(f"{len(bad)} of {len(paths)} images under {where} cannot be decoded (first: {names}). "
                         "Replace or delete them, or pass skip_bad_images=True (`python -m lib.predict "
                         "--skip-bad-images`) to leave them out.")
    if bad:
        warnings.warn(f"skip_bad_images=True: skipped {len(bad)} of {len(paths)} images under {where} that cannot "
                      f"be decoded (first: {names})", stacklevel=2)
    if not good:
        raise ValueError(f"none of the {len(paths)} images under {where} can be decoded: check the files.")
    return good


class _ListedImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder over `list_image_folder`'s listing: no clutter, no links to folders followed."""

    def __init__(self, root, split, transform):
        self.listing = list_image_folder(root, split)
        super().__init__(os.path.join(root, split), transform=transform, loader=open_rgb)

    def find_classes(self, directory):
        return list(self.listing.classes), {c: i for i, c in enumerate(self.listing.classes)}

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        return list(self.listing.samples)


def image_folder(root, split, transform, skip_bad_images=False):
    """torchvision ImageFolder for root/split that opens every image as RGB and names bad files.

    Hidden and system entries are ignored and links to folders inside class folders not followed
    (`list_image_folder`), with a warning giving the count; `dataset.ignored_files` lists them.
    skip_bad_images=True decodes every image first and leaves out (with a warning) those that cannot be read;
    `dataset.skipped_images` lists them. By default a bad file is an error naming it when it is read.
    """
    dataset = _ListedImageFolder(root, split, transform)
    dataset.ignored_files = dataset.listing.ignored
    warn_ignored(dataset.ignored_files, os.path.join(root, split))
    dataset.skipped_images = []
    if skip_bad_images:
        good = set(readable_images([p for p, _ in dataset.samples], os.path.join(root, split)))
        dataset.skipped_images = [p for p, _ in dataset.samples if p not in good]
        dataset.samples = dataset.imgs = [s for s in dataset.samples if s[0] in good]
        dataset.targets = [t for _, t in dataset.samples]
    return dataset


class FlatImageFolder(Dataset):
    """Unlabeled images in one folder, in sorted file-name order; items are (image, file name).

    Hidden and system entries and sub-folders are ignored (`ignored_files`, with a warning giving the count).
    decode_all=True decodes every image now, so a bad one stops the caller before any work rather than midway;
    skip_bad_images=True does the same but leaves the bad ones out (`skipped_images`) with a warning.
    """

    def __init__(self, root, transform, skip_bad_images=False, decode_all=False):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"test folder {root!r} not found: expected a flat folder of images. "
                                    f"See {README_DATA}.")
        self.root, self.transform = root, transform
        with os.scandir(root) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        self.ignored_files = [e.path for e in entries if is_clutter(e.name)]
        warn_ignored(self.ignored_files, root)
        self.names = [e.name for e in entries if not is_clutter(e.name) and e.name.lower().endswith(IMAGE_EXTENSIONS)
                      and e.is_file()]
        if not self.names:
            raise FileNotFoundError(f"test folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                                    "Point test_dir (--test-dir) at the folder of test images.")
        self.skipped_images = []
        if skip_bad_images or decode_all:
            kept = {os.path.basename(p) for p in
                    readable_images([os.path.join(root, n) for n in self.names], root, skip=skip_bad_images)}
            self.skipped_images = [os.path.join(root, n) for n in self.names if n not in kept]
            self.names = [n for n in self.names if n in kept]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return self.transform(open_rgb(os.path.join(self.root, self.names[i]))), self.names[i]


def collate_channels_last(samples):
    """default_collate, with the images in channels_last memory format (in the worker, not the training loop)."""
    images, *rest = default_collate(samples)
    return [images.contiguous(memory_format=torch.channels_last), *rest]


def make_loader(dataset, batch_size, *, train, num_workers=0, seed=0, pin_memory=None, channels_last=False):
    """DataLoader with a seeded shuffle (re-seeded per epoch by `set_epoch`) and pinned memory when CUDA is used."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                        pin_memory=pin_memory, generator=generator, drop_last=False, persistent_workers=False,
                        collate_fn=collate_channels_last if channels_last else None)
    loader.base_seed = seed
    return loader


def set_epoch(loader, epoch):
    """Make the loader's shuffle and augmentation for `epoch` depend only on (seed, epoch), for exact resume."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif isinstance(loader, DataLoader) and loader.generator is not None:
        loader.generator.manual_seed(getattr(loader, "base_seed", 0) * 1_000_003 + epoch)


# ---------------------------------------------------------------- decoded-once caches of image folders

CACHE_VERSION = 3  # 2: training canvases hold RGBX words (4 channels); 3: wide grayscale rescaled, not clipped


def default_canvas_size(image_size):
    """Stored side for random crops: a 4:3 photo whose shorter side is resized to image_size * 8/7 (the eval
    resize) keeps at least that resolution on both axes."""
    return int(round(image_size * 8 / 7 * 4 / 3))


def _files_key(samples, split_dir, kind, size):
    """Hash of what the cache depends on: relative paths, sizes and mtimes of the files, labels, kind, resolution."""
    digest = hashlib.sha256(f"v{CACHE_VERSION} {kind} {size}\n".encode())
    for path, label in samples:
        st = os.stat(path)
        digest.update(f"{os.path.relpath(path, split_dir)}\t{label}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _largest_side(path):
    """The larger of an image file's width and height, from its header (bad files fail later, with their name)."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return max(image.size)
    except Exception:  # the decode step names the file and the fix
        return 0


def _decode_for_cache(path, kind, size):
    """One cache entry: (uint8 array, (original height, original width)); H x W x 3 for eval, x 4 (RGBX) for canvas."""
    from PIL import Image
    if kind == "eval":
        image = open_rgb(path)
        return np.asarray(imagenet_eval_geometry(size)(image)), image.size[::-1]
    image = open_rgb(path, draft=(size, size))
    original_w, original_h = image.info["original_size"]
    # a fourth byte per pixel lets the augmentation move whole pixels as 32-bit words
    return np.asarray(image.resize((size, size), Image.BILINEAR).convert("RGBA")), (original_h, original_w)


class FolderCache:
    """One split of an ImageFolder tree, decoded once into a memory-mapped uint8 array N x size x size x channels.

    kind="canvas" (for training, 4 channels: RGB and a constant 255, so that a pixel is one 32-bit word for the
    batch augmentation): each image resized to size x size without keeping its aspect ratio, with its
    original height and width recorded, so random crops are drawn in the original's coordinates exactly as
    RandomResizedCrop draws them and only then mapped into the stored copy. `size` is lowered to the largest side
    of the split's images when they are all smaller (no point storing upsampled pixels); `self.size` is the size
    used. kind="eval": the final evaluation input, made by the same PIL ops as `imagenet_eval_transform` (shorter
    side to 8/7 of size, centre crop), so evaluation sees the reference pixels.

    The file lives under cache_dir with a name holding a hash of the split's relative paths, sizes and mtimes and of
    (kind, size): adding, removing or changing an image builds a new cache. A build writes a temporary file and
    renames it into place when complete, so an interrupted build never leaves a cache that looks valid.
    """

    def __init__(self, root, split, *, kind, size, cache_dir="data/cache", threads=None, progress=True,
                 skip_bad_images=False):
        if kind not in ("canvas", "eval"):
            raise ValueError(f"kind={kind!r}: use 'canvas' (training crops) or 'eval'")
        split_dir = os.path.join(root, split)
        folder = image_folder(root, split, None, skip_bad_images)  # only lists files: ImageFolder's order/labels
        self.root, self.split, self.kind, self.size = root, split, kind, size
        self.channels = 4 if kind == "canvas" else 3
        self.classes, self.samples = folder.classes, folder.samples
        self.targets = torch.tensor(folder.targets, dtype=torch.int64)
        key = _files_key(self.samples, split_dir, kind, size)
        cache_dir = utils.repo_path(cache_dir)
        place = hashlib.sha256(os.path.abspath(split_dir).encode()).hexdigest()[:8]
        prefix = f"{os.path.basename(os.path.normpath(root))}-{split}-{place}-{kind}{size}-"
        self.path = os.path.join(cache_dir, prefix + key[:20] + ".npy")
        meta_path = self.path[:-4] + ".json"
        meta = self._read_meta(meta_path, key)
        if meta is None:
            meta = self._build(cache_dir, meta_path, key, threads, progress)
            for name in os.listdir(cache_dir):  # earlier versions of this split's cache are stale now
                if name.startswith(prefix) and not name.startswith(prefix + key[:20]):
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(cache_dir, name))
        self.size = meta["size"]
        self.images = np.load(self.path, mmap_mode="r")
        self.original_sizes = torch.tensor(meta["original_sizes"], dtype=torch.int64).view(-1, 2)

    def _read_meta(self, meta_path, key):
        """The cache's metadata if a complete cache for exactly these files exists, else None."""
        if not (os.path.isfile(self.path) and os.path.isfile(meta_path)):
            return None
        try:
            with open(meta_path) as fh:
                meta = json.load(fh)
            shape = np.load(self.path, mmap_mode="r").shape
        except (OSError, ValueError):
            return None
        size = meta.get("size")
        if meta.get("key") != key or shape != (len(self.samples), size, size, self.channels):
            return None
        return meta

    def _build(self, cache_dir, meta_path, key, threads, progress):
        """Decode every image once (threads: PIL releases the GIL while decoding) into a temporary file, then rename."""
        try:
            os.makedirs(cache_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-", suffix=".npy")
            os.close(fd)
        except OSError as err:
            raise OSError(f"cannot write the image cache under {cache_dir!r} ({err.strerror}). Pass a writable "
                          "cache_dir, or pipeline='naive' to read the JPEGs every epoch.") from err
        n = len(self.samples)
        original_sizes = [None] * n
        try:
            if self.kind == "canvas":
                self.size = max(1, min(self.size, max(_largest_side(path) for path, _ in self.samples)))
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                              shape=(n, self.size, self.size, self.channels))

            def work(i):
                array[i], original_sizes[i] = _decode_for_cache(self.samples[i][0], self.kind, self.size)

            threads = threads or os.cpu_count() or 1
            with ThreadPoolExecutor(threads) as pool, \
                    tqdm(total=n, desc=f"caching {self.split} ({self.kind} {self.size}px)", unit="img",
                         disable=not progress) as bar:
                futures = [pool.submit(work, i) for i in range(n)]
                try:
                    for future in futures:
                        future.result()
                        bar.update()
                except BaseException:
                    for future in futures:  # stop decoding the rest: the build has failed
                        future.cancel()
                    raise
            array.flush()
            del array
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        meta = {"key": key, "version": CACHE_VERSION, "kind": self.kind, "size": self.size,
                "files": [os.path.relpath(p, os.path.join(self.root, self.split)) for p, _ in self.samples],
                "targets": self.targets.tolist(), "classes": self.classes,
                "original_sizes": [list(s) for s in original_sizes]}
        utils.atomic_write_json(meta_path, meta)
        return meta

    def __getstate__(self):
        return {**self.__dict__, "images": None}  # a process that unpickles this maps the file again

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.images = np.load(self.path, mmap_mode="r")

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        """(uint8 3 x size x size image, label), as stored."""
        return torch.from_numpy(np.array(self.images[i, :, :, :3])).permute(2, 0, 1), int(self.targets[i])


class CachedFolderLoader:
    """Batches (images, labels) from a FolderCache, augmented per batch with tensor ops; the fast folder pipeline.

    Training batches: RandomResizedCrop (drawn on the original image sizes), horizontal flip, colour jitter and
    RandomAffine, as `imagenet_train_transform` does, with ImageNet normalisation. Evaluation batches: the cached
    centre crops, normalised. Shuffle and augmentation come from a generator seeded by (seed, epoch), drawn for
    the whole epoch up front, so an epoch is the same with or without resume and with any number of workers.

    num_workers: background threads that each make whole training batches on one core (torch releases the GIL in
    its kernels, so threads run in parallel without copying batches between processes); 0: the iterating thread
    makes them, on torch's threads. Batches are written into a few reused output tensors, each reused only once
    nothing outside the loader refers to it any more (fresh memory costs a page fault per 4 KiB).
    channels_last: batches come in that memory format (the model's), made so by the augmentation itself.
    device: where the augmentation runs. On CUDA the stored images go through pinned memory with non_blocking
    copies and the rest happens on the GPU, in the iterating thread. On the CPU with CUDA present, batches are
    returned in pinned memory so the training loop's non_blocking copy overlaps.
    """

    CHUNK = 16  # images per pass through the pixel stages on the CPU: their intermediates stay in the caches

    def __init__(self, cache, batch_size, *, train, image_size, seed=0, crop_scale=(0.08, 1.0),
                 crop_ratio=(3 / 4, 4 / 3), jitter=0.2, affine_degrees=10, translate=0.1, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, num_workers=0, device="cpu", pin_memory=None, drop_last=False, channels_last=False):
        expected = "canvas" if train else "eval"
        if cache.kind != expected or (not train and cache.size != image_size):
            raise ValueError(f"a {'training' if train else 'evaluation'} loader needs a {expected} cache"
                             f"{'' if train else f' of size {image_size}'}, got {cache.kind} {cache.size}")
        self.cache, self.dataset = cache, cache
        self.batch_size, self.train, self.image_size, self.seed = batch_size, train, image_size, seed
        self.crop_scale, self.crop_ratio, self.jitter = tuple(crop_scale), tuple(crop_ratio), jitter
        self.affine_degrees, self.translate, self.mean, self.std = affine_degrees, translate, mean, std
        self.num_workers, self.device, self.drop_last, self.epoch = num_workers, torch.device(device), drop_last, 0
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._buffers = {}  # scratch tensors of the iterating thread, reused from batch to batch
        self._outputs, self._lock = [], threading.Lock()
        self._threads = None  # the worker threads, started on first use
        # the CPU reads only each crop's window from the memory map; a GPU gets whole images
        self.windows_from_map = self.device.type == "cpu"

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def __len__(self):
        n = len(self.cache)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch_plan(self, epoch=None):
        """An epoch's order of images and, for training, every random augmentation choice (per image)."""
        epoch = self.epoch if epoch is None else epoch
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        n = len(self.cache)
        if not self.train:
            return torch.arange(n), None
        order = torch.randperm(n, generator=generator)
        sizes = self.cache.original_sizes[order]
        params = augment.sample_train_params(sizes[:, 0], sizes[:, 1], generator, out_size=self.image_size,
                                             scale=self.crop_scale, ratio=self.crop_ratio, jitter=self.jitter,
                                             degrees=self.affine_degrees, translate=self.translate)
        return order, params

    def _stored(self, rows):
        """The stored uint8 images of `rows` (N x H x W x C) from the memory map, on the augmentation device."""
        shape = (len(rows),) + self.cache.images.shape[1:]
        on_gpu = self.device.type == "cuda"
        host = torch.empty(shape, dtype=torch.uint8, pin_memory=on_gpu)
        np.take(self.cache.images, rows.numpy(), axis=0, out=host.numpy())
        return host.to(self.device, non_blocking=True) if on_gpu else host

    def _output(self, n, pin):
        """A batch tensor N x 3 x size x size: pinned when the training loop will copy it to a GPU; on the CPU a
        reused one that nothing outside the loader refers to any more, else a fresh one (kept for reuse)."""
        shape = (n, 3, self.image_size, self.image_size)
        if pin or self.device.type != "cpu":
            return torch.empty(shape, device=self.device, pin_memory=pin, memory_format=self.memory_format)
        with self._lock:  # hand out views: each one counts as a user of the memory while it lives
            for held in self._outputs:
                # 2 = the list's tensor + the temporary storage object: no batch handed out still uses it
                if held.shape == shape and _storage_users(held) == 2:
                    return held[:]
            fresh = torch.empty(shape, memory_format=self.memory_format)
            if len(self._outputs) < 2 * self.num_workers + 4:
                self._outputs.append(fresh)
            return fresh[:]

    def augmented_batch(self, order, params, i, pin=False, buffers=None):
        """Training batch `i` of an epoch plan: augmented, normalised images and their labels.

        Each image's crop window is read from the memory map (on the CPU) and resized as uint8 into an RGBX
        buffer; then `augment.finish_train_batch` does the flip, jitter, affine and normalisation for a chunk of
        images at once, writing into the output. `buffers` holds the calling thread's scratch tensors.
        """
        span = slice(i * self.batch_size, (i + 1) * self.batch_size)
        rows = order[span]
        p = {k: v[span] for k, v in params.items()}
        sizes = self.cache.original_sizes[rows]
        boxes = torch.stack(augment.canvas_boxes(p, sizes[:, 0], sizes[:, 1], self.cache.size), 1).tolist()
        n, size, from_map = len(rows), self.image_size, self.windows_from_map
        out = self._output(n, pin)
        stored = None if from_map else self._stored(rows)
        row_list = rows.tolist()
        chunk = self.CHUNK if self.device.type == "cpu" else n
        for start in range(0, n, chunk):
            part = range(start, min(n, start + chunk))
            resized = augment.scratch(buffers, "resized", (len(part), size, size, 4), torch.uint8, self.device)
            for k in part:
                y, x, h, w = boxes[k]
                window = (torch.from_numpy(np.array(self.cache.images[row_list[k], y:y + h, x:x + w])) if from_map
                          else stored[k, y:y + h, x:x + w])
                augment.resize_into(window, resized[k - start])
            augment.finish_train_batch(resized, {key: v[part.start:part.stop] for key, v in p.items()}, self.mean,
                                       self.std, out[part.start:part.stop], buffers)
        labels = self.cache.targets[rows]
        return out, (labels.pin_memory() if pin else labels.to(self.device))

    def make_batch(self, order, params, i, buffers=None):
        """Batch `i` of an epoch plan: (normalised float images N x 3 x size x size, int64 labels)."""
        pin = self.pin_memory and self.device.type == "cpu"
        if self.train:
            return self.augmented_batch(order, params, i, pin, self._buffers if buffers is None else buffers)
        rows = order[i * self.batch_size:(i + 1) * self.batch_size]
        images = augment.normalize(self._stored(rows).permute(0, 3, 1, 2), self.mean, self.std,
                                   out=self._output(len(rows), pin))
        labels = self.cache.targets[rows]
        return images, (labels.pin_memory() if pin else labels.to(self.device))

    def __iter__(self):
        order, params = self.epoch_plan()
        if self.num_workers > 0 and self.train and self.device.type == "cpu":
            yield from self._threaded(order, params)
            return
        for i in range(len(self)):
            yield self.make_batch(order, params, i)

    def _threaded(self, order, params):
        """The epoch's batches made by the worker threads, up to two per worker ahead, yielded in order."""
        if self._threads is None:
            self._threads = _start_single_threaded_workers(self.num_workers)
        pool, local = self._threads
        work = lambda i: self.make_batch(order, params, i, local.__dict__.setdefault("buffers", {}))  # noqa: E731
        pending, upcoming = collections.deque(), iter(range(len(self)))
        try:
            for i in itertools.islice(upcoming, 2 * self.num_workers):
                pending.append(pool.submit(work, i))
            while pending:
                batch = pending.popleft().result()
                for i in itertools.islice(upcoming, 1):
                    pending.append(pool.submit(work, i))
                yield batch
        finally:  # an epoch cut short: drop the batches not started
            for future in pending:
                future.cancel()


def _storage_users(tensor):
    """How many tensors (and storage objects) share `tensor`'s memory, or a large number where torch cannot say."""
    try:
        return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)
    except (AttributeError, RuntimeError):  # never reuse what cannot be checked
        return 1 << 30


def _start_single_threaded_workers(count):
    """A pool of `count` threads whose torch kernels each use one core (as DataLoader's worker processes do), so
    that workers and the training step do not all fan out over every core; returns (pool, thread-local state).

    torch's thread count is per thread once a thread has used it; the count of the calling thread is kept.
    """
    keep = torch.get_num_threads()  # also fixes this thread's own count before the workers change the default
    ready = threading.Barrier(count + 1)

    def one_thread():
        torch.get_num_threads()
        with contextlib.suppress(RuntimeError):  # builds without per-thread counts keep the shared pool
            torch.set_num_threads(1)
        ready.wait()

    pool = ThreadPoolExecutor(count, thread_name_prefix="cached-folder-loader")
    for _ in range(count):
        pool.submit(one_thread)
    ready.wait()
    with contextlib.suppress(RuntimeError):
        torch.set_num_threads(keep)
    return pool, threading.local()


def folder_loaders(root, *, image_size, batch_size, num_workers=0, seed=0, crop_scale=(0.08, 1.0), jitter=0.2,
                   affine_degrees=10, pipeline="cached", splits=("train", "val"), cache_dir="data/cache",
                   cache_size=None, device="cpu", progress=True, skip_bad_images=False, channels_last=False):
    """Train and eval loaders for an ImageFolder set (root/train, root/val); returns (loaders dict, classes).

    pipeline="cached" (the default, fast): every image is decoded once into a memory-mapped cache under cache_dir
    (a training canvas of cache_size pixels, default `default_canvas_size(image_size)`; evaluation centre crops),
    then batches are augmented with tensor ops on `device` (see CachedFolderLoader), by `num_workers` worker
    threads on the CPU. pipeline="naive" is the reference: torchvision ImageFolder with per-sample PIL
    transforms in `num_workers` DataLoader processes. Both draw from the same augmentation distributions.
    skip_bad_images=True leaves out (with a warning giving the count) images that cannot be decoded.
    channels_last=True gives every batch that memory format (the model's; see lib.precision).
    """
    classes = check_image_folders(root, splits)
    if pipeline not in ("cached", "naive"):
        raise ValueError(f"pipeline={pipeline!r} is not known; use 'cached' (fast) or 'naive' (reference)")
    loaders = {}
    for split in splits:
        is_train = split == "train"
        if pipeline == "naive":
            transform = (imagenet_train_transform(image_size, crop_scale, jitter, affine_degrees) if is_train
                         else imagenet_eval_transform(image_size))
            dataset = image_folder(root, split, transform, skip_bad_images)
            loaders[split] = make_loader(dataset, batch_size, train=is_train, num_workers=num_workers, seed=seed,
                                         channels_last=channels_last)
            continue
        size = (cache_size or default_canvas_size(image_size)) if is_train else image_size
        cache = FolderCache(root, split, kind="canvas" if is_train else "eval", size=size, cache_dir=cache_dir,
                            progress=progress, skip_bad_images=skip_bad_images)
        loaders[split] = CachedFolderLoader(cache, batch_size, train=is_train, image_size=image_size, seed=seed,
                                            crop_scale=crop_scale, jitter=jitter, affine_degrees=affine_degrees,
                                            num_workers=num_workers, device=device, channels_last=channels_last)
    return loaders, classes


if __name__ == "__main__":  # `python -m lib.data fetch [cifar10] [resnet50]`: see lib/fetch.py
    from .fetch import main
    raise SystemExit(main())
