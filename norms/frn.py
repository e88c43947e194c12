"""frn: Filter Response Normalization with its Thresholded Linear Unit (Singh & Krishnan 2020).

nu^2 = mean of x^2 over H, W per sample and channel (over L for ViT tokens), no mean
subtraction; y = gamma * x / sqrt(nu^2 + eps) + beta; at a site the network follows with an
activation, z = max(y, tau) (TLU, per-channel tau from 0) replaces that activation.
Elsewhere (before a residual addition, in a shortcut, every ViT site) it is FRN without TLU.

`learnable_eps`: eps + |eps_l| with a per-channel eps_l, initialised at 1e-4 (so |eps_l| has a
gradient), the paper's remedy for 1x1 maps, where nu^2 = x^2 and FRN without it is
gamma * sign(x) + beta. The paper trains FRN with learning-rate warmup.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ChannelAffine, at_least_fp32
from .registry import POSITIVE, Norm, register


class _FilterResponseNorm(ChannelAffine):
    channel_dim = 1

    def __init__(self, num_channels: int, eps: float, learnable_eps: bool, apply_act: bool):
        super().__init__(num_channels, eps, affine=True)
        self.apply_act, self.learnable_eps = apply_act, learnable_eps
        self.tau = nn.Parameter(torch.zeros(num_channels)) if apply_act else None
        self.eps_l = nn.Parameter(torch.full((num_channels,), 1e-4)) if learnable_eps else None

    def forward(self, x):
        c = self.channel_dim % x.dim()
        dtype, x = x.dtype, at_least_fp32(x)
        nu2 = x.pow(2).mean([d for d in range(1, x.dim()) if d != c], keepdim=True)
        eps = self.eps + self.along_channels(self.eps_l.abs(), x, c) if self.eps_l is not None else self.eps
        y = x * torch.rsqrt(nu2 + eps) * self.along_channels(self.weight, x, c) + self.along_channels(self.bias, x, c)
        if self.apply_act:
            y = torch.maximum(y, self.along_channels(self.tau, x, c))
        return y.to(dtype)

    def extra_repr(self):
        return super().extra_repr() + f", learnable_eps={self.learnable_eps}, tlu={self.apply_act}"


class FilterResponseNorm2d(_FilterResponseNorm):
    """Over (H, W) per sample and channel of (N, C, H, W)."""


class TokenFilterResponseNorm(_FilterResponseNorm):
    """Over L per sample and channel of (N, L, C) tokens."""

    channel_dim = -1


register(Norm(
    kind="frn",
    layers={"nchw": FilterResponseNorm2d, "nlc": TokenFilterResponseNorm},
    options={"eps": 1e-6, "learnable_eps": False},
    classes=(FilterResponseNorm2d, TokenFilterResponseNorm),
    option_ranges={"eps": POSITIVE},
    activation="TLU",
))
