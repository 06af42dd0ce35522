"""lib.folders: ImageFolder checks (links, clutter, bad images, class mismatches), image modes, the flat
test folder."""
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from conftest import add_clutter, write_mode_zoo
from lib import folder_cache, folders


def test_demo_image_folders_read_with_imagefolder(demo_root):
    for name, n in (("imagenet-mini", 50), ("hw1", 100)):
        classes = folders.check_image_folders(demo_root / name)
        assert len(classes) == n
        ds = folders.image_folder(demo_root / name, "val", folders.imagenet_eval_transform(32))
        x, y = ds[0]
        assert x.shape == (3, 32, 32) and y == 0
    flat = folders.FlatImageFolder(demo_root / "hw1" / "test", folders.imagenet_eval_transform(32))
    assert flat.names == sorted(flat.names) and len(flat) == 200


def _tree(root, classes=("cat", "dog"), splits=("train", "val"), per_class=3, size=16):
    for split in splits:
        for k, c in enumerate(classes):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (60 * k, 20 * i, 100)).save(folder / f"{c}_{i}.jpg")
    return root


def _loaded(root, split, pipeline, tmp_path):
    """(file names, labels, classes) of one split as the chosen pipeline's loader will feed them."""
    if pipeline == "naive":
        dataset = folders.image_folder(root, split, None)
        return [os.path.basename(p) for p, _ in dataset.samples], list(dataset.targets), dataset.classes
    cache = folder_cache.FolderCache(root, split, kind="eval", size=16, cache_dir=tmp_path / "cache", progress=False)
    return [os.path.basename(p) for p, _ in cache.samples], cache.targets.tolist(), cache.classes


@pytest.mark.parametrize("pipeline", ["naive", "cached"])
def test_links_to_folders_inside_a_class_are_not_followed(tmp_path, pipeline):
    root = _tree(tmp_path / "set")
    os.symlink("..", root / "train" / "cat" / "up")  # would add every class's images to cat
    os.symlink(".", root / "train" / "cat" / "same")  # would repeat cat's images
    os.symlink(root / "val" / "dog" / "dog_0.jpg", root / "train" / "cat" / "linked.jpg")  # a file link is a file
    with pytest.warns(UserWarning, match=r"ignored 2 hidden or system entries and links to folders under .*train"):
        names, labels, classes = _loaded(root, "train", pipeline, tmp_path)
    assert classes == ["cat", "dog"] and labels == [0] * 4 + [1] * 3
    assert names == ["cat_0.jpg", "cat_1.jpg", "cat_2.jpg", "linked.jpg", "dog_0.jpg", "dog_1.jpg", "dog_2.jpg"]


def test_class_folder_linking_to_the_split_or_another_class_is_refused(tmp_path):
    root = _tree(tmp_path / "set")
    os.symlink(root / "train", root / "train" / "all")
    with pytest.raises(ValueError, match=r"train/all.*holds the split itself.*Remove the link"):
        folder_cache.folder_loaders(root, image_size=16, batch_size=2, pipeline="naive")
    (root / "train" / "all").unlink()
    os.symlink(root / "train" / "cat", root / "train" / "kitten")
    with pytest.raises(ValueError, match=r"train/kitten.*class folders \['cat'\]"):
        folders.check_image_folders(root, ("train",))
    # a class folder that is a link to images kept elsewhere is a normal way to assemble a set
    (root / "train" / "kitten").unlink()
    shutil.move(root / "train" / "dog", tmp_path / "dogs_elsewhere")
    os.symlink(tmp_path / "dogs_elsewhere", root / "train" / "dog")
    assert folders.image_folder(root, "train", None).targets == [0] * 3 + [1] * 3


@pytest.mark.parametrize("pipeline", ["naive", "cached"])
def test_hidden_and_system_clutter_is_ignored_and_counted(tmp_path, pipeline):
    root = _tree(tmp_path / "set")
    count = add_clutter(root / "train" / "cat") + add_clutter(root / "val")  # in a class and at the class level
    (root / "train" / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "train" / "__MACOSX" / "cat" / "._cat_1.jpg").write_bytes(b"\x00\x05\x16\x07")
    with pytest.warns(UserWarning) as caught:
        loaders, classes = folder_cache.folder_loaders(root, image_size=16, batch_size=4, pipeline=pipeline,
                                                       cache_dir=tmp_path / "cache", progress=False)
        assert sum(len(y) for _, y in loaders["train"]) == 6 and sum(len(y) for _, y in loaders["val"]) == 6
    assert classes == ["cat", "dog"] and count == 10
    said = " ".join(str(w.message) for w in caught)
    assert re.search(r"ignored 6 hidden or system entries .* under \S*train", said)  # 5 in cat/, __MACOSX
    assert re.search(r"ignored 5 hidden or system entries .* under \S*val", said)
    flat = root / "val" / "dog"
    add_clutter(flat)
    with pytest.warns(UserWarning, match="ignored 5 hidden"):
        test_set = folders.FlatImageFolder(flat, transforms.ToTensor(), decode_all=True)
    assert test_set.names == ["dog_0.jpg", "dog_1.jpg", "dog_2.jpg"] and len(test_set.ignored_files) == 5


def _gradient(low, high, dtype, shape=(6, 10)):
    return np.linspace(low, high, shape[0] * shape[1]).reshape(shape).astype(dtype)


def _reference_gray(values, low, high):
    """The faithful conversion: the values' scale (low..high) mapped linearly onto 0..255, rounded."""
    gray = np.rint((values.astype(np.float64) - low) * 255 / (high - low)).clip(0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _wide(path, array, mode=None):
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


WIDE_CASES = {  # name: (file, array written, expected mode on reading, scale low..high of the reference)
    "16-bit PNG": ("g.png", _gradient(0, 65535, np.uint16), "I;16", (0, 65535)),
    "16-bit big-endian TIFF": ("g.tif", _gradient(300, 60000, ">u2"), "I;16B", (0, 65535)),
    "32-bit int, 16-bit values": ("g.tif", _gradient(0, 50000, np.int32), "I", (0, 65535)),
    "32-bit int, wide values": ("g.tif", _gradient(-70000, 900000, np.int32), "I", (-70000, 900000)),
    "float in [0, 1]": ("g.tif", _gradient(0.1, 0.9, np.float32), "F", (0, 1)),
    "float, wide": ("g.tif", _gradient(-3.0, 1000.0, np.float32), "F", (-3.0, 1000.0)),
}


@pytest.mark.parametrize("case", WIDE_CASES, ids=list(WIDE_CASES))
def test_wide_grayscale_is_scaled_by_its_range_not_clipped(tmp_path, case):
    name, array, mode, (low, high) = WIDE_CASES[case]
    path = _wide(tmp_path / name, array)
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(np.asarray(folders.open_rgb(path)), _reference_gray(array, low, high))


def test_narrow_modes_match_pils_reference_conversion(tmp_path):
    """Modes whose 8-bit RGB PIL defines: bilevel, gray, palette, CMYK, YCbCr, LAB; alpha composed on white."""
    rgb = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    source = Image.fromarray(rgb)
    for mode, suffix in (("1", "png"), ("L", "png"), ("P", "png"), ("CMYK", "tif"), ("YCbCr", "tif"),
                         ("LAB", "tif")):
        image = source.convert(mode)
        image.save(tmp_path / f"x.{suffix}")
        assert Image.open(tmp_path / f"x.{suffix}").mode == mode
        np.testing.assert_array_equal(np.asarray(folders.open_rgb(tmp_path / f"x.{suffix}")),
                                      np.asarray(image.convert("RGB")), err_msg=mode)
    alpha = np.random.default_rng(1).integers(0, 256, (6, 10), dtype=np.uint8)
    for mode in ("RGBA", "LA"):
        image = Image.fromarray(np.dstack([rgb, alpha])).convert(mode)
        image.save(tmp_path / "a.png")
        on_white = Image.alpha_composite(Image.new("RGBA", image.size, (255,) * 4), image.convert("RGBA"))
        np.testing.assert_array_equal(np.asarray(folders.open_rgb(tmp_path / "a.png")),
                                      np.asarray(on_white.convert("RGB")), err_msg=mode)


@pytest.mark.parametrize("pipeline", ["naive", "cached canvas", "cached eval"])
def test_wide_grayscale_reaches_both_pipelines_faithfully(tmp_path, pipeline):
    """Flat images (so resizing keeps the value) of each wide mode, as the loaders store or return them."""
    folder = tmp_path / "set" / "train" / "gray"
    folder.mkdir(parents=True)
    shape = (24, 24)
    values = {"a16.png": (np.full(shape, 40000, np.uint16), 156), "b32.tif": (np.full(shape, 1000, np.int32), 4),
              "cf.tif": (np.full(shape, 0.25, np.float32), 64)}
    for name, (array, _) in values.items():
        Image.fromarray(array).save(folder / name)
    if pipeline == "naive":
        dataset = folders.image_folder(tmp_path / "set", "train", transforms.PILToTensor())
        got = [dataset[i][0][:, 5, 5].tolist() for i in range(len(dataset))]
    else:
        cache = folder_cache.FolderCache(tmp_path / "set", "train", kind=pipeline.split()[1], size=16,
                                         cache_dir=tmp_path / "cache", progress=False)
        got = [cache.images[i, 5, 5, :3].tolist() for i in range(len(cache))]
    assert got == [[v] * 3 for _, v in values.values()]  # PIL's own conversion: 255, 255, 0


def test_test_folder_checked_up_front_names_bad_images_or_skips_them(tmp_path):
    folder = tmp_path / "test"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8)).save(folder / f"{i}.jpg")
    (folder / "3.jpg").write_bytes(b"not a jpeg" * 5)
    assert len(folders.FlatImageFolder(folder, None)) == 4  # listing alone does not decode
    with pytest.raises(ValueError, match=r"1 of 4 images under .*test cannot be decoded \(first: 3\.jpg\).*"
                                         r"skip_bad_images=True"):
        folders.FlatImageFolder(folder, None, decode_all=True)
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        assert folders.FlatImageFolder(folder, None, skip_bad_images=True).names == ["0.jpg", "1.jpg", "2.jpg"]
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        folders.FlatImageFolder(folder, None)


def test_every_mode_is_read_as_rgb(tmp_path):
    expected = write_mode_zoo(tmp_path / "zoo")
    for name, red in expected.items():
        image = folders.open_rgb(tmp_path / "zoo" / name)
        assert image.mode == "RGB" and abs(np.asarray(image)[..., 0].mean() - red) < 6, name
    # and through image_folder, with an alpha channel: transparent pixels are white
    folder = tmp_path / "train" / "mixed"
    folder.mkdir(parents=True)
    Image.new("L", (8, 8), 100).save(folder / "gray.jpg")
    Image.new("LA", (8, 8), (100, 0)).save(folder / "gray_alpha.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(folder / "transparent.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).convert("P").save(folder / "palette.png")
    Image.new("RGB", (8, 8), (0, 128, 0)).convert("CMYK").save(folder / "cmyk.jpg")
    assert {Image.open(p).mode for p in folder.iterdir()} == {"L", "LA", "RGBA", "P", "CMYK"}
    dataset = folders.image_folder(tmp_path, "train", transforms.PILToTensor())
    pixels = {os.path.basename(path): dataset[i][0][:, 0, 0].tolist() for i, (path, _) in enumerate(dataset.samples)}
    assert all(dataset[i][0].shape == (3, 8, 8) for i in range(len(dataset)))
    assert pixels["gray.jpg"] == [100] * 3 and pixels["palette.png"] == [0, 0, 255]
    assert pixels["transparent.png"] == pixels["gray_alpha.png"] == [255] * 3  # transparent is white, not black
    r, g, b = pixels["cmyk.jpg"]
    assert r < 20 and 110 < g < 150 and b < 20


def _image_tree(root, classes=("cat", "dog"), splits=("train", "val"), per_class=2, size=16):
    for split in splits:
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (40 * i, 90, 160)).save(folder / f"{c}_{i}.jpg")
    return root


def test_empty_class_folder_is_named(tmp_path):
    root = _image_tree(tmp_path)
    for f in (root / "train" / "dog").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "train" / "dog")) + ".*remove the empty"):
        folder_cache.folder_loaders(root, image_size=16, batch_size=2)


def test_train_and_val_with_different_classes_are_refused(tmp_path):
    root = _image_tree(tmp_path)
    _image_tree(tmp_path, classes=("bird",), splits=("val",))
    with pytest.raises(ValueError, match=r"only in val: \['bird'\].*same class folders"):
        folder_cache.folder_loaders(root, image_size=16, batch_size=2)


def _break_images(folder):
    """A truncated JPEG and a file that is no image at all, among good ones."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "truncated.jpg", quality=95)
    raw = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (folder / "garbage.jpg").write_bytes(b"not a jpeg at all" * 10)


@pytest.mark.parametrize("pipeline", ["naive", "cached"])
def test_corrupt_jpeg_is_an_error_naming_it_by_default(tmp_path, pipeline):
    root = _image_tree(tmp_path)
    _break_images(root / "train" / "cat")
    # the cached pipeline decodes everything while building its cache, the naive one when a batch is read
    with pytest.raises(ValueError, match=r"cannot read image .*(truncated|garbage)\.jpg.*skip_bad_images=True"):
        loaders, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=8, pipeline=pipeline,
                                                 cache_dir=tmp_path / "cache", progress=False)
        list(loaders["train"])
    _break_images(root / "val" / "dog")
    flat = folders.FlatImageFolder(root / "val" / "dog", transforms.ToTensor())
    with pytest.raises(ValueError, match=r"garbage\.jpg"):
        [flat[i] for i in range(len(flat))]


def test_skip_bad_images_skips_them_and_says_how_many(tmp_path):
    root = _image_tree(tmp_path)
    _break_images(root / "train" / "cat")
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 images under .*train"):
        cached, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=8, skip_bad_images=True,
                                                cache_dir=tmp_path / "cache", progress=False)
    assert len(cached["train"].cache.samples) == 4 and sum(len(y) for _, y in cached["train"]) == 4
    with pytest.warns(UserWarning, match=r"skipped 2 of 6 images under .*train"):
        loaders, _ = folder_cache.folder_loaders(root, image_size=16, batch_size=8, skip_bad_images=True,
                                                 pipeline="naive")
    dataset = loaders["train"].dataset
    assert len(dataset) == 4 and sorted(os.path.basename(p) for p in dataset.skipped_images) == \
        ["garbage.jpg", "truncated.jpg"]
    assert sum(len(y) for _, y in loaders["train"]) == 4 and dataset.targets == [0, 0, 1, 1]
    assert loaders["val"].dataset.skipped_images == []
    _break_images(root / "val" / "dog")
    with pytest.warns(UserWarning, match="skipped 2 of 4"):
        flat = folders.FlatImageFolder(root / "val" / "dog", transforms.ToTensor(), skip_bad_images=True)
    assert flat.names == ["dog_0.jpg", "dog_1.jpg"] and len(flat.skipped_images) == 2
