"""Issue 17: hostile but realistic inputs (links, clutter, wide image modes, bad labels and ids, edge parameters) end
in a clear error before training or in a correct result."""
import concurrent.futures
import hashlib
import os
import pickle
import re
import shutil

import numpy as np
import papermill
import pytest
import torch
import yaml
from PIL import Image
from torchvision import transforms

from conftest import ROOT
from lib import cifar, config, folder_cache, folders, predict, train

NB = {stem: ROOT / "notebooks" / f"{stem}.ipynb" for stem in
      ("01_two_layer_imagenet_mini", "02_resnet50_cbam_100class", "03_cifar10_resnet")}


def _tree(root, classes=("cat", "dog"), splits=("train", "val"), per_class=3, size=16):
    for split in splits:
        for k, c in enumerate(classes):
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (60 * k, 20 * i, 100)).save(folder / f"{c}_{i}.jpg")
    return root


def _add_clutter(folder):
    """What macOS, Windows and Jupyter leave in a folder: none of it an image, some of it named like one."""
    (folder / "._cat_0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "desktop.ini").write_text("[.ShellClassInfo]")
    (folder / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (16, 16)).save(folder / ".ipynb_checkpoints" / "copy.jpg")
    return 5


def _loaded(root, split, pipeline, tmp_path):
    """(file names, labels, classes) of one split as the chosen pipeline's loader will feed them."""
    if pipeline == "naive":
        dataset = folders.image_folder(root, split, None)
        return [os.path.basename(p) for p, _ in dataset.samples], list(dataset.targets), dataset.classes
    cache = folder_cache.FolderCache(root, split, kind="eval", size=16, cache_dir=tmp_path / "cache", progress=False)
    return [os.path.basename(p) for p, _ in cache.samples], cache.targets.tolist(), cache.classes


# ---------------------------------------------------------------- 3. links and clutter in folder data sets

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
    count = _add_clutter(root / "train" / "cat") + _add_clutter(root / "val")  # in a class and at the class level
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
    _add_clutter(flat)
    with pytest.warns(UserWarning, match="ignored 5 hidden"):
        test_set = folders.FlatImageFolder(flat, transforms.ToTensor(), decode_all=True)
    assert test_set.names == ["dog_0.jpg", "dog_1.jpg", "dog_2.jpg"] and len(test_set.ignored_files) == 5


# ---------------------------------------------------------------- 4. every image mode as faithful 8-bit RGB

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


# ---------------------------------------------------------------- 5. inputs checked before training

def _cifar_copy(demo_root, tmp_path):
    """A CIFAR folder of links to the demo batches, so one file can be replaced."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for f in (demo_root / "cifar10" / "cifar-10-batches-py").iterdir():
        (folder / f.name).symlink_to(f)
    return folder


def _relabel(folder, name, change):
    """Replace batch `name` by a copy whose labels `change(labels)` edits in place."""
    batch = cifar.safe_unpickle(folder / name)
    labels = np.array(batch["labels"])
    change(labels)
    batch["labels"] = labels.tolist()
    (folder / name).unlink()
    (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


@pytest.mark.parametrize("name, change, expected", [
    ("data_batch_2", lambda y: y.__setitem__(0, 10),
     r"data_batch_2: 1 of \d+ labels are outside 0\.\.9 \(first: \[10\]\)"),
    ("data_batch_4", lambda y: y.__setitem__(slice(0, None, 10), 10), r"data_batch_4: \d+ of \d+ labels are outside"),
    ("test_batch", lambda y: y.__setitem__(3, -1), r"test_batch: 1 of \d+ labels are outside 0\.\.9 \(first: \[-1\]\)"),
], ids=["one", "a tenth", "test batch"])
def test_cifar_labels_out_of_range_name_the_file_and_the_count(demo_root, tmp_path, name, change, expected):
    folder = _cifar_copy(demo_root, tmp_path)
    _relabel(folder, name, change)
    with pytest.raises(ValueError, match=expected + ".*download it again"):
        cifar.load_cifar10(tmp_path)


@pytest.mark.parametrize("ids, expected", [
    (np.array([0, 1, 2, 1]), r"1 ids occur more than once \(first: \[1\]\)"),
    (np.array(["a", "b", "c", "d"]), r"b'ids' should be integers"),
], ids=["duplicated", "strings"])
def test_unlabeled_pickle_with_unusable_ids_is_refused(tmp_path, ids, expected):
    path = tmp_path / "cifar_test_nolabels.pkl"
    path.write_bytes(pickle.dumps({b"data": np.zeros((4, 32, 32, 3), np.uint8), b"ids": ids}, protocol=4))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + expected):
        cifar.load_unlabeled_cifar(path)


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


def test_settings_used_only_after_training_may_change_on_resume(tmp_path):
    images, labels = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 10, (16,))
    loader = cifar.TensorBatchLoader(images, labels, 8, train=True, crop_padding=0)

    def fit(epochs, **cfg):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
        return train.fit(model, loader, loader, epochs=epochs, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                         checkpoint_dir=tmp_path, cfg={"lr": 0.1, **cfg}, resume=True, progress=False)

    fit(1, test_pickle="bad.pkl", test_dir="", test_labels="")
    history = fit(2, test_pickle="fixed.pkl", test_dir="data/hw1/test2", test_labels="labels.csv")
    assert len(history["epoch"]) == 2


def test_val_size_must_leave_validation_and_training_images():
    x, y = torch.zeros(10, 3, 2, 2), torch.arange(10)
    for bad in (0, 10, 0.01):
        with pytest.raises(ValueError, match=rf"val_size={bad} gives \d+ validation images out of 10: choose from "
                                             r"1 to 9"):
            cifar.split_train_val(x, y, bad, 0)
    assert len(cifar.split_train_val(x, y, 1, 0)[2]) == 1


def test_parameter_ranges_give_one_line_each():
    namespace = {"batch_size": 0, "epochs": -1, "lr": 0.0, "dropout": 1.5, "crop_scale": [0.0, 1.0],
                 "max_steps_per_epoch": None, "val_size": 5000}
    annotations = {"batch_size": int, "epochs": int, "lr": float, "dropout": float, "crop_scale": list,
                   "max_steps_per_epoch": type(None) | int, "val_size": int}
    ranges = {"batch_size": ">= 1", "epochs": ">= 1", "lr": "> 0", "dropout": "[0, 1)", "crop_scale": "(0, 1]",
              "max_steps_per_epoch": ">= 1", "val_size": ">= 1"}
    with pytest.raises(ValueError) as err:
        config.build_cfg(namespace, annotations, ranges)
    lines = str(err.value).splitlines()
    assert lines[1:6] == ["  parameter 'batch_size' = 0 should be >= 1", "  parameter 'epochs' = -1 should be >= 1",
                          "  parameter 'lr' = 0.0 should be > 0", "  parameter 'dropout' = 1.5 should be in [0, 1)",
                          "  parameter 'crop_scale' = [0.0, 1.0]: 0.0 breaks the rule, every element should be "
                          "in (0, 1]"]
    assert len(lines) == 7 and "Fix the value" in lines[-1]
    fine = dict(namespace, batch_size=1, epochs=1, lr=1e-3, dropout=0.0, crop_scale=[0.08, 1.0])
    assert config.build_cfg(fine, annotations, ranges)["lr"] == 1e-3
    with pytest.raises(ValueError, match="a range is declared for 'epoch', which is no parameter"):
        config.build_cfg(fine, annotations, {"epoch": ">= 1"})


# ---------------------------------------------------------------- 6. the predictor's command line

def test_predict_command_line_offers_the_skip_its_error_advises(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "test"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / f"{i}.png")
    (folder / "1b.jpg").write_bytes(b"broken" * 10)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    monkeypatch.setattr(predict, "load_classifier", lambda path, device: (model, ["a", "b"], 8))
    args = ["--checkpoint", "model.pt", "--test-dir", str(folder), "--out", str(tmp_path / "p.csv"), "--device", "cpu"]
    with pytest.raises(ValueError, match=r"1b\.jpg.*--skip-bad-images"):
        predict.main(args)
    assert not (tmp_path / "p.csv").exists()
    with pytest.warns(UserWarning, match="skipped 1 of 4"):
        predict.main(args + ["--skip-bad-images"])
    assert [r.split(",")[0] for r in (tmp_path / "p.csv").read_text().splitlines()] == \
        ["image_name", "0.png", "1.png", "2.png"]
    assert "3 predictions" in capsys.readouterr().out


# ---------------------------------------------------------------- 3, 5, 6, 7 where they were seen: papermill runs

def _papermill(stem, out, parameters):
    """Run a notebook with its smoke parameters plus `parameters`; return the PapermillExecutionError (or None)."""
    params = yaml.safe_load((ROOT / "configs" / stem / "smoke.yaml").read_text())
    params.update(out_dir=str(out / "run"), **parameters)
    try:
        papermill.execute_notebook(str(NB[stem]), str(out / "out.ipynb"), parameters=params, log_output=False,
                                   progress_bar=False, cwd=str(out))
    except papermill.PapermillExecutionError as err:
        return err
    return None


@pytest.fixture(scope="module")
def refused_runs(demo_root, tmp_path_factory):
    """Notebooks 02 and 03 given each bad input the issue found, all at once (each should stop before training)."""
    base = tmp_path_factory.mktemp("refused")
    relabeled = base / "cifar"
    _relabel(_cifar_copy(demo_root, relabeled), "data_batch_3", lambda y: y.__setitem__(slice(0, None, 10), 10))
    duplicated = base / "duplicated.pkl"
    pkl = cifar.safe_unpickle(demo_root / "cifar10" / "cifar_test_nolabels.pkl", encoding="bytes")
    pkl[b"ids"] = np.zeros(len(pkl[b"ids"]), np.int64)
    duplicated.write_bytes(pickle.dumps(pkl, protocol=4))
    (base / "empty_test").mkdir()
    cases = {"edge_values": ("03_cifar10_resnet", {"val_size": 0, "batch_size": 0, "epochs": 0, "lr": -0.1}),
             "bad_labels": ("03_cifar10_resnet", {"data_dir": str(relabeled)}),
             "duplicated_ids": ("03_cifar10_resnet", {"test_pickle": str(duplicated)}),
             "empty_test_dir": ("02_resnet50_cbam_100class", {"test_dir": str(base / "empty_test")})}
    outs = {name: tmp_path_factory.mktemp(name) for name in cases}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        mp.chdir(ROOT)  # the smoke configs' data paths are relative to the repository
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = {name: pool.submit(_papermill, stem, outs[name], p) for name, (stem, p) in cases.items()}
            return {name: (f.result(), outs[name]) for name, f in futures.items()}


@pytest.mark.notebook
def test_edge_values_are_refused_by_the_parameter_check(refused_runs):
    err, out = refused_runs["edge_values"]
    assert err is not None and err.ename == "ValueError"
    for line in ("'val_size' = 0 should be >= 1", "'batch_size' = 0 should be >= 1", "'epochs' = 0 should be >= 1",
                 "'lr' = -0.1 should be > 0"):
        assert line in err.evalue
    assert not (out / "run").exists()  # stopped before anything was written


@pytest.mark.notebook
@pytest.mark.parametrize("case, message", [
    ("bad_labels", r"data_batch_3: \d+ of \d+ labels are outside 0\.\.9"),
    ("duplicated_ids", r"duplicated\.pkl: 1 ids occur more than once"),
    ("empty_test_dir", r"test folder .*empty_test.* holds no images"),
])
def test_bad_inputs_stop_the_notebook_before_training(refused_runs, case, message):
    err, out = refused_runs[case]
    assert err is not None and re.search(message, err.evalue), err and err.evalue
    assert not (out / "run" / "checkpoints").exists()  # stopped before training (the run folder may exist: the
    # CIFAR labels are checked as the data loads, before the run folder is made; the test inputs just after)


@pytest.mark.notebook
def test_notebook_01_counts_what_its_loaders_feed(demo_root, tmp_path):
    """A link to `..` and clutter in a class folder: notebook 01 trains on, and prints, the real images only."""
    root = tmp_path / "imagenet-mini"
    shutil.copytree(demo_root / "imagenet-mini", root, symlinks=True)
    first = sorted((root / "train").iterdir())[0]
    os.symlink("..", first / "up")
    _add_clutter(first)
    real = {s: sum(1 for _ in (root / s).glob("*/*.JPEG")) for s in ("train", "val")}
    try:
        err = _papermill("01_two_layer_imagenet_mini", tmp_path,
                         {"data_dir": str(root), "model_names": ["single_layer"]})
    finally:  # this copy's caches would otherwise pile up under data/cache, one set per test run
        for split in ("train", "val"):
            place = hashlib.sha256(os.path.abspath(root / split).encode()).hexdigest()[:8]
            for stale in (ROOT / "data" / "cache").glob(f"imagenet-mini-{split}-{place}-*"):
                stale.unlink()
    assert err is None, err and err.evalue
    with open(tmp_path / "out.ipynb") as fh:
        text = fh.read()
    assert f"{real['train']} training and {real['val']} validation images" in text
    assert "ignored 6 hidden or system entries" in text
