"""dyt: Dynamic Tanh (Zhu, Chen, He, LeCun & Liu, CVPR 2025, "Transformers without
Normalization"): y = gamma * tanh(alpha * x) + beta, element-wise.

alpha is one learned scalar per layer, from `alpha_init` (0.5, the paper's value for
non-language models; it reports ViT-L diverging above about 0.6); gamma (ones) and beta (zeros)
per channel, along dim 1 of CNN maps and the last dim of ViT tokens. No statistics of any kind:
the same in training and evaluation, independent of the batch. A drop-in for ln in a ViT; in a
ResNet, in place of bn, the paper reports a large loss (a negative control there).

`saturation(x)`: the fraction of activations whose tanh(alpha * x) is beyond 0.99 in absolute
value (the diagnostics log it, harness/diagnostics.py): where the layer acts as a sign function
and passes almost no gradient.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ChannelAffine
from .registry import POSITIVE, Norm, register

SATURATED = 0.99  # |tanh(alpha x)| above this counts as saturated


class PointwiseNorm(ChannelAffine):
    """gamma * f(x) + beta per channel, f an element-wise squashing with learned scalars."""

    channel_dim = 1

    def __init__(self, num_channels: int, alpha_init: float):
        super().__init__(num_channels, eps=0.0, affine=True)
        self.alpha_init = alpha_init
        self.alpha = nn.Parameter(torch.full((1,), float(alpha_init)))

    def squash(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x):
        c = self.channel_dim % x.dim()
        return self.squash(x) * self.along_channels(self.weight, x, c) + self.along_channels(self.bias, x, c)

    @torch.no_grad()
    def saturation(self, x: torch.Tensor) -> torch.Tensor:
        """mean(|f(x)| > 0.99): the fraction of saturated activations (a 0-dim tensor)."""
        return (self.squash(x.float()).abs() > SATURATED).float().mean()

    def extra_repr(self):
        return f"{self.num_channels}, alpha_init={self.alpha_init}"


class DynamicTanh(PointwiseNorm):
    def squash(self, x):
        return torch.tanh(self.alpha * x)


class DynamicTanh2d(DynamicTanh):
    """Channels along dim 1 of (N, C, H, W)."""


class TokenDynamicTanh(DynamicTanh):
    """Channels along the last dim of (N, L, C)."""

    channel_dim = -1


register(Norm(
    kind="dyt",
    layers={"nchw": DynamicTanh2d, "nlc": TokenDynamicTanh},
    options={"alpha_init": 0.5},
    classes=(DynamicTanh2d, TokenDynamicTanh),
    option_ranges={"alpha_init": POSITIVE},
))
