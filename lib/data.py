"""The on-disk formats (CIFAR batches, ImageFolder, flat unlabeled test folder) and the loaders that feed models."""
import io
import os
import pickle
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from .utils import README_DATA

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
        f"no CIFAR-10 batches under {root!r}: expected {root}/cifar-10-batches-py/"
        "{data_batch_1..5, test_batch, batches.meta}. Put the python version of CIFAR-10 there "
        f"(torchvision.datasets.CIFAR10(root, download=True) does it when online), or run `python -m lib.demo` "
        f"and use data_dir='data/demo/cifar10'. See {README_DATA}.")


def load_cifar_batch(path):
    """Read one CIFAR python batch into (uint8 tensor N x 3 x 32 x 32, int64 labels)."""
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
    images = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return images, torch.as_tensor(np.asarray(labels, dtype=np.int64))


def load_cifar10(root):
    """Load the CIFAR-10 python batches under `root` as uint8 tensors: (x_train, y_train, x_test, y_test, classes)."""
    folder = find_cifar_dir(root)
    meta_path = os.path.join(folder, "batches.meta")
    meta = _str_keys(safe_unpickle(meta_path), meta_path)
    classes = [c.decode() if isinstance(c, bytes) else c for c in meta["label_names"]]
    parts = [load_cifar_batch(os.path.join(folder, name)) for name in CIFAR_TRAIN_FILES]
    x_train = torch.cat([p[0] for p in parts])
    y_train = torch.cat([p[1] for p in parts])
    x_test, y_test = load_cifar_batch(os.path.join(folder, "test_batch"))
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
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2))), ids


def split_train_val(x, y, val_size, seed):
    """Carve a validation split of `val_size` images (int, or fraction if < 1) out of the training set, fixed by `seed`."""
    n = len(x)
    n_val = int(round(val_size * n)) if val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"val_size={val_size} leaves no training images out of {n}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


def normalize_batch(images, mean, std):
    """uint8 N x C x H x W to normalised float32, in one fused pass on the tensor's device."""
    mean = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255) - mean).div_(std)


def random_crop_flip(images, padding, generator, flip=True):
    """Random crop with zero padding plus (optionally) random horizontal flip, per image, on a whole batch."""
    n, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < (0.5 if flip else 0.0)).to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = torch.arange(w, device=images.device).expand(n, w)
    # a flip is just reading the crop's columns in reverse order, so it costs nothing extra
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    batch_idx = torch.arange(n, device=images.device)[:, None, None, None]
    chan_idx = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows, cols[:, None, None, :]]


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
        self.drop_last, self.channels_last, self.epoch = drop_last, channels_last, 0

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
                idx = order[idx]
            x, y = self.images[idx], self.labels[idx]
            if self.train and self.crop_padding:
                x = random_crop_flip(x, self.crop_padding, generator, self.flip)
            x = normalize_batch(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


# ---------------------------------------------------------------- image folders

def _check_folder_split(root, split):
    """Fail with the expected layout if root/split is missing or holds no class folder with images."""
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"missing folder {path!r}: expected {root}/{split}/<class>/<image files>. "
                                f"See {README_DATA}, or run `python -m lib.demo` and point data_dir at data/demo/...")
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"{path!r} holds no class folders: expected {path}/<class>/<image files>. "
                                f"See {README_DATA}.")
    for c in classes:
        if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(os.path.join(path, c))):
            raise FileNotFoundError(f"class folder {os.path.join(path, c)!r} holds no images "
                                    f"({', '.join(IMAGE_EXTENSIONS)}). Add its images or remove the empty folder.")
    return classes


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


def open_rgb(path):
    """Open an image file as RGB whatever its mode (grayscale, RGBA, palette, CMYK), naming the file if it is bad."""
    from PIL import Image
    try:
        with open(path, "rb") as fh:
            image = Image.open(io.BytesIO(fh.read()))
            image.load()
    except Exception as err:  # PIL raises several types for damaged files
        raise ValueError(f"cannot read image {path!r} ({type(err).__name__}: {err}). Replace or delete the file "
                         "(or pass skip_bad_images=True where the notebook offers it).") from err
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
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


def imagenet_eval_transform(image_size):
    """Resize to 8/7 of the size and centre-crop, as ImageNet evaluation does."""
    return transforms.Compose([
        transforms.Resize(int(round(image_size * 8 / 7))),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def readable_images(paths, where):
    """Decode every file up front (a truncated JPEG passes a header check); warn how many are unreadable.

    Returns the readable paths; the skipped ones are the rest. Used by skip_bad_images=True, so the count is
    known before training starts instead of a crash mid-epoch.
    """
    good, bad = [], []
    for path in paths:
        try:
            open_rgb(path)
            good.append(path)
        except ValueError:
            bad.append(path)
    if bad:
        warnings.warn(f"skip_bad_images=True: skipped {len(bad)} of {len(paths)} images under {where} that cannot "
                      f"be decoded (first: {', '.join(os.path.basename(p) for p in bad[:3])})", stacklevel=2)
    if not good:
        raise ValueError(f"none of the {len(paths)} images under {where} can be decoded: check the files.")
    return good


def image_folder(root, split, transform, skip_bad_images=False):
    """torchvision ImageFolder for root/split that opens every image as RGB and names bad files.

    skip_bad_images=True decodes every image first and leaves out (with a warning) those that cannot be read;
    `dataset.skipped_images` lists them. By default a bad file is an error naming it when it is read.
    """
    _check_folder_split(root, split)
    dataset = datasets.ImageFolder(os.path.join(root, split), transform=transform, loader=open_rgb)
    dataset.skipped_images = []
    if skip_bad_images:
        good = set(readable_images([p for p, _ in dataset.samples], os.path.join(root, split)))
        dataset.skipped_images = [p for p, _ in dataset.samples if p not in good]
        dataset.samples = dataset.imgs = [s for s in dataset.samples if s[0] in good]
        dataset.targets = [t for _, t in dataset.samples]
    return dataset


class FlatImageFolder(Dataset):
    """Unlabeled images in one folder, in sorted file-name order; items are (image, file name)."""

    def __init__(self, root, transform, skip_bad_images=False):
        if not os.path.isdir(root):
            raise FileNotFoundError(f"test folder {root!r} not found: expected a flat folder of images. "
                                    f"See {README_DATA}.")
        self.root, self.transform = root, transform
        self.names = sorted(f for f in os.listdir(root) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.names:
            raise FileNotFoundError(f"test folder {root!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        self.skipped_images = []
        if skip_bad_images:
            kept = {os.path.basename(p) for p in readable_images([os.path.join(root, n) for n in self.names], root)}
            self.skipped_images = [os.path.join(root, n) for n in self.names if n not in kept]
            self.names = [n for n in self.names if n in kept]

    def __len__(self):
        return len(self.names)

    def __getitem__(self, i):
        return self.transform(open_rgb(os.path.join(self.root, self.names[i]))), self.names[i]


def make_loader(dataset, batch_size, *, train, num_workers=0, seed=0, pin_memory=None):
    """DataLoader with a seeded shuffle (re-seeded per epoch by `set_epoch`) and pinned memory when CUDA is used."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                        pin_memory=pin_memory, generator=generator, drop_last=False,
                        persistent_workers=False)
    loader.base_seed = seed
    return loader


def set_epoch(loader, epoch):
    """Make the loader's shuffle and augmentation for `epoch` depend only on (seed, epoch), for exact resume."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif isinstance(loader, DataLoader) and loader.generator is not None:
        loader.generator.manual_seed(getattr(loader, "base_seed", 0) * 1_000_003 + epoch)


def folder_loaders(root, *, image_size, batch_size, num_workers=0, seed=0, crop_scale=(0.08, 1.0), jitter=0.2,
                   affine_degrees=10, pipeline="naive", splits=("train", "val"), skip_bad_images=False):
    """Train and eval DataLoaders for an ImageFolder set (root/train, root/val); returns (loaders dict, classes).

    pipeline="naive" is the reference: torchvision ImageFolder with per-sample PIL transforms.
    skip_bad_images=True leaves out (with a warning giving the count) images that cannot be decoded.
    """
    classes = check_image_folders(root, splits)
    if pipeline != "naive":
        raise ValueError(f"pipeline={pipeline!r} is not known; use 'naive'")
    loaders = {}
    for split in splits:
        is_train = split == "train"
        transform = (imagenet_train_transform(image_size, crop_scale, jitter, affine_degrees) if is_train
                     else imagenet_eval_transform(image_size))
        dataset = image_folder(root, split, transform, skip_bad_images)
        loaders[split] = make_loader(dataset, batch_size, train=is_train,
                                     num_workers=num_workers, seed=seed)
    return loaders, classes
