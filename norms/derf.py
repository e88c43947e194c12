"""derf: Dynamic erf (2025, a successor of dyt from the same line of work), as its authors'
reference code defines it: y = gamma * erf(alpha * x + s) + beta, element-wise.

alpha and s are learned scalars per layer, from `alpha_init` (0.5) and 0; gamma (ones) and beta
(zeros) per channel, along dim 1 of CNN maps and the last dim of ViT tokens. Like dyt: no
statistics, the same in training and evaluation. `saturation(x)` is mean(|erf(alpha x + s)| >
0.99), logged by the diagnostics.
"""
from __future__ import annotations

import torch
from torch import nn

from .dyt import PointwiseNorm
from .registry import POSITIVE, Norm, register


class DynamicErf(PointwiseNorm):
    def __init__(self, num_channels: int, alpha_init: float):
        super().__init__(num_channels, alpha_init)
        self.shift = nn.Parameter(torch.zeros(1))

    def squash(self, x):
        return torch.erf(self.alpha * x + self.shift)


class DynamicErf2d(DynamicErf):
    """Channels along dim 1 of (N, C, H, W)."""


class TokenDynamicErf(DynamicErf):
    """Channels along the last dim of (N, L, C)."""

    channel_dim = -1


register(Norm(
    kind="derf",
    layers={"nchw": DynamicErf2d, "nlc": TokenDynamicErf},
    options={"alpha_init": 0.5},
    classes=(DynamicErf2d, TokenDynamicErf),
    option_ranges={"alpha_init": POSITIVE},
))
