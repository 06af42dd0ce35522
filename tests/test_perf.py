"""The fast paths keep the reference's meaning: batch augmentations draw from torchvision's distributions, the
decoded-once folder cache yields ImageFolder's labels and pixels and is rebuilt when a source file changes."""
import functools
import os
import shutil

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision import transforms

from lib import augment, cifar, folder_cache, folders, train


# ---------------------------------------------------------------- augmentation parameters

def _reference_boxes(height, width, n, scale, ratio=(3 / 4, 4 / 3)):
    torch.manual_seed(0)
    image = Image.new("RGB", (width, height))
    return torch.tensor([transforms.RandomResizedCrop.get_params(image, list(scale), list(ratio))
                         for _ in range(n)], dtype=torch.float64)


@pytest.mark.parametrize("scale", [(0.08, 1.0), (0.8, 1.0)])
def test_crop_boxes_follow_random_resized_crop(scale):
    height, width, n = 375, 500, 4000
    ours = torch.stack(augment.random_resized_crop_boxes(torch.full((n,), height), torch.full((n,), width), scale,
                                                          generator=torch.Generator().manual_seed(1)), 1).double()
    reference = _reference_boxes(height, width, n, scale)
    for boxes in (ours, reference):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    stats = {}
    for name, (top, left, h, w) in (("ours", ours.T), ("reference", reference.T)):
        area = h * w / (height * width)
        offset_y = torch.where(h < height, top / (height - h).clamp(min=1), torch.full_like(top, 0.5))
        offset_x = torch.where(w < width, left / (width - w).clamp(min=1), torch.full_like(left, 0.5))
        stats[name] = torch.stack([area.quantile(q) for q in (0.1, 0.5, 0.9)] +
                                  [(w / h).log().mean(), offset_y.mean(), offset_x.mean(), area.min(), area.max()])
    # quantiles of area, mean log aspect, mean relative offsets and the extremes agree within sampling noise
    assert torch.allclose(stats["ours"], stats["reference"], atol=0.03), stats
    assert stats["ours"][-2] >= scale[0] * 0.95 and stats["ours"][-1] <= 1.0


def test_crop_fallback_is_torchvisions():
    """An image no attempt fits gets torchvision's deterministic centred fallback."""
    for height, width in ((1, 1000), (1000, 1), (3, 5)):
        reference = transforms.RandomResizedCrop.get_params(Image.new("RGB", (width, height)), [0.9, 1.0],
                                                            [3 / 4, 4 / 3])
        ours = augment.random_resized_crop_boxes(torch.tensor([height]), torch.tensor([width]), (0.9, 1.0),
                                                 generator=torch.Generator().manual_seed(0))
        if (height, width) != (3, 5):  # (3, 5) can fit by chance; the others never can
            assert tuple(int(t) for t in ours) == tuple(reference)


def test_flip_jitter_and_affine_parameters_are_in_the_references_ranges():
    n, size = 4000, 224
    p = augment.sample_train_params(torch.full((n,), 375), torch.full((n,), 500), torch.Generator().manual_seed(2),
                                    out_size=size, jitter=0.2, degrees=10, translate=0.1)
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.03
    for key in ("brightness", "contrast", "saturation"):
        assert p[key].min() >= 0.8 and p[key].max() <= 1.2 and abs(p[key].mean().item() - 1) < 0.01
    assert (p["order"].sort(1).values == torch.arange(3)).all()
    assert len({tuple(o) for o in p["order"].tolist()}) == 6  # every order of the three adjustments occurs
    assert p["angle"].abs().max() <= 10 and p["angle"].abs().max() > 9.5
    max_shift = round(0.1 * size)
    for key in ("tx", "ty"):
        assert (p[key] == p[key].round()).all() and p[key].abs().max() == max_shift


# ---------------------------------------------------------------- augmentation pixels

def test_flip_affine_identity_flip_rotation_and_shift():
    x = torch.arange(1, 2 * 3 * 6 * 6 + 1, dtype=torch.float32).view(2, 3, 6, 6)
    zero, no = torch.zeros(2), torch.zeros(2, dtype=torch.bool)
    assert torch.equal(augment.flip_affine(x, no, zero, zero, zero), x)
    flipped = augment.flip_affine(x, torch.tensor([True, False]), zero, zero, zero)
    assert torch.equal(flipped[0], x[0].flip(-1)) and torch.equal(flipped[1], x[1])
    quarter = augment.flip_affine(x, no, torch.full((2,), 90.0), zero, zero)
    assert any(torch.equal(quarter, torch.rot90(x, k, (2, 3))) for k in (1, 3))
    shifted = augment.flip_affine(x, no, zero, torch.full((2,), 2.0), torch.tensor([0.0, -1.0]))
    assert torch.equal(shifted[0, :, :, 2:], x[0, :, :, :-2]) and (shifted[0, :, :, :2] == 0).all()
    assert torch.equal(shifted[1, :, :-1, 2:], x[1, :, 1:, :-2]) and (shifted[1, :, -1] == 0).all()
    # flip first, then shift: the flipped image moves right
    both = augment.flip_affine(x, torch.tensor([True, True]), zero, torch.full((2,), 2.0), zero)
    assert torch.equal(both[..., 2:], x.flip(-1)[..., :-2])


def test_flip_affine_agrees_with_torchs_affine_grid_and_grid_sample():
    """The gather index equals what F.affine_grid + F.grid_sample(nearest, zeros) sample, but at rounding ties."""
    n, h, w = 32, 40, 56
    generator = torch.Generator().manual_seed(4)
    x = torch.rand(n, 3, h, w, generator=generator)
    flip, angle = torch.rand(n, generator=generator) < 0.5, 20 * torch.rand(n, generator=generator) - 10
    tx, ty = torch.randint(-5, 6, (n,), generator=generator).float(), torch.randint(-4, 5, (n,), generator=generator)
    theta = angle * (torch.pi / 180)
    cos, sin, sign = torch.cos(theta), torch.sin(theta), 1 - 2 * flip.float()
    ox, oy = -(cos * tx + sin * ty) * (2 / w), -(-sin * tx + cos * ty) * (2 / h)
    matrix = torch.stack([torch.stack([sign * cos, sign * sin * h / w, sign * ox], 1),
                          torch.stack([-sin * w / h, cos, oy], 1)], 1)
    grid = torch.nn.functional.affine_grid(matrix, (n, 3, h, w), align_corners=False)
    reference = torch.nn.functional.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    ours = augment.flip_affine(x, flip, angle, tx, ty)
    assert (ours == reference).float().mean() > 0.999


def test_fused_batch_path_is_flip_affine_then_normalisation():
    """finish_train_batch moves RGBX words through the same index; with the jitter at identity it equals
    flip_affine of the image followed by normalisation, the fill included."""
    generator = torch.Generator().manual_seed(5)
    rgb = torch.randint(0, 256, (4, 10, 10, 3), dtype=torch.uint8, generator=generator)
    resized = torch.cat([rgb, torch.full((4, 10, 10, 1), 255, dtype=torch.uint8)], 3)
    ones = torch.ones(4)
    params = {"flip": torch.tensor([True, False, True, False]), "angle": torch.tensor([7.0, -9.0, 0.0, 3.0]),
              "tx": torch.tensor([3.0, -1.0, 0.0, 2.0]), "ty": torch.tensor([-2.0, 1.0, 0.0, 0.0]),
              "brightness": ones, "contrast": ones, "saturation": ones, "order": torch.tensor([[0, 1, 2]] * 4)}
    out = torch.empty(4, 3, 10, 10)
    augment.finish_train_batch(resized, params, folders.IMAGENET_MEAN, folders.IMAGENET_STD, out, {})
    moved = augment.flip_affine(rgb.permute(0, 3, 1, 2).float() / 255, params["flip"], params["angle"],
                                params["tx"], params["ty"])
    expected = augment.normalize(moved, folders.IMAGENET_MEAN, folders.IMAGENET_STD, max_value=1)
    assert torch.allclose(out, expected, atol=1e-5)
    assert (moved == 0).all(1).any()  # the rotation did bring in fill


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_color_jitter_equals_torchvisions_adjustments(order):
    """The batch path's colour matrix (no flip, rotation or shift here) against torchvision's three adjustments in
    the drawn order, then normalisation."""
    generator = torch.Generator().manual_seed(3)
    images = 0.3 + 0.25 * torch.rand(4, 3, 8, 8, generator=generator)  # no step saturates, so no clamp differs
    factors = 0.8 + 0.4 * torch.rand(4, 3, generator=generator)
    zeros = torch.zeros(4)
    params = {"brightness": factors[:, 0], "contrast": factors[:, 1], "saturation": factors[:, 2],
              "order": torch.tensor([order] * 4), "flip": zeros.bool(), "angle": zeros, "tx": zeros, "ty": zeros}
    rgb = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    resized = torch.cat([rgb, torch.full((4, 8, 8, 1), 255, dtype=torch.uint8)], 3).contiguous()
    ours = augment.finish_train_batch(resized, params, folders.IMAGENET_MEAN, folders.IMAGENET_STD,
                                      torch.empty(4, 3, 8, 8))
    images = (images * 255).round() / 255
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for k in range(4):
        expected = images[k]
        for op in order:
            expected = ops[op](expected, float(factors[k, op]))
        expected = augment.normalize(expected[None], folders.IMAGENET_MEAN, folders.IMAGENET_STD, max_value=1)[0]
        assert torch.allclose(ours[k], expected, atol=1e-4)


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


# ---------------------------------------------------------------- the folder cache

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


# ---------------------------------------------------------------- compiled training

def test_checkpoint_of_a_compiled_run_loads_into_a_plain_model(tmp_path, monkeypatch):
    """fit(compile=True) saves the plain model's weights (no '_orig_mod.' prefix). The eager backend keeps the
    test fast; the inductor path is exercised by `python -m bench.train_step --cpu-compile`."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch.manual_seed(0)

    def tiny():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))

    model = tiny()
    images, labels = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (32,))
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True, crop_padding=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    train.fit(model, loader, loader, epochs=1, optimizer=optimizer, checkpoint_dir=tmp_path, compile=True,
              progress=False)
    state = train.load_checkpoint(tmp_path / "last.pt")["model"]
    assert not any(k.startswith("_orig_mod") for k in state)
    plain = tiny()
    train.load_model_state(plain, state)
    x = augment.normalize(images, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD)
    assert torch.allclose(plain.eval()(x), model.eval()(x))
