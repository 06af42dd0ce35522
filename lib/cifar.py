"""The CIFAR python batch format: a restricted unpickler, the batches and the course's unlabeled test pickle, the
train/validation split, and the device-resident tensor loader that feeds CIFAR models."""
import os
import pickle

import numpy as np
import torch

from . import augment
from .utils import DATA_DOC, missing_data_advice

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
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
                         f"Is this the right file? See {DATA_DOC}.")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


# ---------------------------------------------------------------- CIFAR-10

def find_cifar_dir(root):
    """Return the folder holding the CIFAR python batches: `root` itself or `root/cifar-10-batches-py`.

    Under data/demo a missing set is lib.demo's to write, so it is written here (seconds), saying so.
    """
    from .demo import write_if_missing
    for _ in range(2):
        for candidate in (os.path.join(root, "cifar-10-batches-py"), root):
            if os.path.isfile(os.path.join(candidate, "batches.meta")):
                return candidate
        if not write_if_missing(root):
            break
    layout = f"{root}/cifar-10-batches-py/{{data_batch_1..5, test_batch, batches.meta}}"
    raise FileNotFoundError(f"no CIFAR-10 batches under {root!r}. {missing_data_advice(root, layout)}")


def load_cifar_batch(path, num_classes=None):
    """Read one CIFAR python batch into (uint8 tensor N x 3 x 32 x 32, int64 labels), labels checked against
    `num_classes` when given."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing CIFAR batch file {path!r}; the folder should hold data_batch_1..5 and "
                                f"test_batch. See {DATA_DOC}.")
    batch = _str_keys(safe_unpickle(path), path)
    data, labels = batch.get("data"), batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' should be a uint8 array of shape (N, 3072), got "
                         f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}. "
                         "Is this a CIFAR python batch?")
    if labels is None or len(labels) != len(data):
        raise ValueError(f"{path}: expected one label per image ({len(data)}), got "
                         f"{None if labels is None else len(labels)}. The file is damaged: download it again.")
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        # a float label would be truncated (1.7 -> class 1) without a word
        shown = labels.ravel()[:3].tolist() if labels.size else []
        raise ValueError(f"{path}: field 'labels' should be whole class numbers, got {labels.dtype} values (first: "
                         f"{shown}). The file is damaged or from another data set: download it again, or "
                         "re-create the demo data with `python -m lib.demo --force`.")
    labels = labels.astype(np.int64)
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
    classes = load_class_names(meta_path)
    parts = [load_cifar_batch(os.path.join(folder, name), len(classes)) for name in CIFAR_TRAIN_FILES]
    x_train = torch.cat([p[0] for p in parts])
    y_train = torch.cat([p[1] for p in parts])
    x_test, y_test = load_cifar_batch(os.path.join(folder, "test_batch"), len(classes))
    unused = sorted(set(range(len(classes))) - set(y_train.unique().tolist()))
    if unused:  # a name no training label uses would add an output the model never learns
        raise ValueError(f"{meta_path}: field 'label_names' holds {len(classes)} names but the training batches use "
                         f"only {len(classes) - len(unused)} classes (no image of {[classes[i] for i in unused][:5]}). "
                         "batches.meta does not belong to these batches: download the data again, or re-create the "
                         "demo data with `python -m lib.demo --force`.")
    return x_train, y_train, x_test, y_test, classes


def load_class_names(meta_path):
    """The class names of a CIFAR batches.meta: a list of distinct, non-empty names, checked field by field."""
    meta = _str_keys(safe_unpickle(meta_path), meta_path)
    names = meta.get("label_names", meta.get("fine_label_names"))
    fix = ("The file is damaged or not CIFAR's batches.meta: download the data again, or re-create the demo data "
           "with `python -m lib.demo --force`.")
    if names is None:
        raise ValueError(f"{meta_path}: no field 'label_names' (found: {sorted(map(str, meta))[:5]}). {fix}")
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{meta_path}: field 'label_names' should be a non-empty list of class names, got "
                         f"{type(names).__name__} {names!r:.60}. {fix}")
    classes = [c.decode("latin1") if isinstance(c, bytes) else c for c in names]
    if not all(isinstance(c, str) and c.strip() for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"{meta_path}: field 'label_names' should hold distinct, non-empty names, got "
                         f"{classes!r:.80}. {fix}")
    return classes


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
    if len(data) == 0:  # a submission of no rows would be found out only after training
        raise ValueError(f"{path}: b'data' holds no images (shape {data.shape}). Set test_pickle to the Kaggle "
                         "cifar_test_nolabels.pkl, or to '' to skip the submission.")
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
    """Carve a validation split of `val_size` images (int, or fraction if < 1) out of the training set, fixed by
    `seed`."""
    n = len(x)
    n_val = int(round(val_size * n)) if val_size < 1 else int(val_size)
    if not 1 <= n_val < n:
        # no validation images would make every epoch's validation accuracy 0 and the best epoch meaningless
        raise ValueError(f"val_size={val_size} gives {n_val} validation images out of {n}: choose from 1 to {n - 1}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


class TensorBatchLoader:
    """Iterate (images, labels) batches from uint8 tensors kept on the training device, augmenting per batch.

    The airbench approach: no per-sample PIL work and no worker processes. Shuffling and augmentation draw from a
    generator seeded by (seed, epoch), so an epoch is the same whether or not training was resumed before it. The
    epoch's random choices are drawn on the CPU when it starts and copied to the device once, without blocking, and
    mean and std live on the device: a batch makes no host-device copy and never makes the host wait.
    """

    def __init__(self, images, labels, batch_size, *, train, device="cpu", seed=0, mean=CIFAR10_MEAN,
                 std=CIFAR10_STD, crop_padding=4, flip=True, drop_last=False, channels_last=False):
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.mean = torch.as_tensor(mean, dtype=torch.float32).to(self.images.device)
        self.std = torch.as_tensor(std, dtype=torch.float32).to(self.images.device)
        self.crop_padding, self.flip = crop_padding, flip
        self.drop_last, self.epoch = drop_last, 0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def __len__(self):
        n = len(self.images)
        # a split smaller than one batch keeps its one partial batch
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def epoch_plan(self):
        """The epoch's order and crop/flip choices, drawn on the CPU batch by batch, then on the device."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if not self.train:
            return None, None
        n = len(self.images)
        order = torch.randperm(n, generator=generator)
        choices = None
        if self.crop_padding:
            sizes = [len(range(n)[i * self.batch_size:(i + 1) * self.batch_size]) for i in range(len(self))]
            drawn = [augment.draw_crop_flip(size, self.crop_padding, generator, self.flip) for size in sizes]
            choices = [torch.cat(parts) if parts else torch.empty(0) for parts in zip(*drawn)]
        device = self.images.device
        return to_device(order, device), [to_device(t, device) for t in choices] if choices else None

    def __iter__(self):
        order, choices = self.epoch_plan()
        for i in range(len(self)):
            idx = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is not None:
                rows = order[idx]  # index_select copies whole rows; fancy indexing goes element by element
                x, y = self.images.index_select(0, rows), self.labels.index_select(0, rows)
            else:
                x, y = self.images[idx], self.labels[idx]
            if choices is not None:
                x = augment.crop_flip(x, self.crop_padding, *(t[idx] for t in choices))
            out = torch.empty(x.shape, device=x.device, memory_format=self.memory_format)
            yield augment.normalize(x, self.mean, self.std, out=out), y


def to_device(tensor, device):
    """A CPU tensor on `device`; to a GPU through pinned memory without blocking, so the host does not wait."""
    device = torch.device(device)
    if device.type == "cpu":
        return tensor
    return (tensor.pin_memory() if device.type == "cuda" else tensor).to(device, non_blocking=True)
