"""The CIFAR ResNet of He et al. (2016), depth 6n+2: resnet20, resnet32, resnet44, resnet56, ...

Three stages of n basic blocks at widths (w, 2w, 4w), w = 16 in the paper. Shortcuts that
change shape use a 1x1 convolution followed by a norm (option B). The norms followed by a ReLU
(the stem's, each block's first) are norm-activation sites (act=True): a norm that includes its
activation replaces the ReLU there; the ReLU after each residual addition stays. `skipinit`
multiplies each residual branch by a learned scalar from 0 (SkipInit), before the addition.
"""
from __future__ import annotations

from torch import nn

from .common import NormFactory, activation_after, apply_conv, skip_gain, zero_init_last_norm


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory, zero_init: bool, skipinit: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = norm(cout, act=True)
        self.act1 = activation_after(self.norm1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = norm(cout)
        if zero_init:
            self.norm2 = zero_init_last_norm(self.norm2, cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))
        self.relu = nn.ReLU(inplace=True)
        self.skip_gain = skip_gain(skipinit)  # SkipInit: the branch times a learned scalar from 0

    def forward(self, x):
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.skip_gain(self.norm2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, norm: NormFactory, in_channels: int, num_classes: int,
                 width: int = 16, zero_init_residual: bool = True, conv: str = "plain", skipinit: bool = False):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}")
        n = (depth - 2) // 6
        stem_norm = norm(width, act=True)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), stem_norm, activation_after(stem_norm))
        blocks, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, cout, stride, norm, zero_init_residual, skipinit))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        apply_conv(self, conv, "cifar_resnet")

    def forward(self, x):
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))
