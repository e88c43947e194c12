"""torchvision's ResNet-18/50 with the norm injected through its `norm_layer` argument."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet

from .common import NormFactory, apply_conv, zero_init_last_norm

_DEPTHS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}


def torchvision_resnet(depth: int, norm: NormFactory, in_channels: int, num_classes: int,
                       small_stem: bool = True, zero_init_residual: bool = True, conv: str = "plain") -> nn.Module:
    """small_stem: a 3x3 stride-1 first conv and no max-pool, for 28-32 px images."""
    if depth not in _DEPTHS:
        raise ValueError(f"torchvision ResNet depth must be one of {sorted(_DEPTHS)}, got {depth!r}")
    # torchvision calls norm_layer(C) with one argument; its own zero_init_residual writes
    # `bn.weight` directly and fails for affine-free norms, so we zero-init ourselves.
    model = _DEPTHS[depth](num_classes=num_classes, norm_layer=norm)
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if zero_init_residual:
        for block in model.modules():
            if isinstance(block, resnet.Bottleneck):
                block.bn3 = zero_init_last_norm(block.bn3, block.conv3.out_channels)
            elif isinstance(block, resnet.BasicBlock):
                block.bn2 = zero_init_last_norm(block.bn2, block.conv2.out_channels)
    return apply_conv(model, conv, "torchvision_resnet")
