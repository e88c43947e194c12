"""One registry of norms: each kind is declared once, by the file in norms/ that defines it.

Everything the rest of NormLab knows about a norm derives from its `Norm` entry: how
`build` makes it for each layout, which options it takes and their defaults, which modules
are it (`kind_of`), whether it normalizes over the samples of a batch (the normalization
batch a run records, the batch-of-one check, ghost and synchronized statistics) and how a
report labels it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional

from torch import nn

LAYOUTS = ("nchw", "nlc")  # CNN feature maps (N, C, H, W); ViT tokens (N, L, C)


class Check(NamedTuple):
    """A range an option's value must be in: `test(value)` and what a message calls it."""
    test: Callable[[Any], bool]
    valid: str


POSITIVE = Check(lambda v: math.isfinite(v) and v > 0, "a positive number")
POSITIVE_INT = Check(lambda v: v >= 1, "a positive integer")
UNIT_INTERVAL = Check(lambda v: 0 <= v <= 1, "a number from 0 to 1")


@dataclass(frozen=True)
class Norm:
    kind: str  # what users type: norm=<kind>
    layers: Mapping[str, Callable[..., nn.Module]]  # layout -> builder(num_channels, **options)
    options: Mapping[str, Any]  # every option it takes, with its default
    classes: tuple[type, ...]  # the module types its builders return
    batch_statistics: bool = False  # statistics over the samples of a batch (and running averages for eval)
    # option -> how a report writes it ("G=8", "ghost 4"); options not listed print as key=value
    notation: Mapping[str, Callable[[Any], str]] = field(default_factory=dict)
    # options a report names by default, because they change what the statistics average over
    variant_options: tuple[str, ...] = ()
    # check_sites(sites, options): sites are (layer name, channels) of a model; raise ValueError
    # naming the first layer the options cannot serve (gn: a group count that does not divide)
    check_sites: Callable[[list[tuple[str, int]], dict], None] | None = None
    # option -> its type where the default (None) does not say it; None is then also valid
    option_types: Mapping[str, type] = field(default_factory=dict)
    # option -> the range its value must be in (the config schema checks it before training)
    option_ranges: Mapping[str, Check] = field(default_factory=dict)
    # the activation the kind includes where a network applies one right after the norm (frn's
    # TLU, the EvoNorms' gates): its builders take `apply_act`, which `build(..., act=True)` sets
    activation: str = ""
    # layout -> why the kind has no definition there (said when a model asks for it)
    missing_layouts: Mapping[str, str] = field(default_factory=dict)
    # runs vectorized over a pack of runs (torch.func.vmap; harness/packed): False, such runs train alone
    packs: bool = True
    # normalization_batch(options, per_device_batch, world_size): how many samples one statistic
    # averages over in training, where the options decide it otherwise than ghost batches and
    # `sync` do (bgn: its examples_per_group); 1 means the options take no statistics over samples
    normalization_batch: Callable[[Mapping, int, int], int] | None = None
    # check_batch(options, per_device_batch): raise ValueError naming the option and the valid
    # values when the options cannot split a training batch of that size (before training)
    check_batch: Callable[[Mapping, int], None] | None = None

    def option_type(self, name: str):
        """The type an option's value must have (Optional when its default is None)."""
        if name in self.option_types:
            return Optional[self.option_types[name]]
        return type(self.options[name])


_REGISTRY: dict[str, Norm] = {}


def register(norm: Norm) -> Norm:
    """Declare a norm. A kind is declared once: a second declaration is a mistake."""
    if norm.kind in _REGISTRY and _REGISTRY[norm.kind] is not norm:
        raise ValueError(f"norm kind {norm.kind!r} is already registered")
    unknown = sorted(set(norm.layers) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"norm {norm.kind!r}: unknown layout(s) {unknown}; valid layouts: {_choices(LAYOUTS)}")
    untyped = sorted(o for o, default in norm.options.items() if default is None and o not in norm.option_types)
    if untyped:
        raise ValueError(f"norm {norm.kind!r}: option(s) {untyped} default to None; declare their type in option_types")
    _REGISTRY[norm.kind] = norm
    return norm


def unregister(kind: str) -> None:
    _REGISTRY.pop(kind, None)


def kinds() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get(kind: str) -> Norm:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown norm kind {kind!r}; valid kinds: {_choices(_REGISTRY)}")
    return _REGISTRY[kind]


def _choices(values) -> str:
    return ", ".join(repr(v) for v in values)


def build(kind: str, num_channels: int, layout: str = "nchw", act: bool = False, **options) -> nn.Module:
    """Build a normalization layer whose output has its input's shape.

    Args:
        kind: a registered kind (`kinds()`): "bn", "ln", "in", "gn", "none", ...
        num_channels: C, the channel (feature) dimension.
        layout: "nchw" for CNN feature maps, "nlc" for ViT tokens (N, L, C).
        act: the network applies an activation right after this norm (a norm-activation site,
            as timm's norm-act layers). A kind that includes its activation (`Norm.activation`:
            frn, evonorm_*) then builds it in, and the network must not apply its own
            (`includes_activation`); other kinds ignore it.
        **options: the kind's options (PyTorch's names where PyTorch has the layer); unset
            options take the kind's defaults.
    """
    norm = get(kind)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {_choices(LAYOUTS)}")
    if layout not in norm.layers:
        why = norm.missing_layouts.get(layout)
        raise ValueError(f"norm {kind!r} has no definition for layout {layout!r}; it supports {_choices(norm.layers)}"
                         + (f" ({why})" if why else ""))
    if isinstance(num_channels, bool) or not isinstance(num_channels, int) or num_channels < 1:
        raise ValueError(f"num_channels must be a positive integer, got {num_channels!r}")
    unknown = sorted(set(options) - set(norm.options))
    if unknown:
        valid = _choices(norm.options) or "none"
        raise ValueError(f"norm {kind!r} does not take option(s) {_choices(unknown)}; valid options: {valid}")
    if norm.activation:
        options = {**options, "apply_act": bool(act)}
    return norm.layers[layout](num_channels, **{**norm.options, **options})


def includes_activation(module: nn.Module) -> bool:
    """Whether a norm `build` made applies its own activation (built with act=True by a kind
    that includes one): the network then applies none after it."""
    kind = kind_of(module)
    return bool(kind and get(kind).activation and getattr(module, "apply_act", False))


def kind_of(module: nn.Module) -> str | None:
    """The kind of a module `build` made, or None for any other module."""
    for norm in _REGISTRY.values():
        if type(module) in norm.classes:
            return norm.kind
    return None


def _options(norm_cfg: Mapping) -> tuple[Norm, dict]:
    cfg = dict(norm_cfg)
    norm = get(cfg.pop("kind", None))
    return norm, {**norm.options, **cfg}


def uses_batch_statistics(norm_cfg: Mapping) -> bool:
    """Whether the norm, with these options, takes statistics over the samples of a batch (bgn
    with examples_per_group=1 is a gn and does not: its own normalization_batch says 1)."""
    norm, options = _options(norm_cfg)
    if not norm.batch_statistics:
        return False
    return norm.normalization_batch is None or norm.normalization_batch(options, 2, 1) > 1


def normalization_batch(norm_cfg: Mapping, per_device_batch: int, world_size: int) -> int:
    """How many samples a norm's statistics average over in training: a batch-statistics norm
    the per-device batch, its virtual (ghost) batches, or with `sync` the batches of every
    process (or what its entry's own `normalization_batch` says); any other norm one sample."""
    norm, options = _options(norm_cfg)
    if not norm.batch_statistics:
        return 1
    if norm.normalization_batch is not None:
        return norm.normalization_batch(options, per_device_batch, world_size)
    if options.get("sync"):
        return per_device_batch * world_size
    return min(options.get("virtual_batch_size") or per_device_batch, per_device_batch)


def label(norm_cfg: Mapping, options: Iterable[str] | None = None) -> str:
    """'bn', 'bn (ghost 4)', 'gn (G=1)': the kind and the named options in the norm's notation
    (by default its variant options, those that change what its statistics average over)."""
    norm, values = _options(norm_cfg)
    names = norm.variant_options if options is None else [o for o in options if o in norm.options]
    parts = []
    for name in names:
        write = norm.notation.get(name, lambda v, name=name: f"{name}={v}")
        text = write(values.get(name))
        if text:
            parts.append(text)
    return f"{norm.kind} ({', '.join(parts)})" if parts else norm.kind


def check_batch(norm_cfg: Mapping, per_device_batch: int) -> None:
    """Let the norm refuse a per-device batch its options cannot split (before training)."""
    norm, options = _options(norm_cfg)
    if norm.check_batch is not None:
        norm.check_batch(options, per_device_batch)


def check_sites(norm_cfg: Mapping, sites: Callable[[], list[tuple[str, int]]]) -> None:
    """Let the norm refuse a model whose norm sites (layer name, channels) its options cannot
    serve. `sites` is called only for a norm that checks them (probing a model costs time)."""
    norm, options = _options(norm_cfg)
    if norm.check_sites is not None:
        norm.check_sites(sites(), options)
