"""evonorm_s0 and evonorm_b0: the normalization-activation layers of Liu et al. (2020),
"Evolving Normalization-Activation Layers", for CNN maps (N, C, H, W).

Each replaces a norm and the activation after it (the network applies none of its own there):
- S0: y = x * sigmoid(v * x) / sqrt(var_group(x) + eps) * gamma + beta, var_group the biased
  variance over (C/G channels, H, W) per sample and group; no batch statistics.
- B0: y = x / max(sqrt(var_batch(x) + eps), v * x + sqrt(var_instance(x) + eps)) * gamma + beta,
  var_batch over (N, H, W) per channel in training (a running average, updated as bn's, in
  evaluation), var_instance over (H, W) per sample and channel. A batch-statistics norm: the
  normalization batch, the batch-of-one check, ghost batches and `sync` apply as to bn.
v is per channel, initialised to 1. At a site with no activation after it (before a residual
addition, in a shortcut) the authors' reference implementation, and timm's, apply only
gamma * x + beta (their `nonlinearity=False`), and so do these layers.

No token (N, L, C) definition: the authors define them for CNNs only, and a ViT has no site
where a norm is followed by an activation, so an EvoNorm there would be gamma * x + beta alone.
"""
from __future__ import annotations

import torch
from torch import nn

from .batch import BatchStatistics, batch_moments
from .layers import ChannelAffine, at_least_fp32, group_sites, grouped
from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Norm, register

_NO_TOKENS = ("the EvoNorms are defined for CNN feature maps, and a ViT applies no activation right after a norm, "
              "so one there would be gamma * x + beta alone; use frn, ln, rms or gn for the ViT")


def _view(t: torch.Tensor) -> torch.Tensor:
    return t.view(1, -1, 1, 1)


class EvoNormS0(ChannelAffine):
    def __init__(self, num_groups: int, num_channels: int, eps: float, apply_act: bool):
        super().__init__(num_channels, eps, affine=True)
        self.num_groups, self.apply_act = num_groups, apply_act
        self.v = nn.Parameter(torch.ones(num_channels)) if apply_act else None

    def forward(self, x):
        if not self.apply_act:
            return x * _view(self.weight) + _view(self.bias)
        dtype, x = x.dtype, at_least_fp32(x)
        n, c, h, w = x.shape
        var = x.view(n, self.num_groups, -1).var(-1, correction=0, keepdim=True)
        std = (var + self.eps).sqrt().expand(n, self.num_groups, c // self.num_groups * h * w).reshape(n, c, h, w)
        y = x * torch.sigmoid(_view(self.v) * x) / std
        return (y * _view(self.weight) + _view(self.bias)).to(dtype)

    def extra_repr(self):
        return f"{self.num_groups}, {super().extra_repr()}, act={self.apply_act}"


class EvoNormB0(BatchStatistics):
    def __init__(self, num_features, eps, momentum, virtual_batch_size, sync, apply_act: bool):
        # running statistics only where the batch variance is used (a site with an activation)
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=apply_act,
                         virtual_batch_size=virtual_batch_size, sync=sync)
        self.apply_act = apply_act
        self.v = nn.Parameter(torch.ones(num_features)) if apply_act else None

    def forward(self, x):
        if not self.apply_act:
            return x * _view(self.weight) + _view(self.bias)
        return super().forward(x)

    def train_forward(self, x):
        dtype, x = x.dtype, at_least_fp32(x)
        mean, var, count = batch_moments(x, self.synced)
        self.update_running(mean, var, count)  # running_mean is unused by the output; kept as bn keeps it (PreciseBN)
        return self._normalize(x, var).to(dtype)

    def eval_forward(self, x):
        dtype, x = x.dtype, at_least_fp32(x)
        return self._normalize(x, self.running_var).to(dtype)

    def _normalize(self, x, var):
        left = _view((var + self.eps).sqrt())
        instance = x.var((2, 3), correction=0, keepdim=True)
        right = _view(self.v) * x + (instance + self.eps).sqrt()
        return x / torch.maximum(left, right) * _view(self.weight) + _view(self.bias)

    def extra_repr(self):
        return super().extra_repr() + f", act={self.apply_act}"


register(Norm(
    kind="evonorm_s0",
    layers={"nchw": grouped(EvoNormS0, "evonorm_s0")},
    options={"eps": 1e-5, "num_groups": 32},  # the paper's 32 groups
    classes=(EvoNormS0,),
    notation={"num_groups": lambda g: f"G={g}"},
    check_sites=group_sites("evonorm_s0"),
    option_ranges={"eps": POSITIVE, "num_groups": POSITIVE_INT},
    activation="x * sigmoid(v x) gate",
    missing_layouts={"nlc": _NO_TOKENS},
))

register(Norm(
    kind="evonorm_b0",
    layers={"nchw": EvoNormB0},
    options={"eps": 1e-5, "momentum": 0.1, "virtual_batch_size": None, "sync": False},
    classes=(EvoNormB0,),
    batch_statistics=True,
    notation={"virtual_batch_size": lambda k: f"ghost {k}" if k else "", "sync": lambda s: "sync" if s else ""},
    variant_options=("virtual_batch_size", "sync"),
    option_types={"virtual_batch_size": int},
    option_ranges={"eps": POSITIVE, "momentum": UNIT_INTERVAL, "virtual_batch_size": POSITIVE_INT},
    activation="max(batch std, v x + instance std) denominator",
    missing_layouts={"nlc": _NO_TOKENS},
))
