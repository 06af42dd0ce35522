"""lib.models: the write-ups' parameter counts, fast dropout, CBAM and ResNet50-CBAM, pretrained weights."""
import os
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from lib import models, predict, utils, writeups


def test_cifar_resnet_has_the_write_ups_parameter_count():
    model = models.CifarResNet((32, 64, 128), (4, 4, 3), dropout=0.1)
    assert utils.count_parameters(model) == writeups.figure("03", "parameters") == 1_177_130
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_two_layer_net_and_resnet34_have_the_write_ups_counts():
    variants = models.two_layer_variants(50)
    assert utils.count_parameters(variants["two_layer"]()) == writeups.figure("01", "two_layer_parameters")
    assert utils.count_parameters(variants["resnet34"]()) == writeups.figure("01", "resnet34_parameters")
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


RESNET50_100_CLASSES = 23_712_932  # torchvision ResNet50 with a 100-way head


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
    assert abs(utils.count_parameters(per_stage) - writeups.figure("02", "final_parameters")) == 22
    assert sum(isinstance(m, models.SimplifiedCBAM) for m in per_stage.modules()) == 4
    assert sum(isinstance(m, models.SimplifiedCBAM) for m in per_block.modules()) == 16
    head = per_stage.fc
    assert isinstance(head[0], nn.Dropout) and head[0].p == 0.3 and head[1].out_features == 100
    per_stage.eval()
    assert per_stage(torch.randn(2, 3, 64, 64)).shape == (2, 100)
    with pytest.raises(ValueError, match="placement"):
        models.resnet50_cbam(100, placement="everywhere")


def test_full_model_saves_under_100_mb_and_matches_the_write_ups_size(tmp_path):
    model = models.resnet50_cbam(100)
    arch = models.resnet50_cbam_arch(100)
    size = predict.save_classifier(tmp_path / "model.pt", model, arch, [f"c{i}" for i in range(100)], 224)
    assert size < 100 * 10**6 and utils.state_dict_bytes(model) < 100 * 10**6
    # the write-up's "90.99 MB": float32 parameters and BatchNorm running statistics, in MiB
    floats = sum(t.numel() for t in model.state_dict().values() if t.dtype == torch.float32)
    assert round(utils.mib(4 * floats), 2) == writeups.figure("02", "model_mib")


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
