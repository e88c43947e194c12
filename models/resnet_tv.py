"""torchvision's ResNet-18/34/50/101 with the norm injected through its `norm_layer` argument.

torchvision's blocks share one ReLU between the norm-activation sites and the residual
addition, so NormLab's blocks (subclasses, same parameters and names) build the norms followed
by a ReLU (the stem's; bn1, and bn2 of a bottleneck) with act=True and apply
`activation_after` there: a norm that includes its activation replaces the ReLU at those sites.
"""
from __future__ import annotations

import inspect

from torch import nn
from torchvision.models import resnet

from .common import NormFactory, activation_after, apply_conv, skip_gain, zero_init_last_norm


def _norm_layer(block: type, args, kwargs) -> NormFactory:
    """The norm factory torchvision hands a block (positionally or by name)."""
    return inspect.signature(block.__init__).bind(None, *args, **kwargs).arguments["norm_layer"]


class BasicBlock(resnet.BasicBlock):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        norm_layer = _norm_layer(resnet.BasicBlock, args, kwargs)
        self.bn1 = norm_layer(self.conv1.out_channels, act=True)
        self.act1 = activation_after(self.bn1)
        self.skip_gain = skip_gain(False)  # torchvision_resnet(skipinit=True) sets SkipInit's

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.skip_gain(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(resnet.Bottleneck):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        norm_layer = _norm_layer(resnet.Bottleneck, args, kwargs)
        self.bn1 = norm_layer(self.conv1.out_channels, act=True)
        self.bn2 = norm_layer(self.conv2.out_channels, act=True)
        self.act1, self.act2 = activation_after(self.bn1), activation_after(self.bn2)
        self.skip_gain = skip_gain(False)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.skip_gain(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


_DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
           101: (Bottleneck, [3, 4, 23, 3])}


def torchvision_resnet(depth: int, norm: NormFactory, in_channels: int, num_classes: int,
                       small_stem: bool = True, zero_init_residual: bool = True, conv: str = "plain",
                       skipinit: bool = False) -> nn.Module:
    """small_stem: a 3x3 stride-1 first conv and no max-pool, for 28-32 px images; skipinit: each
    residual branch times a learned scalar from 0 (SkipInit)."""
    if depth not in _DEPTHS:
        raise ValueError(f"torchvision ResNet depth must be one of {sorted(_DEPTHS)}, got {depth!r}")
    # torchvision's own zero_init_residual writes `bn.weight` directly and fails for
    # affine-free norms, so we zero-init ourselves.
    block, layers = _DEPTHS[depth]
    model = resnet.ResNet(block, layers, num_classes=num_classes, norm_layer=norm)
    model.bn1 = norm(64, act=True)
    model.relu = activation_after(model.bn1)  # the stem's; the blocks have their own
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if zero_init_residual:
        for b in model.modules():
            if isinstance(b, Bottleneck):
                b.bn3 = zero_init_last_norm(b.bn3, b.conv3.out_channels)
            elif isinstance(b, BasicBlock):
                b.bn2 = zero_init_last_norm(b.bn2, b.conv2.out_channels)
    if skipinit:
        for b in model.modules():
            if isinstance(b, (BasicBlock, Bottleneck)):
                b.skip_gain = skip_gain(True)
    return apply_conv(model, conv, "torchvision_resnet")
