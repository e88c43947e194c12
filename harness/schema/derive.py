"""The parts of the schema a choice selects, derived from the code the choice names, so nothing
is declared twice: a norm's options from its registry entry, a model's from its constructor's
signature, a data set's from its DataModule's (and its base classes'), the trainer's from
Lightning's Trainer. Each field has the annotation's type, the code's default and a range."""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import field
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

import data as datasets
import models
import norms
from norms.registry import POSITIVE_INT, Check

from .types import NON_NEGATIVE, NON_NEGATIVE_INT, SEED, TrainConfig, one_of

_PRIMITIVES = (bool, int, float, str)


def _omegaconf_type(annotation) -> Any:
    """The type OmegaConf can check for a Python annotation: a primitive, Optional of one, or
    Any where the annotation admits several (an int and a float mean different things to
    Lightning's limit_*_batches, so no conversion may pick one)."""
    if annotation in _PRIMITIVES:
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        simple = [a for a in args if a in _PRIMITIVES]
        optional = type(None) in args
        others = [a for a in args if a not in _PRIMITIVES and a is not type(None)]
        # torch's `float | Tensor`: a Tensor cannot come from a command line
        others = [a for a in others if not (isinstance(a, type) and issubclass(a, torch.Tensor))]
        if len(simple) == 1 and not others:
            return Optional[simple[0]] if optional else simple[0]
    return Any


def _base_type(typ):
    return typing.get_args(typ)[0] if typing.get_origin(typ) is typing.Union else typ


def _fields(fns, skip: set[str], check=lambda pname, typ: None) -> list:
    """(name, type, field) per parameter of the functions `fns` (the first that names a
    parameter wins), with its annotation's type, its default and the range `check` gives it."""
    out, seen = [], set(skip)
    for fn in fns:
        hints = typing.get_type_hints(fn)
        for pname, param in inspect.signature(fn).parameters.items():
            if pname in seen or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            seen.add(pname)
            default = MISSING if param.default is inspect.Parameter.empty else param.default
            typ = _omegaconf_type(hints.get(pname, Any))
            if default is None and typ is not Any:
                typ = Optional[typ]
            rng = check(pname, _base_type(typ))
            out.append((pname, typ, field(default=default, metadata={"check": rng} if rng else {})))
    return out


def norm_schema(kind: str) -> type:
    """norm=<kind>: `kind` and the options of its registry entry, with their types and ranges."""
    entry = norms.get(kind)
    fields = [("kind", str, field(default=kind))]
    for option, default in entry.options.items():
        check = entry.option_ranges.get(option)
        fields.append((option, entry.option_type(option),
                       field(default=default, metadata={"check": check} if check else {})))
    return dataclasses.make_dataclass(f"norm_{kind}", fields)


MODEL_FLOAT = Check(lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1")  # dropout rates


def _model_range(pname, typ):
    """Every integer a backbone takes (depth, width, patch size, heads, ...) is positive; its
    floats are dropout rates; `conv` is one of models.CONVS."""
    if pname == "conv":
        return one_of(*models.CONVS)
    return POSITIVE_INT if typ is int else MODEL_FLOAT if typ is float else None


def model_schema(arch: str) -> type:
    """model=<name>: `name`, `arch`, `gn_groups` and the arguments of the arch's constructor."""
    ctor = models.ARCHS[arch]
    extra = [("name", str, field(default=MISSING)), ("arch", str, field(default=arch)),
             ("gn_groups", Optional[int], field(default=None, metadata={"check": POSITIVE_INT}))]
    return dataclasses.make_dataclass(f"model_{arch}", extra + _fields(
        [ctor.__init__ if inspect.isclass(ctor) else ctor], {"self", *models.BUILT_WITH}, _model_range))


DATA_RANGES = {"num_classes": Check(lambda v: v >= 2, "an integer, 2 or more"), "data_seed": SEED,
               "split_seed": SEED, "val_size": NON_NEGATIVE_INT, "num_workers": NON_NEGATIVE_INT,
               "pipeline": one_of(*datasets.PIPELINES)}


def _data_range(pname, typ):
    return DATA_RANGES.get(pname) or (POSITIVE_INT if typ is int else NON_NEGATIVE if typ is float else None)


def data_schema(name: str) -> type:
    """data=<name>: the options its DataModule and its base classes take."""
    classes = [c for c in datasets.DATASETS[name].__mro__ if issubclass(c, datasets.ImageDataModule)]
    return dataclasses.make_dataclass(f"data_{name}", [("name", str, field(default=name))] + _fields(
        [c.__init__ for c in classes], {"self"}, _data_range))


TRAINER_FIXED = {"self", "logger", "callbacks", "default_root_dir", "enable_checkpointing"}  # NormLab sets these
TRAINER_RANGES = {
    "max_epochs": Check(lambda v: v == -1 or v >= 1, "a positive integer, or -1 with trainer.max_steps (a step budget)"),
    "max_steps": Check(lambda v: v == -1 or v >= 1, "a positive integer, or -1 (no step budget)"),
    "accumulate_grad_batches": POSITIVE_INT, "num_nodes": POSITIVE_INT, "check_val_every_n_epoch": POSITIVE_INT,
    "log_every_n_steps": POSITIVE_INT, "num_sanity_val_steps": Check(lambda v: v >= -1, "-1 (all), 0 or more"),
    "min_epochs": NON_NEGATIVE_INT, "gradient_clip_val": NON_NEGATIVE,
}


def trainer_schema() -> type:
    """trainer.<any argument of Lightning's Trainer>, with the type of its annotation."""
    return dataclasses.make_dataclass("trainer", _fields([pl.Trainer.__init__], TRAINER_FIXED,
                                                         lambda pname, typ: TRAINER_RANGES.get(pname)))


def _choice(cfg: DictConfig, key: str, what: str, valid) -> str:
    value = OmegaConf.select(cfg, key)
    if value not in valid:
        raise ValueError(f"{key}: unknown {what} {value!r}; valid: {', '.join(sorted(map(str, valid)))}")
    return value


def schema_for(cfg: DictConfig) -> DictConfig:
    """The structured config this composed config must fit: the fixed part, and the schemas
    its norm kind, model arch and data set select."""
    kind = _choice(cfg, "norm.kind", "norm kind", norms.kinds())
    arch = _choice(cfg, "model.arch", "model arch", models.ARCHS)
    name = _choice(cfg, "data.name", "data set", datasets.DATASETS)
    return OmegaConf.structured(TrainConfig(norm=norm_schema(kind)(), model=model_schema(arch)(),
                                            data=data_schema(name)(), trainer=trainer_schema()()))
