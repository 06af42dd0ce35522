"""The studies' models: the configurable CIFAR ResNet, StrictTwoLayerNet and its ablations, ResNet50 + simplified
CBAM."""
import os
import socket

import torch
import torchvision
from torch import nn


def _as_list(value, n, name):
    """Broadcast an int to n stages, or check a per-stage list has n entries."""
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but the network has {n} stages")
    return values


class Dropout(nn.Dropout):
    """nn.Dropout whose CPU mask is cut from 64-bit random words, four 16-bit draws each: 3-4x faster to draw than
    torch's per-element bernoulli_, which took a third of the CIFAR ResNet's CPU training step
    (docs/performance.md). The keep probability is exact to 2**-16; elsewhere (CUDA's fused kernel) it is
    nn.Dropout."""

    def forward(self, x):
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        if not self.training or self.p == 0 or x.device.type != "cpu" or not dense:
            return super().forward(x)
        return x * dropout_mask(x, self.p)


def dropout_mask(x, p):
    """Keep-mask of `x`'s shape and memory layout, scaled by 1 / (1 - p), drawn from torch's CPU generator."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, None)  # all 64 bits random
    keep = words.view(torch.int16)[:n] >= round(p * 2**16) - 2**15
    scaled = keep.to(x.dtype).mul_(1 / (1 - p))
    return scaled.as_strided(x.shape, x.stride())  # i.i.d. draws: any order of the memory fits


class BasicBlock(nn.Module):
    """ResNet basic block (two k x k convolutions) with dropout between them and a projection where shape changes."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3, skip_kernel_size=1, dropout=0.0):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.drop = Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, skip_kernel_size, stride, skip_kernel_size // 2, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.drop(torch.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32 x 32 inputs: 3 x 3 stem, N stages of BasicBlocks (stride 2 from the second), pool, linear.

    channels C_i, blocks B_i, conv kernels F_i, skip kernels K_i and the average-pool kernel P span the
    random-search space of study 04; pool_kernel=None means adaptive average pooling to 1 x 1 (study 03).
    """

    def __init__(self, channels=(32, 64, 128), blocks=(4, 4, 3), conv_kernels=3, skip_kernels=1,
                 pool_kernel=None, dropout=0.0, num_classes=10, input_size=32):
        super().__init__()
        n = len(channels)
        conv_kernels = _as_list(conv_kernels, n, "conv_kernels")
        skip_kernels = _as_list(skip_kernels, n, "skip_kernels")
        blocks = _as_list(blocks, n, "blocks")
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU(inplace=True))
        stages, in_channels = [], channels[0]
        for i, (c, b, f, k) in enumerate(zip(channels, blocks, conv_kernels, skip_kernels)):
            layers = [BasicBlock(in_channels if j == 0 else c, c, (2 if i > 0 and j == 0 else 1), f, k, dropout)
                      for j in range(b)]
            stages.append(nn.Sequential(*layers))
            in_channels = c
        self.stages = nn.Sequential(*stages)
        feature_size = input_size // 2 ** (n - 1)
        if pool_kernel is None:
            self.pool = nn.AdaptiveAvgPool2d(1)
            features = channels[-1]
        else:
            if pool_kernel > feature_size:
                raise ValueError(f"pool_kernel={pool_kernel} is larger than the {feature_size} x {feature_size} "
                                 f"feature map that {n} stages leave of a {input_size}-pixel input")
            self.pool = nn.AvgPool2d(pool_kernel)
            features = channels[-1] * (feature_size // pool_kernel) ** 2
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def conv_bn_relu(in_channels, out_channels, kernel_size, stride=1):
    """Bias-free convolution (BatchNorm supplies the shift), BatchNorm, ReLU."""
    return [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class StrictTwoLayerNet(nn.Module):
    """Study 01's network: a pre-processing stem, then `len(widths)` effective convolutions, pooling, a linear head.

    Defaults are the write-up's model (5 x 5 to 384 channels, 3 x 3 to 768 channels: 3,318,898 parameters for 50
    classes). widths=(384,) gives the single-layer ablation, kernel_sizes=(3, 3) the smaller-kernel ablation.
    """

    def __init__(self, num_classes=50, widths=(384, 768), kernel_sizes=(5, 3), stem_channels=64):
        super().__init__()
        if len(widths) != len(kernel_sizes):
            raise ValueError("widths and kernel_sizes need one entry per effective layer")
        # The stem is pre-processing by the study's definition: it does not count as an effective layer.
        self.stem = nn.Sequential(*conv_bn_relu(3, stem_channels, 7, 2), nn.MaxPool2d(3, 2, 1))
        layers, in_channels = [], stem_channels
        for width, k in zip(widths, kernel_sizes):
            layers += conv_bn_relu(in_channels, width, k) + [nn.MaxPool2d(2, 2)]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(self.stem(x))), 1))


def count_effective_layers(model):
    """Convolutions outside the pre-processing stem: the study's 'effective layers' (BN, ReLU, pooling do not count)."""
    stem = getattr(model, "stem", None)
    if stem is None and isinstance(model, torchvision.models.ResNet):
        stem = model.conv1  # torchvision's stem is conv1 + bn1 + relu + maxpool
    in_stem = {id(m) for m in stem.modules()} if stem is not None else set()
    return sum(1 for m in model.modules() if isinstance(m, nn.Conv2d) and id(m) not in in_stem)


def two_layer_variants(num_classes=50):
    """Study 01's models by name: the full net, its two ablations, and the ResNet34 baseline."""
    return {
        "two_layer": lambda: StrictTwoLayerNet(num_classes),
        "single_layer": lambda: StrictTwoLayerNet(num_classes, widths=(384,), kernel_sizes=(5,)),
        "smaller_kernel": lambda: StrictTwoLayerNet(num_classes, kernel_sizes=(3, 3)),
        "resnet34": lambda: torchvision.models.resnet34(weights=None, num_classes=num_classes),
    }


# ---------------------------------------------------------------- study 02: ResNet50 + simplified CBAM

CBAM_PLACEMENTS = ("stage", "block")


class ChannelAttention(nn.Module):
    """Per-channel gate from global average pooling through a bias-free bottleneck MLP (no max-pool branch)."""

    def __init__(self, channels, reduction=128):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden, bias=False), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels, bias=False))

    def forward(self, x):
        gate = torch.sigmoid(self.mlp(x.mean((2, 3))))
        return x * gate[:, :, None, None]


class SpatialAttention(nn.Module):
    """Per-position gate from a k x k convolution over the channel-wise mean and max maps."""

    def __init__(self, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x):
        maps = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(maps))


class SimplifiedCBAM(nn.Module):
    """CBAM (Woo et al., 2018) made lighter as study 02 describes: channel attention, then spatial attention."""

    def __init__(self, channels, reduction=128, spatial_kernel=3):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(spatial_kernel)

    def forward(self, x):
        return self.spatial(self.channel(x))


def resnet50_imagenet_state(weights="IMAGENET1K_V2", allow_random_init=False, timeout_s=60):
    """torchvision ResNet50's ImageNet weights as a state_dict, or (None, why) when they cannot be had.

    Returns (state_dict or None, message). The weights come through torchvision's weights API, which keeps them in
    torch hub's cache (`torch.hub.get_dir()`/checkpoints) after the first download. weights="" asks for random
    initialisation. Unavailable weights raise an error saying where to put the file, unless allow_random_init.
    """
    if not weights:
        return None, "weights='' asks for random initialisation: training from scratch"
    try:
        enum = torchvision.models.ResNet50_Weights[weights]
    except KeyError:
        raise ValueError(f"weights={weights!r} is not a torchvision ResNet50 weight set; use one of "
                         f"{list(torchvision.models.ResNet50_Weights.__members__)} or '' for none") from None
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # a blocked network should fail, not hang the notebook
    try:
        state = torchvision.models.resnet50(weights=enum).state_dict()
    except Exception as err:  # URLError/OSError offline, RuntimeError/UnpicklingError for a damaged file
        damaged = os.path.isfile(path)
        message = (f"cannot load ResNet50 weights {weights} ({type(err).__name__}: {err}). " +
                   (f"The cached file {path} is damaged: delete it so it is downloaded again, or replace it with "
                    f"a good copy of {enum.url}." if damaged else
                    f"Offline? Download {enum.url} on a machine with internet and put it at {path} "
                    "(that is torch.hub.get_dir()/checkpoints/; set TORCH_HOME to move it); torchvision then "
                    "loads it from there without a network.") +
                   ("" if allow_random_init else  # a caller that allows it needs no advice to allow it
                    " Or pass allow_random_init=True to train from scratch (far below the study's accuracy)."))
        if not allow_random_init:
            raise RuntimeError(message) from err
        return None, message
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return state, f"loaded ImageNet weights {weights} from {path}"


def resnet50_cbam(num_classes=100, *, use_cbam=True, placement="stage", reduction=128, spatial_kernel=3,
                  dropout=0.3, backbone_state=None):
    """Study 02's network: torchvision ResNet50, simplified CBAM modules, dropout and a `num_classes`-way head.

    placement="stage" puts one CBAM after each of the four stages (87,112 extra parameters, the reading that
    reproduces the write-up's 23,800,022 within 22); "block" puts one after every bottleneck block (+314,656).
    `backbone_state` is a torchvision ResNet50 state_dict (ImageNet weights) loaded before the changes.
    """
    if placement not in CBAM_PLACEMENTS:
        raise ValueError(f"placement={placement!r} must be one of {CBAM_PLACEMENTS}")
    model = torchvision.models.resnet50(weights=None)
    if backbone_state is not None:
        model.load_state_dict(backbone_state)
    if use_cbam:
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            if placement == "stage":
                stage.append(SimplifiedCBAM(stage[-1].conv3.out_channels, reduction, spatial_kernel))
            else:
                for i, block in enumerate(stage):
                    stage[i] = nn.Sequential(block, SimplifiedCBAM(block.conv3.out_channels, reduction,
                                                                   spatial_kernel))
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model


def resnet50_cbam_arch(num_classes, *, use_cbam=True, placement="stage", reduction=128, spatial_kernel=3,
                       dropout=0.3):
    """The settings that rebuild a resnet50_cbam model, as a plain dict to store beside its weights."""
    return {"name": "resnet50_cbam", "num_classes": int(num_classes), "use_cbam": bool(use_cbam),
            "placement": placement, "reduction": int(reduction), "spatial_kernel": int(spatial_kernel),
            "dropout": float(dropout)}


def build_from_arch(arch):
    """Rebuild (randomly initialised) the model an `arch` dict describes, e.g. from a checkpoint."""
    arch = dict(arch)
    name = arch.pop("name", None)
    if name != "resnet50_cbam":
        raise ValueError(f"unknown model name {name!r} in the checkpoint's arch; this project builds 'resnet50_cbam'")
    return resnet50_cbam(**arch)


def check_budget(num_params, max_params):
    """Refuse a model over the study's parameter budget before it trains."""
    if num_params > max_params:
        raise ValueError(f"the model has {num_params:,} parameters, over max_params={max_params:,}: "
                         "use fewer channels or blocks")
