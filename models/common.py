"""Pieces shared by the backbones: the norm factory handed to them, the activation after a
norm-activation site, residual zero-init, SkipInit's residual gain, and (Scaled) Weight
Standardization."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

import norms

NormFactory = Callable[..., nn.Module]


def norm_factory(norm: dict) -> NormFactory:
    """`norm` is the config group: {"kind": "gn", **options}. Returns build(C, layout=...)."""
    norm = dict(norm)
    kind = norm.pop("kind", None)
    if kind is None:
        raise ValueError(f"norm config needs a 'kind' (one of {', '.join(norms.kinds())}); got {norm}")
    norms.get(kind)  # an unknown kind fails here, before any layer is built
    return partial(norms.build, kind, **norm)


def activation_after(norm_layer: nn.Module) -> nn.Module:
    """The activation a backbone applies after a norm it built with act=True (a site where a norm
    is followed by an activation): none when the norm includes its own (frn's TLU, the
    EvoNorms), else ReLU. Sites built with act=False (before a residual addition, in a
    shortcut) keep a plain norm."""
    return nn.Identity() if norms.includes_activation(norm_layer) else nn.ReLU(inplace=True)


class SkipInit(nn.Module):
    """A learnable per-channel scale initialised to zero (De & Smith 2020, "SkipInit").

    Used as the zero-init of a residual branch whose last norm has no gamma to zero.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return x * self.scale.view(1, -1, *([1] * (x.dim() - 2)))


class SkipGain(nn.Module):
    """SkipInit (De & Smith 2020): a residual branch times one learned scalar, initialised to 0,
    so every block starts as its shortcut (model.skipinit=true; the norm-free ResNets' remedy
    for what a norm does to a residual branch at initialisation)."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x * self.gain


def skip_gain(skipinit: bool) -> nn.Module:
    """What a block multiplies its residual branch by: a SkipGain, or nothing (an Identity holds
    no state, so a model without SkipInit keeps its parameters and checkpoints as before)."""
    return SkipGain() if skipinit else nn.Identity()


def zero_init_last_norm(norm: nn.Module, num_channels: int) -> nn.Module:
    """Make a residual branch start at zero, as in the GN paper (gamma of its last norm = 0).

    A norm with an affine weight gets that weight zeroed. A norm without one (in without
    affine, none) is followed by a zero-initialised SkipInit scale instead, so the option
    means the same thing, "the branch starts as zero", for every kind.
    """
    weight = getattr(norm, "weight", None)
    if isinstance(weight, nn.Parameter):
        nn.init.zeros_(weight)
        return norm
    return nn.Sequential(norm, SkipInit(num_channels))


CONVS = ("plain", "ws", "sws")


class Standardized(nn.Module):
    """Weight Standardization (Qiao et al. 2019) as a parametrization of a conv's weight: each
    filter minus its mean, over its biased standard deviation + eps, over (C_in, k_h, k_w)."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, w):
        var, mean = torch.var_mean(w, dim=tuple(range(1, w.dim())), keepdim=True, correction=0)
        return (w - mean) / (var.sqrt() + self.eps)


class ScaledStandardized(nn.Module):
    """Scaled Weight Standardization (Brock et al. 2021, the NF-ResNets; timm's ScaledStdConv2d)
    as a parametrization of a conv's weight: gain * (W - mean) / sqrt(var + eps) / sqrt(fan_in),
    mean and biased variance per output filter over its fan-in (C_in, k_h, k_w), `gain` a learned
    per-filter scale from 1 (a parameter of this module, so the optimizer updates it). Each
    output then has the variance of its input's second moment, without a norm. timm's `gamma`
    (the activation's gain, 1 by default) is 1 here."""

    def __init__(self, out_channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(out_channels, 1, 1, 1))

    def forward(self, w):
        var, mean = torch.var_mean(w, dim=tuple(range(1, w.dim())), keepdim=True, correction=0)
        return (w - mean) * torch.rsqrt(var + self.eps) * (self.gain * w[0].numel() ** -0.5)


def apply_conv(model: nn.Module, conv: str, arch: str) -> nn.Module:
    """model.conv: "plain" leaves the convolutions; "ws" standardizes the weight of every conv,
    each of which is followed by a norm in NormLab's ResNets (the WS authors' advice); "sws"
    gives every conv the NF-ResNets' Scaled WS with its learned gain (with norm=none, the
    norm-free ResNet). Both through torch's parametrizations (the stored parameter is the raw
    weight)."""
    if conv not in CONVS:
        raise ValueError(f"model.conv must be one of {', '.join(CONVS)}, got {conv!r}")
    if conv in ("ws", "sws"):
        from torch.nn.utils import parametrize

        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"model.conv={conv}: model arch {arch!r} has no convolution to standardize")
        for m in convs:
            parametrize.register_parametrization(m, "weight", Standardized() if conv == "ws"
                                                 else ScaledStandardized(m.out_channels))
    return model
