"""lib.cifar: the CIFAR-10 batch format, the restricted unpickler, the split and the tensor loader, bad data."""
import pickle
import re

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms

from conftest import cifar_copy, relabel
from lib import cifar, folder_cache, folders


def test_cifar_loader_matches_torchvision_reading_of_the_same_layout(demo_root, monkeypatch):
    """torchvision's CIFAR10 refuses non-original files by MD5; with the check bypassed it must agree with ours."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args: True)
    reference = torchvision.datasets.CIFAR10(str(demo_root / "cifar10"), train=False)
    _, _, x_test, y_test, _ = cifar.load_cifar10(demo_root / "cifar10")
    assert torch.equal(torch.from_numpy(reference.data).permute(0, 3, 1, 2), x_test)
    assert reference.targets == y_test.tolist()


def test_unlabeled_pickle_reads_back(demo_root):
    x, ids = cifar.load_unlabeled_cifar(demo_root / "cifar10" / "cifar_test_nolabels.pkl")
    assert x.shape == (500, 3, 32, 32) and x.dtype == torch.uint8 and list(ids[:3]) == [0, 1, 2]


def test_split_is_fixed_by_seed():
    x, y = torch.arange(100).view(100, 1), torch.arange(100)
    a, b = cifar.split_train_val(x, y, 10, seed=3), cifar.split_train_val(x, y, 10, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and len(a[2]) == 10
    assert set(a[1].tolist()).isdisjoint(a[3].tolist())


def test_tensor_loader_epochs_are_reproducible_and_augmented():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    loader = cifar.TensorBatchLoader(images, labels, 16, train=True, seed=1)
    loader.set_epoch(2)
    first = [x for x, _ in loader]
    loader.set_epoch(2)
    again = [x for x, _ in loader]
    loader.set_epoch(3)
    other = [x for x, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == (16, 3, 32, 32) and first[0].dtype == torch.float32
    plain = cifar.TensorBatchLoader(images, labels, 16, train=False)
    assert sum(len(y) for _, y in plain) == 64 and len(plain) == 4


@pytest.mark.parametrize("name, change, expected", [
    ("data_batch_2", lambda y: y.__setitem__(0, 10),
     r"data_batch_2: 1 of \d+ labels are outside 0\.\.9 \(first: \[10\]\)"),
    ("data_batch_4", lambda y: y.__setitem__(slice(0, None, 10), 10), r"data_batch_4: \d+ of \d+ labels are outside"),
    ("test_batch", lambda y: y.__setitem__(3, -1), r"test_batch: 1 of \d+ labels are outside 0\.\.9 \(first: \[-1\]\)"),
], ids=["one", "a tenth", "test batch"])
def test_cifar_labels_out_of_range_name_the_file_and_the_count(demo_root, tmp_path, name, change, expected):
    folder = cifar_copy(demo_root, tmp_path)
    relabel(folder, name, change)
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


def test_val_size_must_leave_validation_and_training_images():
    x, y = torch.zeros(10, 3, 2, 2), torch.arange(10)
    for bad in (0, 10, 0.01):
        with pytest.raises(ValueError, match=rf"val_size={bad} gives \d+ validation images out of 10: choose from "
                                             r"1 to 9"):
            cifar.split_train_val(x, y, bad, 0)
    assert len(cifar.split_train_val(x, y, 1, 0)[2]) == 1


def test_missing_data_directory_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + r".*profile = \"demo\".*make data"):
        cifar.load_cifar10(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "train")) + ".*docs/data.md"):
        folder_cache.folder_loaders(missing, image_size=16, batch_size=2)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing)) + ".*flat folder of images"):
        folders.FlatImageFolder(missing, transforms.ToTensor())
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing / "t.pkl")) + ".*test_pickle"):
        cifar.load_unlabeled_cifar(missing / "t.pkl")
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*docs/data.md"):  # the layout, and its page
        cifar.load_cifar10(missing)
    with pytest.raises(FileNotFoundError, match="docs/data.md"):
        folders.check_image_folders(tmp_path)


def test_truncated_cifar_batch_names_the_file_and_the_fix(demo_root, tmp_path):
    folder = cifar_copy(demo_root, tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").unlink()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match=r"data_batch_3 is truncated or corrupt.*Download it again"):
        cifar.load_cifar10(tmp_path)


@pytest.mark.parametrize("content, expected", [
    ({b"data": np.zeros((4, 32, 32, 3), np.float32)}, r"uint8 array of shape \(N, 32, 32, 3\), got float32"),
    ({b"data": np.zeros((4, 3, 32, 32), np.uint8)}, r"shape \(N, 32, 32, 3\), got uint8 \(4, 3, 32, 32\)"),
    ({b"data": np.zeros((4, 3072), np.uint8)}, r"shape \(N, 32, 32, 3\), got uint8 \(4, 3072\)"),
    ({b"data": np.zeros((4, 32, 32, 3), np.uint8), b"ids": np.arange(3)}, r"one id per image \(4\)"),
    (np.zeros((4, 32, 32, 3), np.uint8), r"expected a pickled dict .* got ndarray"),
], ids=["float32", "channels-first", "flat-rows", "ids-count", "bare-array"])
def test_unlabeled_pickle_of_wrong_shape_or_dtype_is_refused(tmp_path, content, expected):
    path = tmp_path / "cifar_test_nolabels.pkl"
    path.write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + expected):
        cifar.load_unlabeled_cifar(path)


class _RunsCode:
    """Unpickling this creates `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("loader", ["cifar_batch", "cifar_meta", "unlabeled_pickle"])
def test_malicious_data_pickle_is_refused_without_running_it(demo_root, tmp_path, loader, protocol):
    marker = tmp_path / "code_ran"
    payload = pickle.dumps({b"data": _RunsCode(marker), b"labels": [0]}, protocol=protocol)
    (tmp_path / "control.pkl").write_bytes(payload)
    with open(tmp_path / "control.pkl", "rb") as fh:
        pickle.load(fh)  # control: the plain unpickler runs the payload
    assert marker.exists()
    marker.unlink()

    if loader == "unlabeled_pickle":
        path = tmp_path / "cifar_test_nolabels.pkl"
        path.write_bytes(payload)
        load = lambda: cifar.load_unlabeled_cifar(path)  # noqa: E731
    else:
        folder = cifar_copy(demo_root, tmp_path)
        path = folder / ("data_batch_1" if loader == "cifar_batch" else "batches.meta")
        path.unlink()
        path.write_bytes(payload)
        load = lambda: cifar.load_cifar10(tmp_path)  # noqa: E731
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": refusing to load (builtins|__builtin__)\.exec"):
        load()
    assert not marker.exists()


def test_a_missing_demo_set_is_written_on_the_spot_and_its_advice_never_repeats_the_switch(tmp_path, monkeypatch,
                                                                                           capsys):
    from lib import demo, utils
    monkeypatch.setattr(utils, "repo_root", lambda: str(tmp_path))  # data/demo of a fresh clone: empty
    monkeypatch.setattr(demo, "repo_root", lambda: str(tmp_path))
    root = tmp_path / "data" / "demo" / "cifar10"
    assert cifar.find_cifar_dir(str(root)) == str(root / "cifar-10-batches-py")  # written here, in seconds
    assert "data/demo/cifar10 is missing: writing lib.demo's synthetic cifar10" in capsys.readouterr().out
    (root / "cifar-10-batches-py" / "batches.meta").unlink()  # damaged since: not rewritten behind the student's back
    with pytest.raises(FileNotFoundError) as err:
        cifar.find_cifar_dir(str(root))
    assert "make demo-data" in str(err.value) and 'profile = "demo"' not in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        folders.list_image_folder(str(tmp_path / "real" / "imagenet-mini"), "train")
    assert 'profile = "demo"' in str(err.value) and "make data" in str(err.value)
