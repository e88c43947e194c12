"""Normalization layers for CNN feature maps (NCHW) and ViT tokens (NLC).

`build` is the only entry point the models use. Each kind reduces over exactly the axes in
`../shared/NORMS.md`:

    layout  kind  statistics over            one (mean, var) per
    nchw    bn    N, H, W                    channel          (running stats in eval)
    nchw    ln    C, H, W                    sample
    nchw    in    H, W                       sample x channel
    nchw    gn    C/G channels x H, W        sample x group
    nlc     bn    N, L                       channel          (running stats in eval)
    nlc     ln    C (scope="token")          token            (Transformer convention)
            ln    L, C (scope="sample")      sample
    nlc     in    L                          sample x channel
    nlc     gn    C/G channels x L           sample x group

Affine parameters (gamma, beta) are always per channel, so every kind has the same
parameter count and the identities gn(G=1) == ln (nchw) and gn(G=C) == in (affine) hold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("bn", "ln", "in", "gn", "none")
LAYOUTS = ("nchw", "nlc")
LN_SCOPES = ("token", "sample")

# Options each kind accepts (PyTorch's names) and their defaults. The only table to edit
# when a norm gains an option.
_OPTIONS = {
    "bn": {"eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True, "virtual_batch_size": None,
           "sync": False},
    "ln": {"eps": 1e-5, "affine": True, "scope": None},
    "in": {"eps": 1e-5, "momentum": 0.1, "affine": False, "track_running_stats": False},
    "gn": {"eps": 1e-5, "affine": True, "num_groups": 32},
    "none": {},
}


def _check_train_batch(module: nn.Module, values_per_channel: int, shape) -> None:
    if module.training and values_per_channel <= 1:
        raise ValueError(
            f"bn cannot train on a single value per channel (input shape {tuple(shape)}): "
            "batch statistics are undefined. Use a batch size of at least 2, or a "
            "batch-independent norm (ln, in, gn)."
        )


def _distributed_world() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of x (N, C, *) with statistics over the union of every process's batch.

    Two differentiable all-reduces (torch.distributed.nn): the sum and count, then the sum of
    squared deviations from the global mean, so the variance is as exact as single-process
    BN's. The backward pass all-reduces the gradients of those sums, which makes the input
    gradient equal to that of BN on the concatenated batch. Works with any backend (gloo on
    CPU too), unlike nn.SyncBatchNorm.
    """
    from torch.distributed.nn.functional import all_reduce

    dtype, x = x.dtype, x.float()  # statistics in float32 under bf16/fp16 autocast too
    dims = [0, *range(2, x.dim())]
    c = x.shape[1]
    local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() / c)])
    total = all_reduce(local)
    count = total[c]
    mean = total[:c] / count
    shape = (1, c, *[1] * (x.dim() - 2))
    centered = x - mean.view(shape)
    var = all_reduce((centered * centered).sum(dims)) / count  # biased, as BN normalizes with
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            unbiased = var * (count / (count - 1).clamp(min=1))
            bn.running_mean.lerp_(mean.detach(), factor)
            bn.running_var.lerp_(unbiased.detach(), factor)
    y = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    return y.to(dtype)


class _BatchStatistics:
    """What bn normalizes over in training, beyond PyTorch's per-process batch:

    - ghost (virtual) batch norm (Hoffer et al. 2017): the batch is split into groups of
      `virtual_batch_size` samples, each normalized with its own statistics (and each
      updating the running statistics, in order);
    - synchronized batch norm (`sync=True`): the statistics of the batches of all processes
      together, by `_all_reduce_batch_norm` on every device and backend. Not nn.SyncBatchNorm:
      it refuses CPU tensors, and its convert_sync_batchnorm (Lightning's sync_batchnorm)
      would turn TokenBatchNorm into a plain SyncBatchNorm that loses the (N, L, C)
      transpose and the virtual batches. Without a distributed process group of more than
      one process it is plain bn.

    Evaluation uses the running statistics as usual.
    """

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


class _SampleLayerNorm(nn.Module):
    """ln over every axis but the batch, with per-channel gamma/beta (channel is `channel_dim`)
    passed to F.layer_norm as stride-0 views of the full shape: one fused op that saves half the
    activations for backward and runs faster than normalizing and then scaling (BENCHMARKS.md)."""

    channel_dim = 1

    def __init__(self, num_channels: int, eps: float, affine: bool):
        super().__init__()
        self.num_channels, self.eps, self.affine = num_channels, eps, affine
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def extra_repr(self):
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"

    def forward(self, x):
        shape = x.shape[1:]
        if not self.affine:
            return F.layer_norm(x, shape, eps=self.eps)
        view = [1] * len(shape)
        view[self.channel_dim - 1 if self.channel_dim > 0 else self.channel_dim] = self.num_channels
        return F.layer_norm(x, shape, self.weight.view(view).expand(shape), self.bias.view(view).expand(shape), self.eps)


class LayerNormCHW(_SampleLayerNorm):
    """ln over (C, H, W) per sample; not ConvNeXt's channels-only 'LayerNorm2d'."""


class LayerNormLC(_SampleLayerNorm):
    """ln over (L, C) per sample for (N, L, C) tokens (scope="sample")."""

    channel_dim = -1


class TokenInstanceNorm(nn.InstanceNorm1d):
    """in over L per sample and channel for (N, L, C) tokens."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class TokenGroupNorm(nn.GroupNorm):
    """gn over (C/G channels, L) per sample for (N, L, C) tokens."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class NoNorm(nn.Identity):
    """The no-normalization control."""


# Which class implements (kind, layout); `kind_of` reads it backwards.
_CLASSES = {
    ("bn", "nchw"): BatchNorm2d,
    ("bn", "nlc"): TokenBatchNorm,
    ("ln", "nchw"): LayerNormCHW,
    ("ln", "nlc"): (nn.LayerNorm, LayerNormLC),
    ("in", "nchw"): nn.InstanceNorm2d,
    ("in", "nlc"): TokenInstanceNorm,
    ("gn", "nchw"): nn.GroupNorm,
    ("gn", "nlc"): TokenGroupNorm,
    ("none", "nchw"): NoNorm,
    ("none", "nlc"): NoNorm,
}


def _choices(values) -> str:
    return ", ".join(repr(v) for v in values)


def build(kind: str, num_channels: int, layout: str = "nchw", **options) -> nn.Module:
    """Build a normalization layer.

    Args:
        kind: one of "bn", "ln", "in", "gn", "none".
        num_channels: C, the channel (feature) dimension.
        layout: "nchw" for CNN feature maps, "nlc" for ViT tokens (N, L, C).
        **options: PyTorch's names: eps, momentum, affine, track_running_stats (bn, in),
            num_groups (gn), scope (ln: "token" or "sample" for nlc; nchw is always
            "sample"), virtual_batch_size (bn: ghost batch norm over groups of that many
            samples), sync (bn: statistics over the batches of all processes). Unset options take PyTorch's defaults (gn: num_groups=32, as in
            the GN paper).

    Returns a module whose output has the input's shape.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {_choices(KINDS)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {_choices(LAYOUTS)}")
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}")
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        valid = _choices(_OPTIONS[kind]) or "none"
        raise ValueError(f"norm {kind!r} does not take option(s) {_choices(unknown)}; valid options: {valid}")
    opts = {**_OPTIONS[kind], **options}

    if kind == "none":
        return NoNorm()
    if kind == "bn":
        cls = BatchNorm2d if layout == "nchw" else TokenBatchNorm
        return cls(num_channels, **opts)
    if kind == "in":
        cls = nn.InstanceNorm2d if layout == "nchw" else TokenInstanceNorm
        return cls(num_channels, **opts)
    if kind == "gn":
        groups = opts.pop("num_groups")
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or num_channels % groups:
            divisors = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
            raise ValueError(
                f"gn: num_channels={num_channels} is not divisible by num_groups={groups!r}; "
                f"valid num_groups for {num_channels} channels: {divisors}"
            )
        cls = nn.GroupNorm if layout == "nchw" else TokenGroupNorm
        return cls(groups, num_channels, **opts)
    # ln
    scope = opts.pop("scope")
    if layout == "nchw":
        if scope not in (None, "sample"):
            raise ValueError(
                f"ln scope {scope!r} is not available for layout 'nchw': ln on CNN maps "
                "normalizes over (C, H, W) per sample (scope 'sample'). Per-pixel "
                "normalization over channels (ConvNeXt's LayerNorm2d) is a different layer."
            )
        return LayerNormCHW(num_channels, opts["eps"], opts["affine"])
    scope = scope or "token"
    if scope not in LN_SCOPES:
        raise ValueError(f"unknown ln scope {scope!r}; valid scopes: {_choices(LN_SCOPES)}")
    if scope == "token":
        return nn.LayerNorm(num_channels, eps=opts["eps"], elementwise_affine=opts["affine"])
    return LayerNormLC(num_channels, opts["eps"], opts["affine"])


def kind_of(module: nn.Module) -> str | None:
    """The norm kind a module built by `build` implements, or None for any other module."""
    for (kind, _), classes in _CLASSES.items():
        if type(module) in (classes if isinstance(classes, tuple) else (classes,)):
            return kind
    return None
