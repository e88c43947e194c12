"""ln, in, gn and the no-norm control: norms whose statistics are per sample.

Affine parameters (gamma, beta) are per channel for every kind, so every kind has the same
parameter count and the identities gn(G=1) == ln (nchw) and gn(G=C) == in (affine) hold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Check, Norm, register
from .tokens import TokenLayout

LN_SCOPES = ("token", "sample")


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32 when it is half or bfloat16 (statistics in fp32 under autocast), else as is."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class ChannelAffine(nn.Module):
    """A norm layer's settings and its per-channel gamma (ones) and beta (zeros), if affine."""

    def __init__(self, num_channels: int, eps: float, affine: bool):
        super().__init__()
        self.num_channels, self.eps, self.affine = num_channels, eps, affine
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def along_channels(self, t: torch.Tensor, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """A per-channel (C,) tensor viewed to broadcast against x along its `channel_dim`."""
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        return t.view(shape)

    def extra_repr(self):
        return f"{self.num_channels}, eps={self.eps}, affine={self.affine}"


class _SampleLayerNorm(ChannelAffine):
    """ln over every axis but the batch, with per-channel gamma/beta (channel is `channel_dim`)
    passed to F.layer_norm as stride-0 views of the full shape: one fused op that saves half the
    activations for backward and runs faster than normalizing and then scaling (BENCHMARKS.md)."""

    channel_dim = 1

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


def _ln_maps(num_channels, eps, affine, scope):
    if scope not in (None, "sample"):
        raise ValueError(
            f"ln scope {scope!r} is not available for layout 'nchw': ln on CNN maps "
            "normalizes over (C, H, W) per sample (scope 'sample'). Per-pixel "
            "normalization over channels (ConvNeXt's LayerNorm2d) is a different layer."
        )
    return LayerNormCHW(num_channels, eps, affine)


def _ln_tokens(num_channels, eps, affine, scope):
    scope = scope or "token"
    if scope not in LN_SCOPES:
        raise ValueError(f"unknown ln scope {scope!r}; valid scopes: {', '.join(map(repr, LN_SCOPES))}")
    if scope == "token":  # the Transformer convention: over C per token
        return nn.LayerNorm(num_channels, eps=eps, elementwise_affine=affine)
    return LayerNormLC(num_channels, eps, affine)


register(Norm(
    kind="ln",
    layers={"nchw": _ln_maps, "nlc": _ln_tokens},
    options={"eps": 1e-5, "affine": True, "scope": None},
    classes=(LayerNormCHW, nn.LayerNorm, LayerNormLC),
    option_types={"scope": str},
    option_ranges={"eps": POSITIVE, "scope": Check(lambda v: v in LN_SCOPES, f"one of {', '.join(LN_SCOPES)}")},
))


class _InstanceStatistics:
    """in through F.group_norm with one channel per group: the same statistics (per sample and
    channel, over space; biased variance) and per-channel affine, 1.3-2.8x faster than
    PyTorch's instance_norm for a training step on a CPU (BENCHMARKS.md). With running
    statistics (track_running_stats=true) PyTorch's own path."""

    def forward(self, x):
        if self.track_running_stats:
            return super().forward(x)
        return F.group_norm(x, self.num_features, self.weight, self.bias, self.eps)


class InstanceNorm2d(_InstanceStatistics, nn.InstanceNorm2d):
    """in over (H, W) per sample and channel of CNN maps."""


class TokenInstanceNorm(TokenLayout, _InstanceStatistics, nn.InstanceNorm1d):
    """in over L per sample and channel for (N, L, C) tokens."""


register(Norm(
    kind="in",
    layers={"nchw": InstanceNorm2d, "nlc": TokenInstanceNorm},
    options={"eps": 1e-5, "momentum": 0.1, "affine": False, "track_running_stats": False},
    classes=(InstanceNorm2d, TokenInstanceNorm),
    option_ranges={"eps": POSITIVE, "momentum": UNIT_INTERVAL},
))


class TokenGroupNorm(TokenLayout, nn.GroupNorm):
    """gn over (C/G channels, L) per sample for (N, L, C) tokens."""


def _valid_groups(groups) -> bool:
    return isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1


def grouped(cls, kind: str = "gn"):
    """The builder of a norm with `num_groups` (gn, evonorm_s0): refuses a count that does not
    divide the channels, naming the counts that would."""
    def build(num_channels, num_groups, **options):
        if not _valid_groups(num_groups) or num_channels % num_groups:
            divisors = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
            raise ValueError(f"{kind}: num_channels={num_channels} is not divisible by num_groups={num_groups!r}; "
                             f"valid num_groups for {num_channels} channels: {divisors}")
        return cls(num_groups, num_channels, **options)
    return build


def group_sites(kind: str):
    """check_sites for a norm with a `num_groups` option: name the first layer whose channels
    num_groups does not divide, and the group counts that would divide every layer of the model."""
    def check(sites: list[tuple[str, int]], options: dict) -> None:
        groups = options["num_groups"]
        bad = [(name, c) for name, c in sites if not _valid_groups(groups) or c % groups]
        if bad:
            name, channels = bad[0]
            common = [g for g in range(1, min(c for _, c in sites) + 1) if all(c % g == 0 for _, c in sites)]
            raise ValueError(
                f"{kind}: num_groups={groups!r} does not divide the {channels} channels of layer '{name}'"
                f"{f' (and {len(bad) - 1} more layers)' if len(bad) > 1 else ''}; "
                f"group counts that divide every layer of this model: {common}"
            )
    return check


register(Norm(
    kind="gn",
    layers={"nchw": grouped(nn.GroupNorm), "nlc": grouped(TokenGroupNorm)},
    options={"eps": 1e-5, "affine": True, "num_groups": 32},  # 32: the GN paper's
    classes=(nn.GroupNorm, TokenGroupNorm),
    notation={"num_groups": lambda g: f"G={g}"},
    check_sites=group_sites("gn"),
    option_ranges={"eps": POSITIVE, "num_groups": POSITIVE_INT},
))


class NoNorm(nn.Identity):
    """The no-normalization control."""


register(Norm(
    kind="none",
    layers={"nchw": lambda num_channels: NoNorm(), "nlc": lambda num_channels: NoNorm()},
    options={},
    classes=(NoNorm,),
))
