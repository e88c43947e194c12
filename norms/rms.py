"""rms: RMSNorm, x / sqrt(mean of x^2 + eps) * gamma (+ beta), no mean subtraction: over C per
token for ViT tokens (N, L, C), over C per pixel for CNN maps (N, C, H, W) (timm's RmsNorm2d)."""
from __future__ import annotations

import torch
from .layers import ChannelAffine
from .registry import POSITIVE, Norm, register


class _RMS(ChannelAffine):
    channel_dim = -1

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(self.channel_dim, keepdim=True) + self.eps)
        if self.affine:
            c = self.channel_dim
            y = y * self.along_channels(self.weight, x, c) + self.along_channels(self.bias, x, c)
        return y


class RMSNormLC(_RMS):
    """Over C per token of (N, L, C)."""


class RMSNorm2d(_RMS):
    """Over C per pixel of (N, C, H, W)."""

    channel_dim = 1


register(Norm(
    kind="rms",
    layers={"nchw": RMSNorm2d, "nlc": RMSNormLC},
    options={"eps": 1e-6, "affine": True},
    classes=(RMSNorm2d, RMSNormLC),
    option_ranges={"eps": POSITIVE},
))
