"""Unit tests of lib's core: models, the CIFAR and folder formats, training, checkpoints, parameters, outputs."""
import json
import os

import pytest
import torch
import torchvision

from lib import augment, cifar, config, files, folders, models, predict, train, utils


# ---------------------------------------------------------------- models

def test_cifar_resnet_has_the_seeds_parameter_count():
    model = models.CifarResNet((32, 64, 128), (4, 4, 3), dropout=0.1)
    assert utils.count_parameters(model) == 1_177_130
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_two_layer_net_and_resnet34_have_the_seeds_counts():
    variants = models.two_layer_variants(50)
    assert utils.count_parameters(variants["two_layer"]()) == 3_318_898
    assert utils.count_parameters(variants["resnet34"]()) == 21_310_322
    assert models.count_effective_layers(variants["two_layer"]()) == 2
    assert models.count_effective_layers(variants["single_layer"]()) == 1
    assert variants["smaller_kernel"]().features[0].kernel_size == (3, 3)


def test_fast_dropout_drops_at_rate_p_scales_the_rest_and_keeps_the_layout():
    drop = models.Dropout(0.1).train()
    x = torch.ones(64, 32, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    torch.manual_seed(0)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 524,288 draws: the standard error is 0.0004
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.9)) and y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient passes where the mask kept, scaled alike
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # drawn from torch's seeded generator: same seed, same mask
    assert torch.equal(drop.eval()(x), x)
    per_channel = (drop.train()(torch.ones(4096, 4, 1, 1)) == 0).float().mean(0).flatten()
    assert (abs(per_channel - 0.1) < 0.02).all()  # every 16-bit slice of the random words is used evenly


def test_pool_kernel_larger_than_feature_map_is_refused():
    with pytest.raises(ValueError, match="pool_kernel"):
        models.CifarResNet((16, 32, 64), (1, 1, 1), pool_kernel=16)


# ---------------------------------------------------------------- CIFAR format

def test_demo_cifar_batches_read_back(demo_root):
    x_train, y_train, x_test, y_test, classes = cifar.load_cifar10(demo_root / "cifar10")
    assert x_train.dtype == torch.uint8 and x_train.shape[1:] == (3, 32, 32)
    assert len(x_train) == len(y_train) == 5 * 1000 and len(x_test) == len(y_test)
    assert classes[0] == "airplane" and len(classes) == 10
    assert set(y_train.tolist()) == set(range(10))


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


def test_missing_data_dir_names_the_layout_and_readme(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*README"):
        cifar.load_cifar10(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="README"):
        folders.check_image_folders(tmp_path)


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


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(1, 3, 8, 8).repeat(200, 1, 1, 1)
    out = augment.random_crop_flip(image, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(image[:1], (2,) * 4)
    windows = {(dy, dx, f) for dy in range(5) for dx in range(5) for f in (0, 1)}
    seen = set()
    for o in out:
        for dy, dx, f in windows:
            w = padded[0, :, dy:dy + 8, dx:dx + 8]
            if torch.equal(o, w.flip(2) if f else w):
                seen.add((dy, dx, f))
                break
        else:
            raise AssertionError("a crop is not a window of the padded image")
    assert len(seen) > 20 and {f for *_, f in seen} == {0, 1}


# ---------------------------------------------------------------- image folders

def test_demo_image_folders_read_with_imagefolder(demo_root):
    for name, n in (("imagenet-mini", 50), ("hw1", 100)):
        classes = folders.check_image_folders(demo_root / name)
        assert len(classes) == n
        ds = folders.image_folder(demo_root / name, "val", folders.imagenet_eval_transform(32))
        x, y = ds[0]
        assert x.shape == (3, 32, 32) and y == 0
    flat = folders.FlatImageFolder(demo_root / "hw1" / "test", folders.imagenet_eval_transform(32))
    assert flat.names == sorted(flat.names) and len(flat) == 200


# ---------------------------------------------------------------- training, schedulers, checkpoints

def _tiny_setup(seed=0):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 10, (96,))
    model = models.CifarResNet((8, 16), (1, 1), dropout=0.2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [2], 0.1)
    train_loader = cifar.TensorBatchLoader(images, labels, 32, train=True, seed=seed)
    val_loader = cifar.TensorBatchLoader(images[:32], labels[:32], 32, train=False)
    return model, optimizer, scheduler, train_loader, val_loader


def test_fit_writes_history_and_checkpoints(tmp_path):
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    history = train.fit(model, train_loader, val_loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
                        checkpoint_dir=tmp_path, cfg={"a": 1}, progress=False)
    assert history["epoch"] == [1, 2, 3] and history["lr"] == pytest.approx([0.05, 0.05, 0.005])
    ckpt = train.load_checkpoint(tmp_path / "last.pt")
    assert set(train.CHECKPOINT_KEYS) <= set(ckpt) and ckpt["epoch"] == 2 and ckpt["cfg"] == {"a": 1}
    assert os.path.isfile(tmp_path / "best.pt")


def test_resume_equals_an_uninterrupted_run(tmp_path):
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    full = train.fit(model, train_loader, val_loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
                     checkpoint_dir=tmp_path / "full", progress=False)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    train.fit(model, train_loader, val_loader, epochs=2, optimizer=optimizer, scheduler=scheduler,
              checkpoint_dir=tmp_path / "cut", progress=False)
    torch.manual_seed(12345)  # a fresh process would start from another RNG state
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup(seed=0)
    resumed = train.fit(model, train_loader, val_loader, epochs=3, optimizer=optimizer, scheduler=scheduler,
                        checkpoint_dir=tmp_path / "cut", resume=True, progress=False)
    assert resumed["val_acc"] == full["val_acc"] and resumed["train_loss"] == full["train_loss"]
    assert all(torch.equal(reference[k], v) for k, v in model.state_dict().items())


def test_plateau_scheduler_steps_on_validation_loss(tmp_path):
    model, optimizer, _, train_loader, val_loader = _tiny_setup()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5)
    plateau.step(-1e9)  # nothing after this can beat it, so every epoch counts as a plateau
    history = train.fit(model, train_loader, val_loader, epochs=2, optimizer=optimizer, scheduler=plateau,
                        progress=False)
    assert train.scheduler_kind(plateau) == "plateau" and history["lr"] == pytest.approx([0.05, 0.025])


def test_warm_restarts_step_every_batch_with_fractional_epochs():
    model, optimizer, _, train_loader, val_loader = _tiny_setup()
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=0.001)
    history = train.fit(model, train_loader, val_loader, epochs=2, optimizer=optimizer, scheduler=sched,
                        progress=False)
    assert train.scheduler_kind(sched) == "batch"
    # recorded at each epoch's end: at 1.0 the first cycle (T_0=1) restarts at the maximum; at 2.0 the second
    # cycle (length 2) is half done, so lr = eta_min + (max - eta_min) * (1 + cos(pi / 2)) / 2
    assert history["lr"] == pytest.approx([0.05, 0.001 + 0.049 * 0.5])


def test_checkpoint_from_another_architecture_is_a_clear_error(tmp_path):
    model, optimizer, scheduler, train_loader, val_loader = _tiny_setup()
    train.fit(model, train_loader, val_loader, epochs=1, optimizer=optimizer, checkpoint_dir=tmp_path, progress=False)
    other = models.CifarResNet((8, 32), (1, 1))
    with pytest.raises(ValueError, match="different architecture"):
        train.load_model_state(other, train.load_checkpoint(tmp_path / "last.pt")["model"], "last.pt")


# ---------------------------------------------------------------- parameters, devices, outputs

def test_build_cfg_checks_types_and_unknown_names():
    ns = {"epochs": 3, "lr": 1, "name": "x", "steps": None,
          "In": ["", "# Parameters\nepochs = 3\nepoch = 4\n", "cfg = build_cfg(...)"]}
    ann = {"epochs": int, "lr": float, "name": str, "steps": int | None}
    with pytest.raises(ValueError, match="unknown parameter 'epoch'"):
        config.build_cfg(ns, ann)
    ns["In"] = []
    cfg = config.build_cfg(ns, ann)
    assert cfg == {"epochs": 3, "lr": 1.0, "name": "x", "steps": None} and isinstance(cfg["lr"], float)
    ns["epochs"] = "ten"
    with pytest.raises(ValueError, match="'epochs' = 'ten' should be of type int"):
        config.build_cfg(ns, ann)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="device='cpu'"):
        utils.resolve_device("cuda")
    assert utils.resolve_device("auto").type == "cpu"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    files.atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_open(path) as fh:
            fh.write("{broken")
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["m.json"]


def test_submission_is_verified_before_writing(tmp_path):
    path = tmp_path / "submission.csv"
    predict.write_cifar_submission(path, [0, 1, 2], [3, 4, 5])
    assert path.read_text().splitlines() == ["ID,Labels", "0,3", "1,4", "2,5"]
    with pytest.raises(ValueError, match="outside the known classes"):
        predict.write_cifar_submission(tmp_path / "bad.csv", [0, 1], [3, 10])
    with pytest.raises(ValueError, match="missing"):
        predict.verify_predictions(["a.jpg"], ["x"], ["a.jpg", "b.jpg"], ["x"])
    assert not (tmp_path / "bad.csv").exists()


def test_data_kind_labels_demo_data():
    assert utils.data_kind("data/demo/cifar10") == "demo" and utils.data_kind("data/cifar10") == "real"
