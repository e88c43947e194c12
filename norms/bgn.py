"""bgn: batch-group normalization, the one norm that spans bn, ghost bn, gn, ln and in
(Summers & Dinneen 2020, "Four things everyone should know to improve batch normalization").

A batch (N, C, *) is split into groups of k = `examples_per_group` samples (null: the whole
per-device batch) and G = `num_groups` groups of C/G channels (null: one channel per group);
each (group of examples, group of channels) is normalized by its own mean and biased variance
over (k, C/G, *), then per-channel gamma and beta. Its points:

    examples_per_group  num_groups   is
    null (the batch)    null (C)     bn
    v                   null (C)     ghost bn with virtual_batch_size=v
    1                   G            gn with G groups
    1                   1            ln over (C, *) (on tokens: ln with scope=sample)
    1                   null (C)     in

Running statistics, for evaluation, only where a group spans several examples (k != 1): the
per-channel mean and variance of each group of examples, over (k, *), averaged into running
ones in order as ghost bn's are (so bgn is bn, or ghost bn, in evaluation too). With G < C the
evaluation groups them as the authors' reference code does: a group's mean is the mean of its
channels' running means and its E[x^2] the mean of their running var + mean^2 (the running
variance is unbiased, as PyTorch's bn keeps it; the reference keeps the biased E[x^2]). At k = 1
(gn, ln, in) there are none, and evaluation is training's computation (the reference would
evaluate with moving averages it keeps there too). Inference example weighing
(`eval_example_weight`, norms/batch.py) mixes each example's own group moments into them.
"""
from __future__ import annotations

import torch

from .batch import BatchStatistics, population_moments, weighed_normalize
from .layers import at_least_fp32, group_sites
from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Norm, register
from .tokens import TokenLayout


def _positive_or_none(value) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


class BatchGroupNorm(BatchStatistics):
    """bgn over (k samples, C/G channels, *) of (N, C, *)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 examples_per_group: int | None = None, num_groups: int | None = None):
        if not _positive_or_none(examples_per_group):
            raise ValueError(f"bgn examples_per_group must be a positive integer or null (the whole batch), "
                             f"got {examples_per_group!r}")
        if not _positive_or_none(num_groups) or num_features % (num_groups or num_features):
            divisors = [g for g in range(1, num_features + 1) if num_features % g == 0]
            raise ValueError(f"bgn: num_channels={num_features} is not divisible by num_groups={num_groups!r}; valid "
                             f"num_groups for {num_features} channels: {divisors} (or null, one channel per group)")
        # running statistics only where a statistic spans several examples
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=examples_per_group != 1)
        self.examples_per_group, self.num_groups = examples_per_group, num_groups or num_features

    @property
    def example_group(self) -> int | None:
        """The samples one training statistic spans (harness/diagnostics.py): k, or the batch."""
        return self.examples_per_group

    def _train_batch(self, x):
        if self.examples_per_group == 1:  # gn, ln, in: defined for a batch of one
            return self.train_forward(x)
        return super()._train_batch(x)

    def train_forward(self, x):
        n, c = x.shape[:2]
        k = min(self.examples_per_group or n, n)
        if n % k:
            raise ValueError(f"bgn: a batch of {n} samples cannot be split into groups of examples_per_group={k}; "
                             f"valid examples_per_group for this batch: {divisors_of(n)} (or null, the whole batch)")
        dtype, x = x.dtype, at_least_fp32(x)
        g = self.num_groups
        xg = x.reshape(n // k, k, g, c // g, -1)
        var, mean = torch.var_mean(xg, (1, 3, 4), correction=0, keepdim=True)  # one pass for every group
        if self.running_mean is not None and self.momentum != 0.0:  # a momentum of 0 leaves no trace (evaluation)
            with torch.no_grad():
                if g == c:  # the group statistics are the per-channel ones
                    c_var, c_mean = var.reshape(n // k, c), mean.reshape(n // k, c)
                else:
                    c_var, c_mean = torch.var_mean(x.reshape(n // k, k, c, -1), (1, 3), correction=0)
                count = float(k * xg.shape[-1])
                for i in range(n // k):  # each group of examples in order, as ghost bn's
                    self.update_running(c_mean[i], c_var[i], count)
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        return self.affine_(y).to(dtype)

    eval_example_weight = 0.0  # inference example weighing's alpha; set only by an evaluation

    def eval_forward(self, x):
        if self.running_mean is None:  # k = 1: gn, ln or in, the same computation as in training
            return self.train_forward(x)
        alpha, c = self.eval_example_weight, x.shape[1]
        if self.num_groups == c and not alpha:  # bn's evaluation
            return torch.nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                                  False, 0.0, self.eps)
        dtype, x = x.dtype, at_least_fp32(x)
        pop_mean, pop_sq = population_moments(self.running_mean, self.running_var, self.num_groups)
        return self.affine_(weighed_normalize(x, pop_mean, pop_sq, alpha, self.eps)).to(dtype)

    def extra_repr(self):
        return super().extra_repr() + f", examples_per_group={self.examples_per_group}, num_groups={self.num_groups}"


class BatchGroupNorm2d(BatchGroupNorm):
    """bgn of CNN maps (N, C, H, W): over (k, C/G, H, W)."""


class TokenBatchGroupNorm(TokenLayout, BatchGroupNorm):
    """bgn of (N, L, C) tokens: over (k, C/G, L), tokens in place of pixels."""


def divisors_of(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _normalization_batch(options, per_device_batch: int, world_size: int) -> int:
    return min(options.get("examples_per_group") or per_device_batch, per_device_batch)


def _check_batch(options, per_device_batch: int) -> None:
    k = options.get("examples_per_group")
    if k is not None and k < per_device_batch and per_device_batch % k:
        raise ValueError(f"norm.examples_per_group={k} does not divide data.batch_size={per_device_batch} (the "
                         f"per-device batch): every group of examples must be whole; valid examples_per_group for "
                         f"{per_device_batch}: {divisors_of(per_device_batch)} (or null, the whole batch)")


def _check_sites(sites, options) -> None:
    if options.get("num_groups") is not None:  # null: one channel per group, any channel count
        group_sites("bgn")(sites, options)


register(Norm(
    kind="bgn",
    layers={"nchw": BatchGroupNorm2d, "nlc": TokenBatchGroupNorm},
    options={"eps": 1e-5, "momentum": 0.1, "affine": True, "examples_per_group": None, "num_groups": None},
    classes=(BatchGroupNorm2d, TokenBatchGroupNorm),
    batch_statistics=True,
    notation={"examples_per_group": lambda k: f"k={k}" if k else "", "num_groups": lambda g: f"G={g}" if g else ""},
    variant_options=("examples_per_group", "num_groups"),
    check_sites=_check_sites,
    option_types={"examples_per_group": int, "num_groups": int},
    option_ranges={"eps": POSITIVE, "momentum": UNIT_INTERVAL, "examples_per_group": POSITIVE_INT,
                   "num_groups": POSITIVE_INT},
    normalization_batch=_normalization_batch,
    check_batch=_check_batch,
))
