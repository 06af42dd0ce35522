"""The decoded-once cache of an ImageFolder split (a memory-mapped uint8 array) and its batch loader, which
augments whole batches with tensor ops; `folder_loaders` picks this fast pipeline or the naive reference one."""
import collections
import contextlib
import hashlib
import itertools
import json
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import augment, files, utils
from .folders import (IMAGENET_MEAN, IMAGENET_STD, check_image_folders, image_folder, imagenet_eval_geometry,
                      imagenet_eval_transform, imagenet_train_transform, make_loader, open_rgb)
from .progress import tqdm

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
                array[i], original_sizes[i] = _decode_for_cache(self.samples[i][0], self.kind, self.size)  # noqa: F821 (del below)

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
        files.atomic_write_json(meta_path, meta)
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
    device: the training device. Batches are always made on the CPU, by the worker threads, because a GPU fed
    image by image waits on a dozen small copies per batch; for CUDA (or wherever CUDA is present) they come in
    pinned memory, so the training loop's non_blocking copy overlaps the previous step and the host never waits.
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
        self.pin_memory = (self.device.type == "cuda" or torch.cuda.is_available()) if pin_memory is None \
            else pin_memory
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._buffers = {}  # scratch tensors of the iterating thread, reused from batch to batch
        self._outputs, self._lock = [], threading.Lock()
        self._threads = None  # the worker threads, started on first use

    def set_epoch(self, epoch):
        """Choose the epoch whose shuffle and augmentation the next iteration replays."""
        self.epoch = epoch

    def __len__(self):
        n = len(self.cache)
        # a split smaller than one batch keeps its one partial batch
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

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
        """The stored uint8 images of `rows` (N x H x W x C) from the memory map."""
        host = torch.empty((len(rows),) + self.cache.images.shape[1:], dtype=torch.uint8)
        np.take(self.cache.images, rows.numpy(), axis=0, out=host.numpy())
        return host

    def _output(self, n, pin):
        """A batch tensor N x 3 x size x size: pinned when the training loop will copy it to a GPU; on the CPU a
        reused one that nothing outside the loader refers to any more, else a fresh one (kept for reuse)."""
        shape = (n, 3, self.image_size, self.image_size)
        if pin:  # torch's pinned allocator caches blocks and reuses one only once its copy to the GPU has run
            return torch.empty(shape, pin_memory=True, memory_format=self.memory_format)
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
        n, size = len(rows), self.image_size
        out = self._output(n, pin)
        row_list = rows.tolist()
        for start in range(0, n, self.CHUNK):
            part = range(start, min(n, start + self.CHUNK))
            resized = augment.scratch(buffers, "resized", (len(part), size, size, 4), torch.uint8)
            for k in part:
                y, x, h, w = boxes[k]  # only the crop's window is read from the memory map
                window = torch.from_numpy(np.array(self.cache.images[row_list[k], y:y + h, x:x + w]))
                augment.resize_into(window, resized[k - start])
            augment.finish_train_batch(resized, {key: v[part.start:part.stop] for key, v in p.items()}, self.mean,
                                       self.std, out[part.start:part.stop], buffers)
        labels = self.cache.targets[rows]
        return out, (labels.pin_memory() if pin else labels)

    def make_batch(self, order, params, i, buffers=None):
        """Batch `i` of an epoch plan: (normalised float images N x 3 x size x size, int64 labels)."""
        pin = self.pin_memory
        if self.train:
            return self.augmented_batch(order, params, i, pin, self._buffers if buffers is None else buffers)
        rows = order[i * self.batch_size:(i + 1) * self.batch_size]
        images = augment.normalize(self._stored(rows).permute(0, 3, 1, 2), self.mean, self.std,
                                   out=self._output(len(rows), pin))
        labels = self.cache.targets[rows]
        return images, (labels.pin_memory() if pin else labels)

    def __iter__(self):
        order, params = self.epoch_plan()
        if self.num_workers > 0 and self.train:
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
                   cache_size=None, device="cpu", progress=True, skip_bad_images=False, channels_last=False,
                   drop_last=False):
    """Train and eval loaders for an ImageFolder set (root/train, root/val); returns (loaders dict, classes).

    pipeline="cached" (the default, fast): every image is decoded once into a memory-mapped cache under cache_dir
    (a training canvas of cache_size pixels, default `default_canvas_size(image_size)`; evaluation centre crops),
    then batches are augmented with tensor ops on `device` (see CachedFolderLoader), by `num_workers` worker
    threads on the CPU. pipeline="naive" is the reference: torchvision ImageFolder with per-sample PIL
    transforms in `num_workers` DataLoader processes. Both draw from the same augmentation distributions.
    skip_bad_images=True leaves out (with a warning giving the count) images that cannot be decoded.
    channels_last=True gives every batch that memory format (the model's; see lib.precision). drop_last=True
    leaves out the last partial training batch (for torch.compile: a new batch size means compiling again).
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
                                         channels_last=channels_last, drop_last=drop_last and is_train)
            continue
        size = (cache_size or default_canvas_size(image_size)) if is_train else image_size
        cache = FolderCache(root, split, kind="canvas" if is_train else "eval", size=size, cache_dir=cache_dir,
                            progress=progress, skip_bad_images=skip_bad_images)
        loaders[split] = CachedFolderLoader(cache, batch_size, train=is_train, image_size=image_size, seed=seed,
                                            crop_scale=crop_scale, jitter=jitter, affine_degrees=affine_degrees,
                                            num_workers=num_workers, device=device, channels_last=channels_last,
                                            drop_last=drop_last and is_train)
    return loaders, classes
