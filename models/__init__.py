"""Backbones. `build` turns the `model` and `norm` config groups into an nn.Module.

Every norm layer in every model comes from `norms.build`; no file here names a norm class.
"""
from __future__ import annotations

import inspect

from torch import nn

from .common import norm_factory
from .resnet_cifar import CifarResNet
from .resnet_tv import torchvision_resnet
from .vit import vit

# arch name -> constructor(norm=..., in_channels=..., num_classes=..., [image_size=...], **options)
ARCHS = {"cifar_resnet": CifarResNet, "torchvision_resnet": torchvision_resnet, "vit": vit}
# Keys of the model config that describe the run, not the constructor.
_META_KEYS = {"name", "arch"}


def build(model: dict, norm: dict, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build the backbone named by `model["arch"]` with options from the rest of `model`."""
    model = dict(model)
    arch = model.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown model arch {arch!r}; valid archs: {', '.join(sorted(ARCHS))}")
    ctor = ARCHS[arch]
    options = {k: v for k, v in model.items() if k not in _META_KEYS}
    params = inspect.signature(ctor).parameters
    fixed = {"norm", "in_channels", "num_classes", "image_size"}
    valid = [p for p in params if p not in fixed]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"model {model.get('name', arch)!r} ({arch}) does not take option(s) {unknown}; valid options: {valid}")
    kwargs = dict(norm=norm_factory(norm), in_channels=in_channels, num_classes=num_classes)
    if "image_size" in params:
        kwargs["image_size"] = image_size
    return ctor(**kwargs, **options)
