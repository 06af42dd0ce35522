"""Study 02's pieces: simplified CBAM, focal loss, warm restarts per batch, weights loading, the predictor."""
import math
import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn
from torch.nn import functional as F

from lib import cifar, folders, losses, models, predict, train, utils

RESNET50_100_CLASSES = 23_712_932  # torchvision ResNet50 with a 100-way head (README of the seeds)
SEED_PARAMETERS = 23_800_022


# ---------------------------------------------------------------- simplified CBAM

def test_cbam_keeps_the_shape_and_has_the_expected_parameters():
    cbam = models.SimplifiedCBAM(256, reduction=128, spatial_kernel=3)
    x = torch.randn(2, 256, 7, 5)
    assert cbam(x).shape == x.shape
    # bias-free MLP 256 -> 2 -> 256, and a bias-free 3x3 convolution from [mean, max] to one map
    assert utils.count_parameters(cbam.channel) == 2 * 256 * 2
    assert utils.count_parameters(cbam.spatial) == 2 * 3 * 3
    assert cbam.channel.mlp[0].weight.shape == (2, 256)


def test_cbam_gates_channels_then_positions():
    cbam = models.SimplifiedCBAM(8, reduction=4)
    x = torch.randn(3, 8, 6, 6)
    with torch.no_grad():
        for p in cbam.parameters():
            p.zero_()
    # zero weights: both gates are sigmoid(0) = 1/2
    assert torch.allclose(cbam(x), x / 4)
    with torch.no_grad():
        cbam.spatial.conv.weight[0, 1, 1, 1] = 50.0  # the centre tap of the channel-max map
    out = cbam(x)
    big = (x / 2).amax(1, keepdim=True) > 0.2  # these positions' spatial gate saturates to ~1
    assert torch.allclose(out.masked_select(big.expand_as(x)), (x / 2).masked_select(big.expand_as(x)), atol=1e-4)


def test_resnet50_cbam_parameter_counts_and_output():
    plain = models.resnet50_cbam(100, use_cbam=False)
    per_stage = models.resnet50_cbam(100, placement="stage")
    per_block = models.resnet50_cbam(100, placement="block")
    assert utils.count_parameters(plain) == RESNET50_100_CLASSES
    assert utils.count_parameters(per_stage) == RESNET50_100_CLASSES + 87_112
    assert utils.count_parameters(per_block) == RESNET50_100_CLASSES + 314_656
    assert abs(utils.count_parameters(per_stage) - SEED_PARAMETERS) == 22
    assert sum(isinstance(m, models.SimplifiedCBAM) for m in per_stage.modules()) == 4
    assert sum(isinstance(m, models.SimplifiedCBAM) for m in per_block.modules()) == 16
    head = per_stage.fc
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.3 and head[1].out_features == 100
    per_stage.eval()
    assert per_stage(torch.randn(2, 3, 64, 64)).shape == (2, 100)
    with pytest.raises(ValueError, match="placement"):
        models.resnet50_cbam(100, placement="everywhere")


def test_full_model_saves_under_100_mb_and_matches_the_seeds_size(tmp_path):
    model = models.resnet50_cbam(100)
    arch = models.resnet50_cbam_arch(100)
    size = predict.save_classifier(tmp_path / "model.pt", model, arch, [f"c{i}" for i in range(100)], 224)
    assert size < 100 * 10**6 and utils.state_dict_bytes(model) < 100 * 10**6
    # the seed's "90.99 MB": float32 parameters and BatchNorm running statistics, in MiB
    floats = sum(t.numel() for t in model.state_dict().values() if t.dtype == torch.float32)
    assert round(utils.mib(4 * floats), 2) == 90.99


# ---------------------------------------------------------------- pretrained weights

def _offline(monkeypatch):
    real = torchvision.models.resnet50

    def resnet50(weights=None, **kwargs):
        if weights is not None:
            raise urllib.error.URLError("Name or service not known")
        return real(weights=None, **kwargs)
    monkeypatch.setattr(torchvision.models, "resnet50", resnet50)


def test_missing_weights_say_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    _offline(monkeypatch)
    expected = os.path.join(str(tmp_path / "hub"), "checkpoints", "resnet50-11ad3fa6.pth")
    with pytest.raises(RuntimeError) as err:
        models.resnet50_imagenet_state("IMAGENET1K_V2")
    assert expected in str(err.value) and "allow_random_init=True" in str(err.value)
    state, message = models.resnet50_imagenet_state("IMAGENET1K_V2", allow_random_init=True)
    assert state is None and expected in message
    with pytest.raises(ValueError, match="IMAGENET1K_V2"):
        models.resnet50_imagenet_state("IMAGENET1K_V9")
    assert models.resnet50_imagenet_state("")[0] is None


def test_weights_placed_where_the_message_says_are_loaded(tmp_path, monkeypatch):
    old_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        reference = torchvision.models.resnet50(weights=None)
        path = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
        path.parent.mkdir(parents=True)
        torch.save(reference.state_dict(), path)
        state, message = models.resnet50_imagenet_state("IMAGENET1K_V2")
        assert str(path) in message
        model = models.resnet50_cbam(100, backbone_state=state)
        assert torch.equal(model.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)
        path.write_bytes(b"not a checkpoint")
        with pytest.raises(RuntimeError, match="damaged"):
            models.resnet50_imagenet_state("IMAGENET1K_V2")
    finally:
        torch.hub.set_dir(old_dir)


# ---------------------------------------------------------------- focal loss

def test_focal_loss_at_gamma_zero_is_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(32, 100) * 3, torch.randint(0, 100, (32,))
    assert torch.allclose(losses.FocalLoss(gamma=0)(logits, target), F.cross_entropy(logits, target))
    weight = torch.rand(100) + 0.5
    assert torch.allclose(losses.FocalLoss(gamma=0, alpha=weight, reduction="sum")(logits, target),
                          F.cross_entropy(logits, target, weight=weight, reduction="sum"))


def test_focal_loss_matches_a_hand_computed_value():
    # sample 1: two equal logits, p_t = 1/2: (1 - 1/2)^2 * ln 2
    # sample 2: logits (ln 3, 0) with target 0, p_t = 3/4: (1/4)^2 * ln(4/3)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([1, 0])
    per_sample = losses.FocalLoss(gamma=2, reduction="none")(logits, target)
    assert per_sample.tolist() == pytest.approx([0.25 * math.log(2), 0.0625 * math.log(4 / 3)], rel=1e-6)
    assert losses.FocalLoss(gamma=2)(logits, target).item() == pytest.approx(
        (0.25 * math.log(2) + 0.0625 * math.log(4 / 3)) / 2, rel=1e-6)
    # the focal factor shrinks the easy sample far more than the hard one
    ce = F.cross_entropy(logits, target, reduction="none")
    assert (per_sample / ce)[1] < (per_sample / ce)[0]


def test_focal_loss_alpha_scalar_and_per_class():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    target = torch.tensor([1, 0])
    plain = losses.FocalLoss(gamma=2, reduction="none")(logits, target)
    assert torch.allclose(losses.FocalLoss(gamma=2, alpha=0.25, reduction="none")(logits, target), 0.25 * plain)
    per_class = losses.FocalLoss(gamma=2, alpha=[0.1, 0.9], reduction="none")(logits, target)
    assert torch.allclose(per_class, torch.tensor([0.9, 0.1]) * plain)
    assert losses.FocalLoss(gamma=2, alpha=torch.tensor([0.1, 0.9]))(logits, target).item() == pytest.approx(
        per_class.mean().item())
    with pytest.raises(ValueError, match="one weight per class"):
        losses.FocalLoss(alpha=[1.0, 2.0, 3.0])(logits, target)
    with pytest.raises(ValueError, match="gamma"):
        losses.FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        losses.FocalLoss(reduction="avg")


def test_focal_loss_gradient_is_finite_for_confident_predictions():
    logits = torch.tensor([[30.0, -30.0], [0.0, 0.0]], requires_grad=True)
    losses.FocalLoss(gamma=2)(logits, torch.tensor([0, 1])).backward()
    assert torch.isfinite(logits.grad).all()


# ---------------------------------------------------------------- warm restarts stepped per batch

def _warm_restart_lr(t, base_lr, T_0, T_mult, eta_min):
    """torch's documented closed form at fractional epoch t: eta_min + (base - eta_min)(1 + cos(pi T_cur / T_i)) / 2."""
    start, T_i = 0, T_0
    while t >= start + T_i:
        start, T_i = start + T_i, T_i * T_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (t - start) / T_i)) / 2


def _lr_trace(optimizer):
    """The learning rate each optimizer step actually used."""
    trace = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: trace.append(opt.param_groups[0]["lr"]))
    return trace


def _tiny(batches, batch_size=4):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batches * batch_size, 3, 8, 8), dtype=torch.uint8)
    loader = cifar.TensorBatchLoader(images, torch.randint(0, 3, (len(images),)), batch_size, train=True)
    val = cifar.TensorBatchLoader(images[:4], torch.zeros(4, dtype=torch.long), 4, train=False)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)), loader, val


def test_warm_restarts_per_batch_follow_torchs_closed_form():
    """The study's schedule (T_0=10, T_mult=2, eta_min=1e-5) over 32 epochs of 3 (capped from 5) batches."""
    model, loader, val = _tiny(batches=5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2, eta_min=1e-5)
    trace = _lr_trace(optimizer)
    steps, epochs = 3, 32
    history = train.fit(model, loader, val, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
                        max_steps_per_epoch=steps, progress=False)
    expected = [_warm_restart_lr(k / steps, 1e-3, 10, 2, 1e-5) for k in range(epochs * steps)]
    assert trace == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # restarts at the start of epochs 11 and 31 (t = 10 and 30), each cycle annealed almost to eta_min before
    assert trace[10 * steps] == pytest.approx(1e-3) and trace[30 * steps] == pytest.approx(1e-3)
    assert trace[10 * steps - 1] < 2e-5 and trace[30 * steps - 1] < 2e-5
    # the history records the learning rate reached at each epoch's end
    assert history["lr"] == pytest.approx([_warm_restart_lr(e, 1e-3, 10, 2, 1e-5) for e in range(1, epochs + 1)])


def test_one_cycle_is_stepped_per_batch_by_count():
    model, loader, val = _tiny(batches=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=12)
    trace = _lr_trace(optimizer)
    train.fit(model, loader, val, epochs=3, optimizer=optimizer, scheduler=scheduler, progress=False)
    reference_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.OneCycleLR(reference_opt, max_lr=0.1, total_steps=12)
    expected = []
    for _ in range(12):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    assert trace == pytest.approx(expected)
    assert max(trace) == pytest.approx(0.1, rel=0.05)


# ---------------------------------------------------------------- predictor

class RedLevelClassifier(nn.Module):
    """Predicts the class whose level is nearest the image's mean red value (normalised back to 0..255)."""

    def __init__(self, levels):
        super().__init__()
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))

    def forward(self, x):
        red = (x[:, 0].mean((1, 2)) * folders.IMAGENET_STD[0] + folders.IMAGENET_MEAN[0]) * 255
        return -(red[:, None] - self.levels[None]).abs()


def _write_mode_zoo(folder):
    """One small image per PIL mode, each with a known red level; returns {file name: red level}."""
    folder.mkdir()
    size = (20, 20)
    expected = {}
    Image.new("RGB", size, (200, 10, 10)).save(folder / "b_rgb.jpg", quality=98)
    expected["b_rgb.jpg"] = 200
    Image.new("L", size, 40).save(folder / "a_gray.png")
    expected["a_gray.png"] = 40
    Image.new("RGBA", size, (120, 0, 0, 255)).save(folder / "10_rgba.png")
    expected["10_rgba.png"] = 120
    palette = Image.new("P", size, 0)
    palette.putpalette([160, 0, 0] + [0, 0, 0] * 255)
    palette.save(folder / "2_palette.png")
    expected["2_palette.png"] = 160
    Image.new("CMYK", size, (0, 255, 255, 175)).save(folder / "c_cmyk.jpg", quality=98)
    expected["c_cmyk.jpg"] = 80  # PIL's CMYK -> RGB: red = 255 - C - K
    (folder / "notes.txt").write_text("not an image")
    return expected


def test_every_mode_is_read_as_rgb(tmp_path):
    expected = _write_mode_zoo(tmp_path / "zoo")
    for name, red in expected.items():
        image = folders.open_rgb(tmp_path / "zoo" / name)
        assert image.mode == "RGB" and abs(np.asarray(image)[..., 0].mean() - red) < 6, name


def test_predictions_keep_sorted_file_order_and_class_names(tmp_path):
    expected = _write_mode_zoo(tmp_path / "zoo")
    classes = ["level_040", "level_080", "level_120", "level_160", "level_200"]
    model = RedLevelClassifier([40, 80, 120, 160, 200])
    out = predict.predict_folder(model, tmp_path / "zoo", classes, 16, tmp_path / "prediction.csv", batch_size=2)
    rows = [line.split(",") for line in open(out).read().splitlines()]
    assert rows[0] == ["image_name", "pred_label"]
    assert [r[0] for r in rows[1:]] == sorted(expected) == ["10_rgba.png", "2_palette.png", "a_gray.png",
                                                            "b_rgb.jpg", "c_cmyk.jpg"]
    assert {name: label for name, label in rows[1:]} == {n: f"level_{v:03d}" for n, v in expected.items()}


def test_predictor_refuses_incomplete_or_unordered_rows(tmp_path):
    path = tmp_path / "prediction.csv"
    with pytest.raises(ValueError, match="not in the input order"):
        predict.write_csv_verified(path, ("image_name", "pred_label"), ["b.jpg", "a.jpg"], ["x", "x"],
                                   ["a.jpg", "b.jpg"], ["x"])
    with pytest.raises(ValueError, match="duplicated"):
        predict.write_csv_verified(path, ("image_name", "pred_label"), ["a.jpg", "a.jpg"], ["x", "x"],
                                   ["a.jpg", "b.jpg"], ["x"])
    with pytest.raises(ValueError, match="outside the known classes"):
        predict.write_csv_verified(path, ("image_name", "pred_label"), ["a.jpg"], ["7"], ["a.jpg"], ["x"])
    assert not path.exists()
    (tmp_path / "zoo").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "zoo" / "a.png")
    with pytest.raises(ValueError, match="3 outputs but 2 class names"):
        predict.predict_folder(RedLevelClassifier([0, 1, 2]), tmp_path / "zoo", ["x", "y"], 8, path)
    assert not path.exists()


def test_cli_rebuilds_the_model_from_its_file(tmp_path, capsys):
    expected = _write_mode_zoo(tmp_path / "zoo")
    classes = [f"n{i:08d}" for i in range(7)]
    arch = models.resnet50_cbam_arch(len(classes), placement="stage")
    torch.manual_seed(0)
    model = models.resnet50_cbam(**{k: v for k, v in arch.items() if k != "name"}).eval()
    predict.save_classifier(tmp_path / "model.pt", model, arch, classes, 32)
    out = predict.main(["--checkpoint", str(tmp_path / "model.pt"), "--test-dir", str(tmp_path / "zoo"),
                        "--out", str(tmp_path / "prediction.csv"), "--device", "cpu", "--batch-size", "2"])
    rows = [line.split(",") for line in open(out).read().splitlines()[1:]]
    assert [r[0] for r in rows] == sorted(expected) and all(r[1] in classes for r in rows)
    assert "5 predictions" in capsys.readouterr().out
    # the same model through the function the notebook calls
    direct = predict.predict_folder(model, tmp_path / "zoo", classes, 32, tmp_path / "direct.csv")
    assert open(direct).read() == open(out).read()
    # a training checkpoint carries the same facts in its cfg
    train.save_checkpoint(tmp_path / "best.pt", epoch=0, model=model, optimizer=torch.optim.SGD(model.parameters(), 0.1),
                          scheduler=None, best_metric=0.0, history={},
                          cfg={"arch": arch, "classes": classes, "image_size": 32})
    again = predict.predict_test_folder(tmp_path / "best.pt", tmp_path / "zoo", tmp_path / "again.csv")
    assert open(again).read() == open(out).read()
    torch.save({"model": model.state_dict()}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="how to rebuild"):
        predict.load_classifier(tmp_path / "bare.pt")
