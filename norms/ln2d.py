"""ln2d: ConvNeXt's channels-only LayerNorm, mean and variance over C per pixel of (N, C, H, W);
not ln, which normalizes over (C, H, W) per sample. On ViT tokens (N, L, C) it is ln with
scope=token (over C per token), the same computation."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import POSITIVE, Norm, register


class LayerNorm2d(nn.LayerNorm):
    """nn.LayerNorm over C, applied per pixel: (N, C, H, W) -> (N, H, W, C) -> back."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class TokenLayerNorm(nn.LayerNorm):
    """ln2d on tokens: over C per token, as nn.LayerNorm."""


def _build(cls):
    def build(num_channels, eps, affine):
        return cls(num_channels, eps=eps, elementwise_affine=affine)
    return build


register(Norm(
    kind="ln2d",
    layers={"nchw": _build(LayerNorm2d), "nlc": _build(TokenLayerNorm)},
    options={"eps": 1e-6, "affine": True},
    classes=(LayerNorm2d, TokenLayerNorm),
    option_ranges={"eps": POSITIVE},
))
