"""lib.gpu_bundle and lib.cifar_images: the pieces of the GPU path that need no GPU and no network.

The whole path (make in one fresh clone, run in another with a torch-only interpreter) is tests/gpu_dry_run.sh,
which `make test-compat` runs; these tests keep each piece honest in the ordinary suite.
"""
import os
import tarfile
import zipfile

import pytest
from PIL import Image

from lib import cifar, cifar_images, gpu_bundle, results


def _image_folders(root, per_class=3, classes=("airplane", "automobile", "bird")):
    """train/<class>/ and test/<class>/ PNGs, 32 x 32, each class a colour of its own, nested one folder down."""
    top = root / "cifar10_png"
    for split in ("train", "test"):
        for label, name in enumerate(classes):
            (top / split / name).mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (32, 32), (40 * label, i, 200)).save(top / split / name / f"{i:04d}.png")
    return top


def _tar(folder, path):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def test_cifar_image_folders_become_batches_the_notebooks_read(tmp_path):
    _image_folders(tmp_path / "src")
    classes = cifar_images.write_cifar_batches(tmp_path / "src", tmp_path / "out" / "cifar-10-batches-py")
    x_train, y_train, x_test, y_test, names = cifar.load_cifar10(str(tmp_path / "out"))
    assert names == classes == ["airplane", "automobile", "bird"]
    assert len(x_train) == 9 and len(x_test) == 9 and sorted(y_test.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # pixels survive the trip: a bird (label 2) is red 80, blue 200
    bird = x_test[y_test == 2][0]
    assert bird[0, 0, 0].item() == 80 and bird[2, 0, 0].item() == 200


def test_archive_kind_tells_layouts_from_image_folders(tmp_path, demo_root):
    images = _tar(_image_folders(tmp_path / "src"), tmp_path / "images.tar.gz")
    assert gpu_bundle.archive_kind(str(images)) == "cifar10-images"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert gpu_bundle.pack_data(str(demo_root / "cifar10"), str(bundle)) == "layout"
    assert gpu_bundle.archive_kind(str(bundle / "data.tar.gz")) == "layout"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(SystemExit, match="neither the notebook's data layout"):
        gpu_bundle.archive_kind(str(_tar(tmp_path / "junk", tmp_path / "junk.tar.gz")))


def test_unpack_builds_the_batches_once_and_never_into_a_folder_it_did_not_make(tmp_path):
    archive = _tar(_image_folders(tmp_path / "src"), tmp_path / "images.tar.gz")
    data_dir = tmp_path / "data" / "cifar10"
    assert "unpacked" in gpu_bundle.unpack_data(str(archive), "cifar10-images", str(data_dir))
    assert cifar.find_cifar_dir(str(data_dir)).endswith("cifar-10-batches-py")
    assert "already" in gpu_bundle.unpack_data(str(archive), "cifar10-images", str(data_dir))
    other = tmp_path / "data" / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit, match="exists but does not hold the data"):
        gpu_bundle.unpack_data(str(archive), "cifar10-images", str(other))
    assert (other / "mine.txt").read_text() == "keep" and sorted(os.listdir(tmp_path / "data")) == ["cifar10", "other"]


def _wheel(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return str(path)


def test_wheels_install_without_pip_and_stay_inside_the_target(tmp_path):
    good = _wheel(tmp_path / "tiny-1.0-py3-none-any.whl", {"tiny/__init__.py": "VALUE = 7\n",
                                                           "tiny-1.0.data/scripts/tiny": "#!/bin/sh\n"})
    gpu_bundle.unpack_wheels([good], str(tmp_path / "target"))
    assert (tmp_path / "target" / "tiny" / "__init__.py").read_text() == "VALUE = 7\n"
    assert not (tmp_path / "target" / "tiny-1.0.data").exists()
    bad = _wheel(tmp_path / "evil-1.0-py3-none-any.whl", {"../escaped.py": "x = 1\n"})
    with pytest.raises(SystemExit, match="outside the install folder"):
        gpu_bundle.unpack_wheels([bad], str(tmp_path / "target"))
    assert not (tmp_path / "escaped.py").exists()


def test_make_refuses_a_folder_that_is_not_a_bundle_and_a_bundle_over_the_limit(tmp_path, demo_root, monkeypatch):
    root = tmp_path / "repo"
    (root / "mine").mkdir(parents=True)
    (root / "mine" / "thesis.tex").write_text("precious")
    monkeypatch.setattr(gpu_bundle, "repo_root", lambda: str(root))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels / "tiny-1.0-py3-none-any.whl", {"tiny/__init__.py": ""})
    with pytest.raises(SystemExit, match="not a bundle"):
        gpu_bundle.make("03_cifar10_resnet", str(demo_root / "cifar10"), str(root / "mine"), wheels=str(wheels))
    assert (root / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(SystemExit, match="directly under the repository root"):
        gpu_bundle.make("03_cifar10_resnet", str(demo_root / "cifar10"), str(tmp_path / "b"), wheels=str(wheels))
    with pytest.raises(SystemExit, match="over 1 MiB together"):
        gpu_bundle.make("03_cifar10_resnet", str(demo_root / "cifar10"), str(root / ".gpu-bundle"), limit_mib=1,
                        wheels=str(wheels))
    size, _ = gpu_bundle.make("03_cifar10_resnet", str(demo_root / "cifar10"), str(root / ".gpu-bundle"),
                              limit_mib=0, wheels=str(wheels))
    assert size > 0 and (root / ".gpu-bundle" / "run.sh").read_text().count("lib.gpu_bundle run") == 1


def test_the_summary_line_says_device_torch_speed_and_accuracy(tmp_path):
    history = {"epoch": [1, 2, 3], "train_loss": [2.0, 1.5, 1.2], "train_acc": [0.2, 0.4, 0.5],
               "val_loss": [2.0, 1.6, 1.3], "val_acc": [0.25, 0.45, 0.55], "lr": [0.1] * 3,
               "seconds": [70.0, 1.0, 1.2], "images_per_s": [600.0, 45000.0, 40000.0]}
    run = results.StudyResults(study="03", data="real", cfg={}, device="cuda", amp="bf16", channels_last=True,
                               compile=True, epochs_run=3, headline={"test_acc": 0.54, "best_val_acc": 0.55},
                               models={"m": results.from_history(history, 10, test_acc=0.54)},
                               environment={"gpu": "NVIDIA H100 80GB HBM3", "torch": "2.11.0"})
    results.write(str(tmp_path), run)
    line = gpu_bundle.summary_line(str(tmp_path), 300)
    for part in ("NVIDIA H100 80GB HBM3", "torch 2.11.0", "1.20 s/epoch median", "first epoch 70.0 s",
                 "warm-up 68.9 s", "test_acc 54.00%", "5.0 min"):
        assert part in line, (part, line)


def test_overrides_read_as_yaml():
    assert gpu_bundle.parse_overrides([["epochs", "1"], ["amp", "false"], ["channels", "[8, 16]"]]) == \
        {"epochs": 1, "amp": False, "channels": [8, 16]}
