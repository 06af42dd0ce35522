"""lib.folder_cache: the decoded-once cache yields ImageFolder's labels and pixels, is rebuilt when a
source changes, and its epochs are reproducible."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from lib import augment, folder_cache, folders


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache folder for the tests that read the demo ImageNet-mini, so each cache is built once."""
    return tmp_path_factory.mktemp("cache")


def test_train_batches_have_the_references_shape_range_and_spread(demo_root, cache_dir):
    loaders, _ = folder_cache.folder_loaders(demo_root / "imagenet-mini", image_size=48, batch_size=200, seed=0,
                                             cache_dir=cache_dir, progress=False, splits=("train",))
    order, params = loaders["train"].epoch_plan()
    ours, labels = loaders["train"].make_batch(order, params, 0)
    reference = folders.image_folder(demo_root / "imagenet-mini", "train", folders.imagenet_train_transform(48))
    torch.manual_seed(0)
    theirs = torch.stack([reference[i][0] for i in order[:200].tolist()])  # the same images, other random draws
    assert labels.tolist() == [reference.targets[i] for i in order[:200].tolist()]
    low = torch.tensor([-m / s for m, s in zip(folders.IMAGENET_MEAN, folders.IMAGENET_STD)]).view(1, 3, 1, 1)
    high = torch.tensor([(1 - m) / s for m, s in zip(folders.IMAGENET_MEAN, folders.IMAGENET_STD)]).view(1, 3, 1, 1)
    for x in (ours, theirs):
        assert x.shape == (200, 3, 48, 48) and x.dtype == torch.float32
        assert (x >= low - 1e-5).all() and (x <= high + 1e-5).all()
    # per-channel means and spreads agree within the noise of 200 random crops (about 0.03 here)
    assert torch.allclose(ours.mean((0, 2, 3)), theirs.mean((0, 2, 3)), atol=0.1)
    assert torch.allclose(ours.std((0, 2, 3)), theirs.std((0, 2, 3)), rtol=0.05)
    # the black fill of the rotation covers a similar share of the pixels
    fill_share = [((x - low).abs() < 1e-4).all(1).float().mean().item() for x in (ours, theirs)]
    assert abs(fill_share[0] - fill_share[1]) < 0.02 and fill_share[0] > 0.01, fill_share


def test_cached_eval_equals_imagefolder(demo_root, cache_dir):
    root = demo_root / "imagenet-mini"
    cached, classes = folder_cache.folder_loaders(root, image_size=48, batch_size=100, cache_dir=cache_dir,
                                                  progress=False, splits=("val",))
    naive, naive_classes = folder_cache.folder_loaders(root, image_size=48, batch_size=100, pipeline="naive",
                                                       splits=("val",))
    assert classes == naive_classes and cached["val"].dataset.samples == naive["val"].dataset.samples
    for (x, y), (x_ref, y_ref) in zip(cached["val"], naive["val"]):
        assert torch.equal(y, y_ref)
        assert (x - x_ref).abs().max() < 1e-4  # the same PIL resize and crop: equal up to float rounding


def test_cached_training_crop_of_the_whole_image_matches_a_resize(demo_root, cache_dir):
    """With only the flip left random, a training batch is the whole image resized: the canvas maps correctly."""
    cache = folder_cache.FolderCache(demo_root / "imagenet-mini", "train", kind="canvas",
                                     size=folder_cache.default_canvas_size(48), cache_dir=cache_dir, progress=False)
    assert cache.size == 64  # the demo images are 64 px: the canvas does not store upsampled pixels
    loader = folder_cache.CachedFolderLoader(cache, 40, train=True, image_size=48, crop_scale=(1, 1), crop_ratio=(1, 1),
                                             jitter=0.0, affine_degrees=0, translate=0.0)
    order, params = loader.epoch_plan()
    x, y = loader.make_batch(order, params, 0)
    reference = transforms.Compose([transforms.Resize((48, 48)), transforms.ToTensor(),
                                    transforms.Normalize(folders.IMAGENET_MEAN, folders.IMAGENET_STD)])
    std = torch.tensor(folders.IMAGENET_STD).view(3, 1, 1)
    for k, row in enumerate(order[:40].tolist()):
        expected = reference(folders.open_rgb(cache.samples[row][0]))
        if params["flip"][k]:
            expected = expected.flip(-1)
        assert y[k] == cache.targets[row]
        assert ((x[k] - expected) * std).abs().mean() < 0.02  # two resizes instead of one: close, not equal


def test_gpu_branch_of_the_cached_loader_agrees_with_the_cpu_branch(demo_root, cache_dir, monkeypatch):
    """The GPU code path (whole stored images, float resizes, the batch in one piece) run on the CPU gives the same
    batch up to the rounding of the resized crops."""
    cache = folder_cache.FolderCache(demo_root / "imagenet-mini", "train", kind="canvas",
                                     size=folder_cache.default_canvas_size(48), cache_dir=cache_dir, progress=False)
    loader = folder_cache.CachedFolderLoader(cache, 32, train=True, image_size=48)
    order, params = loader.epoch_plan()
    windows, labels = loader.make_batch(order, params, 1)
    loader.windows_from_map, loader.CHUNK = False, 32
    uint8_resize = augment.resize_into
    monkeypatch.setattr(augment, "resize_into", lambda window, out: uint8_resize(window.float(), out))  # as on a GPU
    whole, same_labels = loader.make_batch(order, params, 1)
    std = torch.tensor(folders.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.equal(labels, same_labels)
    assert ((windows - whole) * std * 255).abs().max() <= 3.01  # two roundings of the same resize, jittered
    assert ((windows - whole) * std * 255).abs().mean() < 0.2


def _small_tree(tmp_path):
    root = tmp_path / "set"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            os.makedirs(root / split / c)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(root / split / c / f"{i}.jpg")
    return root


def test_cache_is_reused_and_rebuilt_when_a_source_changes(tmp_path):
    root, cache_dir = _small_tree(tmp_path), tmp_path / "cache"
    first = folder_cache.FolderCache(root, "val", kind="eval", size=16, cache_dir=cache_dir, progress=False)
    built_at = os.stat(first.path).st_mtime_ns
    again = folder_cache.FolderCache(root, "val", kind="eval", size=16, cache_dir=cache_dir, progress=False)
    assert again.path == first.path and os.stat(again.path).st_mtime_ns == built_at  # reused, not rebuilt

    changed = root / "val" / "b" / "1.jpg"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(changed)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = folder_cache.FolderCache(root, "val", kind="eval", size=16, cache_dir=cache_dir, progress=False)
    assert rebuilt.path != first.path and not os.path.exists(first.path)  # the stale cache was removed
    image, label = rebuilt[4]
    assert label == 1 and (image[0].float().mean() > 240) and (image[1:].float().mean() < 15)

    shutil.copy(changed, root / "val" / "a" / "9.jpg")
    grown = folder_cache.FolderCache(root, "val", kind="eval", size=16, cache_dir=cache_dir, progress=False)
    assert len(grown) == 7 and grown.path != rebuilt.path
    assert sorted(os.listdir(cache_dir)) == sorted(os.path.basename(grown.path)[:-4] + e for e in (".npy", ".json"))


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    root, cache_dir = _small_tree(tmp_path), tmp_path / "cache"
    real = folder_cache._decode_for_cache

    def failing(path, kind, size):
        if path.endswith("2.jpg"):
            raise KeyboardInterrupt
        return real(path, kind, size)

    monkeypatch.setattr(folder_cache, "_decode_for_cache", failing)
    with pytest.raises(KeyboardInterrupt):
        folder_cache.FolderCache(root, "train", kind="canvas", size=20, cache_dir=cache_dir, progress=False)
    assert os.listdir(cache_dir) == []


def test_bad_image_in_cache_build_names_the_file(tmp_path):
    root = _small_tree(tmp_path)
    (root / "train" / "a" / "0.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="0.jpg"):
        folder_cache.FolderCache(root, "train", kind="canvas", size=20, cache_dir=tmp_path / "cache", progress=False)


def test_cached_epochs_are_reproducible_with_any_number_of_workers(tmp_path):
    root = _small_tree(tmp_path)
    loaders, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=4, seed=5, cache_dir=tmp_path / "c",
                                             progress=False)
    threaded, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=4, seed=5, cache_dir=tmp_path / "c",
                                              num_workers=2, progress=False)
    batches = {}
    for name, loader in (("plain", loaders["train"]), ("workers", threaded["train"])):
        for epoch in (3, 4):
            loader.set_epoch(epoch)
            batches[name, epoch] = torch.cat([x for x, _ in loader])
    threaded["train"].set_epoch(5)
    next(iter(threaded["train"]))  # an epoch cut short (max_steps_per_epoch) does not disturb the next one
    threaded["train"].set_epoch(4)
    assert torch.equal(torch.cat([x for x, _ in threaded["train"]]), batches["plain", 4])
    assert torch.equal(batches["plain", 3], batches["workers", 3])
    assert torch.equal(batches["plain", 4], batches["workers", 4])
    assert not torch.equal(batches["plain", 3], batches["plain", 4])


def test_unknown_pipeline_is_refused(demo_root):
    with pytest.raises(ValueError, match="'cached'.*'naive'"):
        folder_cache.folder_loaders(demo_root / "imagenet-mini", image_size=32, batch_size=4, pipeline="fast")
