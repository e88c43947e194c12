"""Norms with batch statistics: the shared base, and bn.

`BatchStatistics` is what every norm that normalizes over the samples of a batch shares (bn,
brn, evonorm_b0): per-channel moments over (N, *) of a channels-first input (N, C, *), the
running averages evaluation uses (updated in one place), the batch-of-one check, and two ways
the normalization batch can differ from PyTorch's per-process batch:
- ghost batch norm (Hoffer et al. 2017, `virtual_batch_size`): the batch is split into groups
  of that many samples, each normalized with its own statistics (and each updating the running
  statistics, in order);
- synchronized statistics (`sync=True`): over the batches of all processes together
  (`batch_moments`), on every device and backend. Not nn.SyncBatchNorm: it refuses CPU tensors,
  and its convert_sync_batchnorm (Lightning's sync_batchnorm) would turn a token bn into a plain
  SyncBatchNorm that loses the (N, L, C) transpose and the virtual batches. Without a process
  group of more than one process it is plain statistics.
A subclass says what it does with the statistics: `train_forward(x)` and `eval_forward(x)`.

bn: y = (x - mean) / sqrt(var + eps) * gamma + beta over (N, H, W) per channel (tokens: over
(N, L)), through torch's F.batch_norm, with the running statistics in evaluation.

Inference example weighing (Summers & Dinneen 2020, "Four things everyone should know to
improve batch normalization"): a layer's `eval_example_weight` alpha (0 unless an evaluation
sets it, harness/evaluation.py) mixes each example's own moments over space into the running
ones at evaluation: mean = alpha * mean_i + (1 - alpha) * mean_pop, var = alpha * E_i[x^2] +
(1 - alpha) * (var_pop + mean_pop^2) - mean^2. Training never reads it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Norm, kind_of, register
from .tokens import TokenLayout


def distributed_world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def batch_moments(x: torch.Tensor, synced: bool) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-channel mean and biased variance of x (N, C, *) over every axis but C, and how many
    values each averages; with `synced`, over the union of every process's batch.

    Synced: two differentiable all-reduces (torch.distributed.nn), the sum and count, then the
    sum of squared deviations from the global mean, so the variance is as exact as one
    process's. The backward pass all-reduces the gradients of those sums, which makes the input
    gradient equal to that of the norm on the concatenated batch. Works with any backend (gloo
    on CPU too), unlike nn.SyncBatchNorm.
    """
    dims = [0, *range(2, x.dim())]
    c = x.shape[1]
    if not synced:
        var, mean = torch.var_mean(x, dims, correction=0)
        return mean, var, float(x.numel() // c)
    from torch.distributed.nn.functional import all_reduce

    total = all_reduce(torch.cat([x.sum(dims), x.new_full((1,), x.numel() / c)]))
    count = total[c]
    mean = total[:c] / count
    centered = x - mean.view(1, c, *[1] * (x.dim() - 2))
    var = all_reduce((centered * centered).sum(dims)) / count
    return mean, var, float(count.detach())


def _lerp_(running: torch.Tensor, value: torch.Tensor, weight: float) -> None:
    """running.lerp_(value, weight) as an out-of-place lerp and a copy: the same numbers, and
    torch.func.vmap has a batching rule for it (none for lerp_)."""
    running.copy_(torch.lerp(running, value, weight))


def per_channel(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) tensor viewed to broadcast over x (N, C, *)."""
    return t.view(1, -1, *[1] * (x.dim() - 2))


def population_moments(running_mean: torch.Tensor, running_var: torch.Tensor, groups: int):
    """The running statistics of C channels as (mean, E[x^2]) per group of C/G channels (G,):
    the mean over the group's channels, each channel counted equally, as the authors'
    reference code of batch-group normalization groups its per-channel moving averages."""
    mean = running_mean.view(groups, -1)
    return mean.mean(1), (running_var.view(groups, -1) + mean * mean).mean(1)


def weighed_normalize(x: torch.Tensor, pop_mean: torch.Tensor, pop_sq: torch.Tensor, alpha: float,
                      eps: float) -> torch.Tensor:
    """x (N, C, *) normalized per sample and group of C/G channels (G = len(pop_mean)) by the
    population moments mixed with the sample's own over (C/G, *) with weight `alpha` (inference
    example weighing; alpha = 0: the population's alone)."""
    n, groups = x.shape[0], pop_mean.shape[0]
    xg = x.reshape(n, groups, -1)
    mean, sq = pop_mean.expand(n, groups), pop_sq.expand(n, groups)
    if alpha:
        mean = alpha * xg.mean(-1) + (1 - alpha) * mean
        sq = alpha * (xg * xg).mean(-1) + (1 - alpha) * sq
    var = sq - mean * mean
    return ((xg - mean.unsqueeze(-1)) * torch.rsqrt(var + eps).unsqueeze(-1)).reshape(x.shape)


class BatchStatistics(nn.BatchNorm2d):
    """The base of a norm with batch statistics. Takes (N, C, *) of any rank (nn.BatchNorm2d's
    parameters and buffers, under their names, so torch's tools and checkpoints know them)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, virtual_batch_size: int | None = None, sync: bool = False):
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats)
        if virtual_batch_size is not None and (isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int)
                                               or virtual_batch_size < 1):
            raise ValueError(f"{self.kind} virtual_batch_size must be a positive integer or None, got {virtual_batch_size!r}")
        if not isinstance(sync, bool):
            raise ValueError(f"{self.kind} sync must be true or false, got {sync!r}")
        if sync and virtual_batch_size is not None:
            raise ValueError(f"{self.kind}: sync=True and virtual_batch_size cannot be combined: synchronized statistics "
                             "span every process's whole batch, ghost statistics a part of one process's batch")
        self.virtual_batch_size, self.sync = virtual_batch_size, sync

    @property
    def kind(self) -> str:
        return kind_of(self) or "bn"

    @property
    def example_group(self) -> int | None:
        """How many samples one training statistic spans (None: the whole batch)."""
        return self.virtual_batch_size

    @property
    def synced(self) -> bool:
        """Statistics over every process's batch right now (sync=True in a group of several)."""
        return self.sync and self.training and distributed_world() > 1

    def forward(self, x):
        if not self.training:
            return self.eval_forward(x)
        k = self.virtual_batch_size
        if k is None or k >= x.shape[0]:
            return self._train_batch(x)
        if x.shape[0] % k:
            raise ValueError(f"{self.kind}: a batch of {x.shape[0]} samples cannot be split into virtual batches of "
                             f"virtual_batch_size={k}; use a batch size that is a multiple of it")
        return torch.cat([self._train_batch(chunk) for chunk in x.split(k)], 0)

    def _train_batch(self, x):
        if x.numel() // x.shape[1] <= 1:  # PyTorch's own error does not say what to do
            raise ValueError(
                f"{self.kind} cannot train on a single value per channel (input shape {self.given_shape(x.shape)}): batch "
                "statistics are undefined. Use a batch size of at least 2, or a batch-independent norm (ln, in, gn).")
        return self.train_forward(x)

    @staticmethod
    def given_shape(shape) -> tuple:
        """An input's shape as its caller gave it (norms.tokens.TokenLayout: as tokens)."""
        return tuple(shape)

    def train_forward(self, x):
        raise NotImplementedError

    def eval_forward(self, x):
        raise NotImplementedError

    def update_factor(self) -> float:
        """Count a training batch; the weight of its statistics in the running averages: the
        momentum, or 1/batches seen (momentum=None, PyTorch's cumulative average)."""
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    @torch.no_grad()
    def update_running(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        """The running averages, with the variance unbiased over `count` values, as PyTorch's."""
        if not self.track_running_stats:
            return
        factor = self.update_factor()
        _lerp_(self.running_mean, mean.detach(), factor)
        _lerp_(self.running_var, var.detach() * (count / max(count - 1, 1)), factor)

    def affine_(self, y: torch.Tensor) -> torch.Tensor:
        return y * per_channel(self.weight, y) + per_channel(self.bias, y) if self.affine else y

    def extra_repr(self):
        return (super().extra_repr() + (f", virtual_batch_size={self.virtual_batch_size}" if self.virtual_batch_size else "")
                + (", sync=True" if self.sync else ""))


class BatchNorm(BatchStatistics):
    """bn over every axis of (N, C, *) but C, per channel."""

    def train_forward(self, x):
        if self.synced:  # statistics in float32 under bf16/fp16 autocast too
            dtype, x = x.dtype, x.float()
            mean, var, count = batch_moments(x, synced=True)
            self.update_running(mean, var, count)
            y = (x - per_channel(mean, x)) * per_channel(torch.rsqrt(var + self.eps), x)
            return self.affine_(y).to(dtype)
        factor = self.update_factor() if self.track_running_stats else 0.0
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True, factor, self.eps)

    eval_example_weight = 0.0  # inference example weighing's alpha; set only by an evaluation

    def eval_forward(self, x):
        training = self.running_mean is None  # no running statistics: batch statistics in evaluation too
        if training or not self.eval_example_weight:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training, 0.0, self.eps)
        dtype, x = x.dtype, x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        pop_mean, pop_sq = population_moments(self.running_mean, self.running_var, x.shape[1])
        return self.affine_(weighed_normalize(x, pop_mean, pop_sq, self.eval_example_weight, self.eps)).to(dtype)


class BatchNorm2d(BatchNorm):
    """bn over (N, H, W) per channel of CNN maps."""


class TokenBatchNorm(TokenLayout, BatchNorm):
    """bn over (N, L) per channel for (N, L, C) tokens."""


register(Norm(
    kind="bn",
    layers={"nchw": BatchNorm2d, "nlc": TokenBatchNorm},
    options={"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True, "virtual_batch_size": None,
             "sync": False},
    classes=(BatchNorm2d, TokenBatchNorm),
    batch_statistics=True,
    notation={"virtual_batch_size": lambda k: f"ghost {k}" if k else "", "sync": lambda s: "sync" if s else ""},
    variant_options=("virtual_batch_size", "sync"),
    option_types={"virtual_batch_size": int},
    option_ranges={"eps": POSITIVE, "momentum": UNIT_INTERVAL, "virtual_batch_size": POSITIVE_INT},
))
