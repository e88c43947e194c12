"""bn: batch normalization over (N, H, W) per channel (tokens: over (N, L)), with running
statistics for evaluation; plus ghost (virtual) batches and synchronized statistics.

What bn normalizes over in training can differ from PyTorch's per-process batch:
- ghost batch norm (Hoffer et al. 2017, `virtual_batch_size`): the batch is split into groups
  of that many samples, each normalized with its own statistics (and each updating the running
  statistics, in order);
- synchronized batch norm (`sync=True`): the statistics of the batches of all processes
  together, by `_all_reduce_batch_norm`, on every device and backend. Not nn.SyncBatchNorm: it
  refuses CPU tensors, and its convert_sync_batchnorm (Lightning's sync_batchnorm) would turn
  TokenBatchNorm into a plain SyncBatchNorm that loses the (N, L, C) transpose and the virtual
  batches. Without a process group of more than one process it is plain bn.
Evaluation uses the running statistics as usual.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Norm, kind_of, register


def _check_train_batch(module: nn.Module, values_per_channel: int, shape) -> None:
    # PyTorch's own error ("Expected more than 1 value per channel") does not say what to do.
    if module.training and values_per_channel <= 1:
        raise ValueError(
            f"{kind_of(module) or 'bn'} cannot train on a single value per channel (input shape {tuple(shape)}): "
            "batch statistics are undefined. Use a batch size of at least 2, or a "
            "batch-independent norm (ln, in, gn)."
        )


def _distributed_world() -> int:
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


def _all_reduce_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of x (N, C, *) with statistics over the union of every process's batch
    (`batch_moments`)."""
    dtype, x = x.dtype, x.float()  # statistics in float32 under bf16/fp16 autocast too
    mean, var, count = batch_moments(x, synced=True)
    shape = (1, x.shape[1], *[1] * (x.dim() - 2))
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.detach(), factor)
            bn.running_var.lerp_(var.detach() * (count / max(count - 1, 1)), factor)
    y = (x - mean.view(shape)) * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(dtype)


class _BatchStatistics:
    """Ghost batches and synchronized statistics, mixed into PyTorch's batch norms."""

    def _init_statistics(self, virtual_batch_size, sync):
        if virtual_batch_size is not None and (isinstance(virtual_batch_size, bool) or not isinstance(virtual_batch_size, int)
                                               or virtual_batch_size < 1):
            raise ValueError(f"bn virtual_batch_size must be a positive integer or None, got {virtual_batch_size!r}")
        if not isinstance(sync, bool):
            raise ValueError(f"bn sync must be true or false, got {sync!r}")
        if sync and virtual_batch_size is not None:
            raise ValueError("bn: sync=True and virtual_batch_size cannot be combined: synchronized statistics span "
                             "every process's whole batch, ghost statistics a part of one process's batch")
        self.virtual_batch_size, self.sync = virtual_batch_size, sync

    def _normalize(self, x):
        """x is (N, C, *), the layout PyTorch's batch norms take."""
        if self.sync and self.training and _distributed_world() > 1:
            return _all_reduce_batch_norm(self, x)
        return nn.modules.batchnorm._BatchNorm.forward(self, x)

    def _ghost(self, x, forward):
        k = self.virtual_batch_size
        if not self.training or k is None or k >= x.shape[0]:
            return forward(x)
        if x.shape[0] % k:
            raise ValueError(f"bn: a batch of {x.shape[0]} samples cannot be split into virtual batches of "
                             f"virtual_batch_size={k}; use a batch size that is a multiple of it")
        return torch.cat([forward(chunk) for chunk in x.split(k)], 0)

    def extra_repr(self):
        return (super().extra_repr() + (f", virtual_batch_size={self.virtual_batch_size}" if self.virtual_batch_size else "")
                + (", sync=True" if self.sync else ""))


class BatchNorm2d(_BatchStatistics, nn.BatchNorm2d):
    """bn over (N, H, W) per channel, with a clear error for one value per channel."""

    def __init__(self, num_features, virtual_batch_size=None, sync=False, **options):
        super().__init__(num_features, **options)
        self._init_statistics(virtual_batch_size, sync)

    def _forward(self, x):
        _check_train_batch(self, x.shape[0] * x.shape[2] * x.shape[3], x.shape)
        return self._normalize(x)

    def forward(self, x):
        return self._ghost(x, self._forward)


class TokenBatchNorm(_BatchStatistics, nn.BatchNorm1d):
    """bn over (N, L) per channel for (N, L, C) tokens."""

    def __init__(self, num_features, virtual_batch_size=None, sync=False, **options):
        super().__init__(num_features, **options)
        self._init_statistics(virtual_batch_size, sync)

    def _forward(self, x):
        _check_train_batch(self, x.shape[0] * x.shape[1], x.shape)
        return self._normalize(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x):
        return self._ghost(x, self._forward)


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
