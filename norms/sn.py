"""sn: Switchable Normalization (Luo et al. 2018, "Differentiable Learning-to-Normalize via
Switchable Normalization"): each layer learns how much of in, ln and bn it is.

For x (N, C, *), with moments over these axes (biased variances):
    in: over * per sample and channel     mu_in, var_in
    ln: over (C, *) per sample            mu_ln = mean_c mu_in, var_ln = mean_c(var_in + mu_in^2) - mu_ln^2
    bn: over (N, *) per channel           mu_bn = mean_n mu_in, var_bn = mean_n(var_in + mu_in^2) - mu_bn^2
(ln's and bn's from in's, as the authors' reference code computes them),
    mu = sum_k softmax(mean_weight)_k mu_k,  var = sum_k softmax(var_weight)_k var_k,  k in (in, ln, bn),
    y = (x - mu) / sqrt(var + eps) * gamma + beta,
with `mean_weight` and `var_weight` three learned logits each, in that order (from 1: equal
weights). In training the bn branch takes the batch's moments and updates running statistics
as bn does (momentum, unbiased running variance); in evaluation it takes the running ones, so
sn is a batch-statistics norm (the normalization batch, PreciseBN, the batch-of-one check).
The reference's in variance is the unbiased one; here it is biased, so that each branch is
exactly its norm (in, ln, bn) and one-hot weights give that norm. On ViT tokens (N, L, C) the
tokens take the place of pixels (norms/tokens.py): ln's branch is over (L, C) per sample.
"""
from __future__ import annotations

import torch
from torch import nn

from .batch import BatchStatistics, per_channel
from .layers import at_least_fp32
from .registry import POSITIVE, UNIT_INTERVAL, Norm, register
from .tokens import TokenLayout

BRANCHES = ("in", "ln", "bn")


class SwitchNorm(BatchStatistics):
    """sn of (N, C, *): in's, ln's and bn's moments, mixed by learned softmax weights."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        self.mean_weight = nn.Parameter(torch.ones(len(BRANCHES)))
        self.var_weight = nn.Parameter(torch.ones(len(BRANCHES)))

    @staticmethod
    def instance_moments(x: torch.Tensor):
        """(mu_in, var_in, E[x^2]) per sample and channel (N, C), over every axis after C."""
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        var, mean = torch.var_mean(flat, -1, correction=0)
        return mean, var, var + mean * mean

    def train_forward(self, x):
        dtype, x = x.dtype, at_least_fp32(x)
        mean_in, var_in, sq_in = self.instance_moments(x)
        mean_bn = mean_in.mean(0)
        var_bn = sq_in.mean(0) - mean_bn * mean_bn
        self.update_running(mean_bn, var_bn, float(x.numel() // x.shape[1]))
        return self._normalize(x, mean_in, var_in, sq_in, mean_bn, var_bn).to(dtype)

    def eval_forward(self, x):
        dtype, x = x.dtype, at_least_fp32(x)
        mean_in, var_in, sq_in = self.instance_moments(x)
        return self._normalize(x, mean_in, var_in, sq_in, self.running_mean, self.running_var).to(dtype)

    def _normalize(self, x, mean_in, var_in, sq_in, mean_bn, var_bn):
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = sq_in.mean(1, keepdim=True) - mean_ln * mean_ln
        wm, wv = torch.softmax(self.mean_weight, 0), torch.softmax(self.var_weight, 0)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn  # (N, C)
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        shape = (*mean.shape, *[1] * (x.dim() - 2))
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        return y * per_channel(self.weight, y) + per_channel(self.bias, y) if self.affine else y


class SwitchNorm2d(SwitchNorm):
    """sn of CNN maps (N, C, H, W)."""


class TokenSwitchNorm(TokenLayout, SwitchNorm):
    """sn of (N, L, C) tokens, tokens in place of pixels."""


register(Norm(
    kind="sn",
    layers={"nchw": SwitchNorm2d, "nlc": TokenSwitchNorm},
    options={"eps": 1e-5, "momentum": 0.1, "affine": True},
    classes=(SwitchNorm2d, TokenSwitchNorm),
    batch_statistics=True,
    option_ranges={"eps": POSITIVE, "momentum": UNIT_INTERVAL},
))
