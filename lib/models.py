"""The studies' models: the configurable CIFAR ResNet, StrictTwoLayerNet and its ablations; torchvision for the rest."""
import torch
from torch import nn
import torchvision


def _as_list(value, n, name):
    """Broadcast an int to n stages, or check a per-stage list has n entries."""
    values = [value] * n if isinstance(value, int) else list(value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but the network has {n} stages")
    return values


class BasicBlock(nn.Module):
    """ResNet basic block (two k x k convolutions) with dropout between them and a projection where shape changes."""

    def __init__(self, in_channels, out_channels, stride=1, kernel_size=3, skip_kernel_size=1, dropout=0.0):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
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

    Defaults are the seed's model (5 x 5 to 384 channels, 3 x 3 to 768 channels: 3,318,898 parameters for 50
    classes). widths=(384,) gives the single-layer ablation, kernel_sizes=(3, 3) the smaller-kernel ablation.
    """

    def __init__(self, num_classes=50, widths=(384, 768), kernel_sizes=(5, 3), stem_channels=64):
        super().__init__()
        if len(widths) != len(kernel_sizes):
            raise ValueError("widths and kernel_sizes need one entry per effective layer")
        # The stem is pre-processing by the seed's definition: it does not count as an effective layer.
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
    """Convolutions outside the pre-processing stem: the seed's 'effective layers' (BN, ReLU, pooling do not count)."""
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
