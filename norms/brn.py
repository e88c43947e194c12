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

from .batch import BatchStatistics, batch_moments, per_channel
from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Check, Norm, register
from .tokens import TokenLayout


class BatchRenorm(BatchStatistics):
    """brn over every axis of (N, C, *) but C, per channel."""

    def __init__(self, num_features, r_max=3.0, d_max=5.0, warmup_steps=0, **options):
        super().__init__(num_features, **options)
        self.r_max_final, self.d_max_final, self.warmup_steps = float(r_max), float(d_max), int(warmup_steps)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def limits(self) -> tuple[float | torch.Tensor, float | torch.Tensor]:
        """(r_max, d_max) at the current training step: numbers, or tensors during the warm-up
        schedule (computed from the step buffer without leaving the device, so a pack of runs
        can compute them together)."""
        w = self.warmup_steps
        if w <= 0:
            return self.r_max_final, self.d_max_final
        t = self.steps.float()
        relaxed = (t - w).clamp_min(0)
        r = torch.where(t < w, 1.0, 1.0 + (self.r_max_final - 1.0) * (relaxed / (7 * w)).clamp(max=1.0))
        d = torch.where(t < w, 0.0, self.d_max_final * (relaxed / (4 * w)).clamp(max=1.0))
        return r, d

    def forward(self, x):
        if self.training:
            self.steps.add_(1)
        return super().forward(x)

    def train_forward(self, x):
        mean, var, count = batch_moments(x, self.synced)
        sigma_b = (var + self.eps).sqrt()
        with torch.no_grad():
            sigma = (self.running_var + self.eps).sqrt()
            r_max, d_max = self.limits()
            r = torch.clamp(sigma_b / sigma, 1 / r_max, r_max)
            d = torch.clamp((mean - self.running_mean) / sigma, -d_max, d_max)
        self.update_running(mean, var, count)
        y = (x - per_channel(mean, x)) / per_channel(sigma_b, x) * per_channel(r, x) + per_channel(d, x)
        return self.affine_(y)

    def eval_forward(self, x):
        return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                              self.eps)

    def extra_repr(self):
        return super().extra_repr() + f", r_max={self.r_max_final}, d_max={self.d_max_final}, warmup_steps={self.warmup_steps}"


class BatchRenorm2d(BatchRenorm):
    """brn over (N, H, W) per channel of CNN maps."""


class TokenBatchRenorm(TokenLayout, BatchRenorm):
    """brn over (N, L) per channel for (N, L, C) tokens."""


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
