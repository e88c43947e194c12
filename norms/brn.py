"""brn: Batch Renormalization (Ioffe 2017), bn whose training output is corrected towards the
running statistics it will be evaluated with.

Training: y = ((x - mu_B) / sigma_B * r + d) * gamma + beta, with
r = clip(sigma_B / sigma, 1/r_max, r_max) and d = clip((mu_B - mu) / sigma, -d_max, d_max)
constants in the backward pass, sigma_B = sqrt(var_B + eps) (var_B biased, as bn normalizes
with) and sigma = sqrt(running_var + eps); the running statistics are updated as bn's.
Evaluation is bn's. With r_max = 1 and d_max = 0 it is bn; with r and d unclipped a training
batch is normalized with the running statistics.

`warmup_steps` is the paper's schedule: plain bn (r_max = 1, d_max = 0) for the first
warmup_steps training steps, then r_max relaxed linearly to its final value by 8 x warmup_steps
and d_max by 5 x warmup_steps (the paper: 5k steps of bn, r_max = 3 by 40k, d_max = 5 by 25k).
0: the final values from the start. Ghost batches (`virtual_batch_size`) and synchronized
statistics (`sync`) work as for bn.
"""
from __future__ import annotations

import torch
from torch import nn

from .batch import _BatchStatistics, _check_train_batch, _distributed_world, batch_moments
from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Check, Norm, register


class _Renorm(_BatchStatistics):
    def __init__(self, num_features, r_max=3.0, d_max=5.0, warmup_steps=0, virtual_batch_size=None, sync=False,
                 **options):
        super().__init__(num_features, **options)  # PyTorch's batch norm of the subclass
        self._init_statistics(virtual_batch_size, sync)
        self.r_max_final, self.d_max_final, self.warmup_steps = float(r_max), float(d_max), int(warmup_steps)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) at the current training step."""
        w, t = self.warmup_steps, int(self.steps)
        if w <= 0:
            return self.r_max_final, self.d_max_final
        if t < w:
            return 1.0, 0.0
        r = 1.0 + (self.r_max_final - 1.0) * min(1.0, (t - w) / (7 * w))
        d = self.d_max_final * min(1.0, (t - w) / (4 * w))
        return r, d

    def _normalize(self, x):
        """x is (N, C, *)."""
        if not self.training:
            return nn.modules.batchnorm._BatchNorm.forward(self, x)
        mean, var, count = batch_moments(x, self.sync and _distributed_world() > 1)
        shape = (1, -1, *[1] * (x.dim() - 2))
        sigma_b = (var + self.eps).sqrt()
        with torch.no_grad():
            sigma = (self.running_var + self.eps).sqrt()
            r_max, d_max = self.limits()
            r = (sigma_b / sigma).clamp(1 / r_max, r_max)
            d = ((mean - self.running_mean) / sigma).clamp(-d_max, d_max)
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean, factor)
            self.running_var.lerp_(var * (count / max(count - 1, 1)), factor)
        y = (x - mean.view(shape)) / sigma_b.view(shape) * r.view(shape) + d.view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    def forward(self, x):
        if self.training:
            self.steps.add_(1)
        return self._ghost(x, self._forward)

    def extra_repr(self):
        return super().extra_repr() + f", r_max={self.r_max_final}, d_max={self.d_max_final}, warmup_steps={self.warmup_steps}"


class BatchRenorm2d(_Renorm, nn.BatchNorm2d):
    def _forward(self, x):
        _check_train_batch(self, x.shape[0] * x.shape[2] * x.shape[3], x.shape)
        return self._normalize(x)


class TokenBatchRenorm(_Renorm, nn.BatchNorm1d):
    """brn over (N, L) per channel for (N, L, C) tokens."""

    def _forward(self, x):
        _check_train_batch(self, x.shape[0] * x.shape[1], x.shape)
        return self._normalize(x.transpose(1, 2)).transpose(1, 2)


register(Norm(
    kind="brn",
    layers={"nchw": BatchRenorm2d, "nlc": TokenBatchRenorm},
    options={"eps": 1e-5, "momentum": 0.1, "affine": True, "r_max": 3.0, "d_max": 5.0, "warmup_steps": 0,
             "virtual_batch_size": None, "sync": False},
    classes=(BatchRenorm2d, TokenBatchRenorm),
    batch_statistics=True,
    notation={"virtual_batch_size": lambda k: f"ghost {k}" if k else "", "sync": lambda s: "sync" if s else "",
              "r_max": lambda r: f"r_max={r}", "d_max": lambda d: f"d_max={d}"},
    variant_options=("virtual_batch_size", "sync"),
    option_types={"virtual_batch_size": int},
    option_ranges={"eps": POSITIVE, "momentum": UNIT_INTERVAL, "virtual_batch_size": POSITIVE_INT,
                   "r_max": Check(lambda v: v >= 1, "a number, 1 or more"), "d_max": Check(lambda v: v >= 0, "0 or more"),
                   "warmup_steps": Check(lambda v: v >= 0, "an integer, 0 or more")},
))
