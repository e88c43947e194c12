"""Backbones. `build` turns the `model` and `norm` config groups into an nn.Module.

Every norm layer in every model comes from `norms.build`; no file here names a norm class.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

import norms

from .common import CONVS as CONVS
from .common import norm_factory
from .resnet_cifar import CifarResNet
from .resnet_tv import torchvision_resnet
from .vit import vit

# arch name -> constructor(norm=..., in_channels=..., num_classes=..., [image_size=...], **options)
ARCHS = {"cifar_resnet": CifarResNet, "torchvision_resnet": torchvision_resnet, "vit": vit}
# Keys of the model config that describe the run, not the constructor.
_META_KEYS = {"name", "arch", "gn_groups"}  # gn_groups: read by conf/norm/gn.yaml
# What `build` gives every constructor, from the data set and the norm config.
BUILT_WITH = ("norm", "in_channels", "num_classes", "image_size")


def defaults(arch: str) -> dict:
    """The options an arch's constructor takes and their defaults (conf/model/ refers to them
    as ${model_default:<option>})."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model arch {arch!r}; valid archs: {', '.join(sorted(ARCHS))}")
    params = inspect.signature(ARCHS[arch]).parameters
    return {k: p.default for k, p in params.items() if k not in BUILT_WITH and p.default is not p.empty}


def build(model: dict, norm: dict, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build the backbone named by `model["arch"]` with options from the rest of `model`."""
    model = dict(model)
    arch = model.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown model arch {arch!r}; valid archs: {', '.join(sorted(ARCHS))}")
    ctor = ARCHS[arch]
    options = {k: v for k, v in model.items() if k not in _META_KEYS}
    params = inspect.signature(ctor).parameters
    valid = [p for p in params if p not in BUILT_WITH]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"model {model.get('name', arch)!r} ({arch}) does not take option(s) {unknown}; valid options: {valid}")
    kwargs = dict(in_channels=in_channels, num_classes=num_classes)
    if "image_size" in params:
        kwargs["image_size"] = image_size
    factory = norm_factory(norm)  # checks the kind
    norms.check_sites(norm, lambda: _sites(ctor, kwargs, options))
    return ctor(norm=factory, **kwargs, **options)


class _Site(nn.Identity):
    """Stands in for a norm while the model is probed for the channel count of every norm site."""

    def __init__(self, num_channels: int, layout: str = "nchw", **_):
        super().__init__()
        self.num_channels = num_channels


def _sites(ctor, kwargs, options) -> list[tuple[str, int]]:
    """(layer name, channels) of every norm site of the model, from a probe built with stand-ins."""
    with torch.random.fork_rng(devices=[]):  # probing must not change the real model's initialisation
        probe = ctor(norm=_Site, **kwargs, **options)
    return [(name, m.num_channels) for name, m in probe.named_modules() if isinstance(m, _Site)]


def activation_bytes(net: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd keeps for backward in one training forward of x.

    The activation memory a training step holds from its forward to its backward: the part of a
    step's memory that differs between norms. Counted by storage, so a tensor saved by two
    autograd nodes, or a view of it, counts once; parameters and buffers are left out.
    """
    own = {t.untyped_storage().data_ptr() for t in (*net.parameters(), *net.buffers())}
    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(x)
    del out  # the graph, and what it saved, goes with it
    return sum(storages.values())

