"""Pieces shared by the backbones: the norm factory handed to them and residual zero-init."""
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


class SkipInit(nn.Module):
    """A learnable per-channel scale initialised to zero (De & Smith 2020, "SkipInit").

    Used as the zero-init of a residual branch whose last norm has no gamma to zero.
    """

    def __init__(self, num_channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return x * self.scale.view(1, -1, *([1] * (x.dim() - 2)))


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
