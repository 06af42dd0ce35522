"""Tests for lib.demo: formats, determinism, idempotence and learnability of the demo data."""
import csv
import hashlib
import pickle

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

from lib import cifar, demo, demo_images

# Tiny sizes keep the whole module to a few seconds.
TINY = {
    "cifar_per_batch": 20, "cifar_test": 30, "cifar_unlabeled": 7,
    "mini_classes": 5, "mini_train": 3, "mini_val": 2, "mini_size": 32,
    "hw1_classes": 7, "hw1_train": 3, "hw1_val": 2, "hw1_test": 9, "hw1_size": 32,
}
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def tree_hashes(root):
    """Map every file below ``root`` (relative path) to the SHA-256 of its bytes."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cifar_images(batch):
    """Turn a CIFAR batch dict (str keys) into float images (N, 32, 32, 3) and labels."""
    x = batch["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32)
    return x, np.asarray(batch["labels"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny generation of all three datasets, shared by the format tests."""
    root = tmp_path_factory.mktemp("demo")
    paths = demo.write_all(root, **TINY)
    assert set(paths) == set(demo.DATASETS)
    return root


@pytest.mark.parametrize("encoding, key", [("latin1", "data"), ("bytes", b"data")])
def test_cifar_batches_load_like_the_original(tiny, encoding, key):
    folder = tiny / "cifar10" / "cifar-10-batches-py"
    for name in CIFAR_FILES:
        with open(folder / name, "rb") as fh:
            batch = pickle.load(fh, encoding=encoding)
        assert all(isinstance(k, type(key)) for k in batch)
        labels_key = "labels" if encoding == "latin1" else b"labels"
        data, labels = batch[key], batch[labels_key]
        n = TINY["cifar_test"] if name == "test_batch" else TINY["cifar_per_batch"]
        assert data.dtype == np.uint8 and data.shape == (n, 3072)
        assert isinstance(labels, list) and len(labels) == n
        assert all(isinstance(c, int) and 0 <= c <= 9 for c in labels)
    with open(folder / "batches.meta", "rb") as fh:
        meta = pickle.load(fh, encoding="latin1")
    assert meta["label_names"][:3] == ["airplane", "automobile", "bird"]
    assert len(meta["label_names"]) == 10
    assert meta["num_cases_per_batch"] == TINY["cifar_per_batch"] and meta["num_vis"] == 3072
    # and lib.cifar reads them back
    x_train, y_train, x_test, y_test, classes = cifar.load_cifar10(tiny / "cifar10")
    assert x_train.dtype == torch.uint8 and x_train.shape[1:] == (3, 32, 32)
    assert len(x_train) == len(y_train) == 5 * TINY["cifar_per_batch"] and len(x_test) == len(y_test)
    assert classes[0] == "airplane" and len(classes) == 10
    assert set(y_train.tolist()) == set(range(10))


def test_cifar_batch_metadata(tiny):
    with open(tiny / "cifar10" / "cifar-10-batches-py" / "data_batch_2", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    assert batch[b"batch_label"] == b"training batch 2 of 5"
    assert all(isinstance(f, bytes) and f.endswith(b".png") for f in batch[b"filenames"])
    with open(tiny / "cifar10" / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        assert pickle.load(fh, encoding="bytes")[b"batch_label"] == b"testing batch 1 of 1"


def test_cifar_rows_are_planar_rgb():
    img = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 1, 2, 3
    row = demo.cifar_rows(img)[0]
    assert (row[:1024] == 1).all() and (row[1024:2048] == 2).all() and (row[2048:] == 3).all()


def test_unlabeled_pickle_and_labels_csv(tiny):
    with open(tiny / "cifar10" / "cifar_test_nolabels.pkl", "rb") as fh:
        d = pickle.load(fh)
    n = TINY["cifar_unlabeled"]
    assert d[b"data"].dtype == np.uint8 and d[b"data"].shape == (n, 32, 32, 3)
    assert d[b"ids"].tolist() == list(range(n))
    with open(tiny / "cifar10" / "cifar_test_nolabels_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["ID"]) for r in rows] == list(range(n))
    assert all(0 <= int(r["Labels"]) <= 9 for r in rows)


@pytest.mark.parametrize("name, classes, per_class", [
    ("imagenet-mini", TINY["mini_classes"], {"train": TINY["mini_train"], "val": TINY["mini_val"]}),
    ("hw1", TINY["hw1_classes"], {"train": TINY["hw1_train"], "val": TINY["hw1_val"]}),
])
def test_image_folders_load_with_torchvision(tiny, name, classes, per_class):
    sets = {split: ImageFolder(tiny / name / split) for split in per_class}
    assert sets["train"].classes == sets["val"].classes
    assert len(sets["train"].classes) == classes
    assert all(len(c) == 9 and c.startswith("n") for c in sets["train"].classes)
    for split, ds in sets.items():
        assert len(ds) == classes * per_class[split]
        img, label = ds[len(ds) - 1]
        assert img.mode == "RGB" and img.size == (32, 32) and label == classes - 1


def test_hw1_test_folder_is_flat_with_labels(tiny):
    test = tiny / "hw1" / "test"
    files = sorted(p.name for p in test.iterdir())
    assert files == [f"{i:05d}.jpg" for i in range(TINY["hw1_test"])]
    with open(tiny / "hw1" / "test_labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image_name"] for r in rows] == files
    classes = {p.name for p in (tiny / "hw1" / "train").iterdir()}
    assert all(r["label"] in classes for r in rows)
    train = sorted((tiny / "hw1" / "train").iterdir())[0]
    assert all(p.name.startswith(train.name) and len(p.stem) == 17 for p in train.iterdir())


def test_generation_is_deterministic(tmp_path):
    demo.write_all(tmp_path / "a", **TINY)
    demo.write_all(tmp_path / "b", **TINY)
    a, b = tree_hashes(tmp_path / "a"), tree_hashes(tmp_path / "b")
    assert len(a) > 50 and a == b


def test_second_call_skips_and_changed_argument_rewrites(tmp_path, capsys):
    root = tmp_path / "cifar10"
    demo.write_cifar10(root, per_batch=10, n_test=10, n_unlabeled=5)
    before = tree_hashes(root)
    mtime = (root / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns
    capsys.readouterr()
    demo.write_cifar10(root, per_batch=10, n_test=10, n_unlabeled=5)
    assert "up to date" in capsys.readouterr().out
    assert (root / "cifar-10-batches-py" / "test_batch").stat().st_mtime_ns == mtime
    demo.write_cifar10(root, per_batch=10, n_test=12, n_unlabeled=5)
    assert "up to date" not in capsys.readouterr().out
    assert demo.read_marker(root)["n_test"] == 12
    after = tree_hashes(root)
    assert after != before
    # Separate generators per split: the training batches did not change.
    assert after["cifar-10-batches-py/data_batch_1"] == before["cifar-10-batches-py/data_batch_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10"]  # no temp folders left


def test_incomplete_folder_is_rewritten(tmp_path, capsys):
    """A run that died mid-fill leaves only its hidden .partial folder (the final name appears with its marker): the
    next run builds the set and removes it. A folder without the marker is not lib.demo's and is never replaced."""
    root = tmp_path / "hw1"
    (tmp_path / ".hw1.partial").mkdir()  # as if the run had died before finishing
    (tmp_path / ".hw1.partial" / "half.jpg").write_bytes(b"half")
    capsys.readouterr()
    demo.write_hw1(root, n_classes=3, n_train=1, n_val=1, n_test=2, size=16)
    assert "up to date" not in capsys.readouterr().out
    assert demo.read_marker(root)["n_classes"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hw1"]
    (root / ".complete").unlink()  # now a folder of someone else's images
    with pytest.raises(FileExistsError, match="hw1 holds files lib.demo did not write"):
        demo.write_hw1(root, n_classes=3, n_train=1, n_val=1, n_test=2, size=16)
    assert (root / "train").is_dir()


def test_force_rewrites(tmp_path, capsys):
    demo.write_all(tmp_path, only=["hw1"], hw1_classes=2, hw1_train=1, hw1_val=1, hw1_test=1)
    capsys.readouterr()
    demo.write_all(tmp_path, only=["hw1"], force=True,
                   hw1_classes=2, hw1_train=1, hw1_val=1, hw1_test=1)
    assert "up to date" not in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hw1"]


def test_cli_only_and_sizes(tmp_path):
    paths = demo.main(["--out", str(tmp_path), "--only", "imagenet-mini",
                       "--mini-classes", "2", "--mini-train", "1", "--mini-val", "1",
                       "--mini-size", "16"])
    assert list(paths) == ["imagenet-mini"]
    assert len(ImageFolder(tmp_path / "imagenet-mini" / "train").classes) == 2


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(TypeError):
        demo.write_all(tmp_path, mini_clases=3)
    with pytest.raises(ValueError):
        demo.write_all(tmp_path, only=["mnist"])
    with pytest.raises(ValueError):
        demo.write_hw1(tmp_path / "hw1", n_classes=demo_images.MAX_CLASSES + 1)


def test_class_looks_are_distinct():
    looks = [tuple(s[k] for k in ("shape", "colour", "texture"))
             for s in demo_images.class_styles(demo_images.MAX_CLASSES, demo.HW1_STYLE_OFFSET)]
    assert len(set(looks)) == demo_images.MAX_CLASSES
    cifar = demo_images.class_styles(10, demo.CIFAR_STYLE_OFFSET)
    assert len({s["colour"] for s in cifar}) == 10


def test_nearest_class_mean_beats_chance(tmp_path):
    root = demo.write_cifar10(tmp_path / "cifar10", per_batch=60, n_test=200, n_unlabeled=1)
    folder = root / "cifar-10-batches-py"
    batches = []
    for name in CIFAR_FILES:
        with open(folder / name, "rb") as fh:
            batches.append(cifar_images(pickle.load(fh, encoding="latin1")))
    x_train = np.concatenate([x for x, _ in batches[:-1]])
    y_train = np.concatenate([y for _, y in batches[:-1]])
    x_test, y_test = batches[-1]
    means = np.stack([x_train[y_train == c].mean(0) for c in range(10)])
    dist = ((x_test[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))
    accuracy = (dist.argmin(1) == y_test).mean()
    assert accuracy > 3 * 0.1, accuracy
