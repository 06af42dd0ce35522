"""ImageFolder trees and flat test folders: listing and checks, opening any image as RGB, the naive torchvision
transforms and DataLoaders (the reference pipeline), and per-epoch reseeding of any loader."""
import collections
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import datasets, transforms

from .demo import write_if_missing
from .utils import DATA_DOC, missing_data_advice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

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
    if not os.path.isdir(path) and not (write_if_missing(root) and os.path.isdir(path)):
        advice = missing_data_advice(root, f"{root}/{split}/<class>/<image files>")
        raise FileNotFoundError(f"missing folder {path!r}. {advice}")
    ignored = []
    with os.scandir(path) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    ignored += [e.path for e in entries if is_clutter(e.name)]
    classes = [e.name for e in entries if not is_clutter(e.name) and e.is_dir()]
    if not classes:
        raise FileNotFoundError(f"{path!r} holds no class folders: expected {path}/<class>/<image files>. "
                                f"See {DATA_DOC}.")
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
    """The write-ups' augmentation: random resized crop, flip, colour jitter, small affine, ImageNet normalisation."""
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
                                    f"See {DATA_DOC}.")
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


def make_loader(dataset, batch_size, *, train, num_workers=0, seed=0, pin_memory=None, channels_last=False,
                drop_last=False):
    """DataLoader with a seeded shuffle (re-seeded per epoch by `set_epoch`) and pinned memory when CUDA is used."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=train, num_workers=num_workers,
                        pin_memory=pin_memory, generator=generator,
                        drop_last=drop_last and len(dataset) >= batch_size, persistent_workers=False,
                        collate_fn=collate_channels_last if channels_last else None)
    loader.base_seed = seed
    return loader


def set_epoch(loader, epoch):
    """Make the loader's shuffle and augmentation for `epoch` depend only on (seed, epoch), for exact resume."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    elif isinstance(loader, DataLoader) and loader.generator is not None:
        loader.generator.manual_seed(getattr(loader, "base_seed", 0) * 1_000_003 + epoch)
