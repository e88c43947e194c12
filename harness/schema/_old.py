"""The training config's schema: every key a run takes, its type and its range, in one place.

Types and unknown keys are OmegaConf's job: a composed config is merged into structured
configs (dataclasses registered in Hydra's ConfigStore), so a wrong type or a key that does
not exist is refused by name. The parts that depend on a choice come from the code that the
choice selects, so nothing is declared twice: a norm's options from its registry entry, a
model's from its constructor's signature, a data set's from its DataModule's, the trainer's
from Lightning's Trainer and the optimizer's from its `_target_`. Ranges (field metadata, a
`norms.Check`) and the rules between keys follow. `validate` raises one ValueError naming the
key as the user types it and what is valid.

Nothing here changes the config a run trains with: the typed copy is only checked, so a
run's identity stays what it was before the schema existed.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

import data as datasets
import models
import norms
from . import build
from norms.registry import POSITIVE, POSITIVE_INT, Check

NON_NEGATIVE = Check(lambda v: math.isfinite(v) and v >= 0, "0 or more")
NON_NEGATIVE_INT = Check(lambda v: v >= 0, "an integer, 0 or more")
SEED = Check(lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1")
NAME = Check(lambda v: v != "" and "/" not in v and len(v.encode()) <= 200,
             "a non-empty name without '/', at most 200 bytes (it names a directory)")
RERUN = ("none", "stale")  # rerun=stale: train again what another commit completed
WANDB_MODES = ("auto", "online", "offline", "disabled")


def one_of(*values) -> Check:
    words = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]  # true, as users type it
    return Check(lambda v: v in values, f"one of {', '.join(words)}")


def ranged(default, check: Check, **kw):
    """A dataclass field whose value `validate` checks against `check` (None always passes)."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: default, metadata={"check": check}, **kw)
    return field(default=default, metadata={"check": check}, **kw)


# ---------------------------------------------------------------------------------------
# The fixed part: conf/config.yaml
# ---------------------------------------------------------------------------------------
@dataclass
class DataBase:
    name: str = MISSING
    batch_size: int = ranged(32, POSITIVE_INT)
    eval_batch_size: int = ranged(256, POSITIVE_INT)
    val_size: int = ranged(5000, NON_NEGATIVE_INT)
    split_seed: int = ranged(0, SEED)
    train_subset: Optional[int] = ranged(None, POSITIVE_INT)
    augment: bool = True
    num_workers: int = ranged(0, NON_NEGATIVE_INT)
    pipeline: str = ranged("memory", one_of("memory", "dataloader"))


@dataclass
class OptimBase:
    base_batch_size: int = ranged(128, POSITIVE_INT)
    lr_scaling: str = ranged("linear", one_of(*build.LR_SCALINGS))
    warmup_epochs: float = ranged(1.0, Check(NON_NEGATIVE.test, "a number of epochs, 0 or more"))
    weight_decay_norm: bool = True
    lr: float = ranged(0.1, POSITIVE)
    optimizer: Dict[str, Any] = field(default_factory=dict)  # checked by building it (`_optimizer`)
    schedule: str = ranged("cosine", one_of("cosine", "step"))
    milestones: List[float] = field(default_factory=list)
    step_gamma: float = ranged(0.1, Check(lambda v: 0 < v <= 1, "a number above 0, at most 1"))


@dataclass
class Perf:
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = True


@dataclass
class Checkpoint:
    enabled: bool = True
    every_n_steps: Optional[int] = ranged(1000, POSITIVE_INT)


@dataclass
class Eval:
    precise_bn_batches: int = ranged(200, NON_NEGATIVE_INT)


@dataclass
class Diagnostics:
    enabled: bool = True
    every_n_steps: int = ranged(50, POSITIVE_INT)


@dataclass
class WandbLogger:
    project: str = "normlab"
    entity: Optional[str] = None
    mode: str = ranged("auto", one_of(*WANDB_MODES))
    group: str = "default"
    tags: List[str] = field(default_factory=list)
    init_timeout: float = ranged(30.0, POSITIVE)


@dataclass
class Logger:
    wandb: Optional[WandbLogger] = None


@dataclass
class TrainConfig:
    seed: int = ranged(0, SEED)
    experiment_name: str = ranged("default", NAME)
    run_name: str = ranged(MISSING, NAME)
    data: Any = MISSING  # DataBase and the data set's own options (`data_schema`)
    norm: Any = MISSING  # `norm_schema(kind)`
    model: Any = MISSING  # `model_schema(arch)`
    optim: OptimBase = field(default_factory=OptimBase)
    trainer: Any = MISSING  # `trainer_schema()`
    logger: Logger = field(default_factory=Logger)
    num_threads: Any = ranged("auto", Check(lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool)
                                                                         and v >= 1), "auto or a positive integer"))
    perf: Perf = field(default_factory=Perf)
    progress_bar: Any = ranged("auto", one_of("auto", True, False))
    progress_bar_refresh: int = ranged(20, POSITIVE_INT)
    rerun: str = ranged("none", one_of(*RERUN))
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    eval: Eval = field(default_factory=Eval)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    tags: List[str] = field(default_factory=list)
    ckpt_path: Optional[str] = None


# ---------------------------------------------------------------------------------------
# The parts a choice selects, derived from the code the choice names
# ---------------------------------------------------------------------------------------
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


def _from_signature(name: str, fn, skip: set[str], check=lambda pname, typ: None, extra=(), base=None) -> type:
    """A dataclass with a field per parameter of `fn` (its annotation's type, its default) and
    the range `check(name, type)` gives it."""
    hints = typing.get_type_hints(fn)
    fields = list(extra)
    for pname, param in inspect.signature(fn).parameters.items():
        if pname in skip or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = MISSING if param.default is inspect.Parameter.empty else param.default
        typ = _omegaconf_type(hints.get(pname, Any))
        if default is None and typ is not Any:
            typ = Optional[typ]
        rng = check(pname, _base_type(typ))
        fields.append((pname, typ, field(default=default, metadata={"check": rng} if rng else {})))
    return dataclasses.make_dataclass(name, fields, bases=(base,) if base else ())


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
    """model=<name>: `name`, `arch` and the arguments of the arch's constructor."""
    ctor = models.ARCHS[arch]
    return _from_signature(f"model_{arch}", ctor.__init__ if inspect.isclass(ctor) else ctor,
                           {"self", "norm", "in_channels", "num_classes", "image_size"}, _model_range,
                           extra=[("name", str, field(default=MISSING)), ("arch", str, field(default=arch)),
                                  ("gn_groups", Optional[int], field(default=None, metadata={"check": POSITIVE_INT}))])


DATA_RANGES = {"num_classes": Check(lambda v: v >= 2, "an integer, 2 or more"), "data_seed": SEED}


def _data_range(pname, typ):
    return DATA_RANGES.get(pname) or (POSITIVE_INT if typ is int else NON_NEGATIVE if typ is float else None)


def data_schema(name: str) -> type:
    """data=<name>: the options every data set takes and its DataModule's own arguments."""
    common = {f.name for f in dataclasses.fields(DataBase)}
    return _from_signature(f"data_{name}", datasets.DATASETS[name].__init__, {"self", *common}, _data_range,
                           base=DataBase)


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
    return _from_signature("trainer", pl.Trainer.__init__, TRAINER_FIXED, lambda pname, typ: TRAINER_RANGES.get(pname))


@dataclass
class EvalConfig:
    """eval.py's options."""
    run_dir: str = MISSING
    checkpoint: Optional[str] = None  # default: <run_dir>/checkpoints/last.ckpt
    split: str = ranged("test", one_of("test", "val"))
    precise_bn_batches: int = ranged(200, NON_NEGATIVE_INT)  # 0: no PreciseBN
    data_root: Optional[str] = None  # where the data set lives, if not where the run found it
    device: str = ranged("auto", one_of("auto", "cpu"))
    out: str = ranged("eval.json", NAME)  # written in run_dir


def register() -> None:
    """The schemas in Hydra's ConfigStore: `train_schema`, and under schema/<group>/ one per
    norm kind, model arch and data set (for `--info`, tools and tests; `validate` uses them)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="eval_schema", node=EvalConfig)
    for kind in norms.kinds():
        store.store(group="schema/norm", name=kind, node=norm_schema(kind))
    for arch in models.ARCHS:
        store.store(group="schema/model", name=arch, node=model_schema(arch))
    for name in datasets.DATASETS:
        store.store(group="schema/data", name=name, node=data_schema(name))
    store.store(group="schema", name="trainer", node=trainer_schema())
    store.store(name="open_trainer", node=open_trainer())


def open_trainer() -> DictConfig:
    """The `trainer` node open to new keys, first in conf/config.yaml's defaults: any Trainer
    argument is `trainer.<arg>=...` on the command line, without `+`, as Lightning users type
    it. `validate` checks every key against Lightning's Trainer signature, so a misspelt one is
    still one line naming it. The rest of the config stays closed (struct)."""
    node = OmegaConf.create({"trainer": {}})
    OmegaConf.set_struct(node.trainer, False)
    return node


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------
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


def _message(err: OmegaConfBaseException, schema: DictConfig, plain: DictConfig) -> str:
    """OmegaConf's error as one line that starts with the key; for a key that does not exist,
    the keys that do there (and where a key of that name does exist)."""
    key = getattr(err, "full_key", None) or ""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    if isinstance(err, ConfigKeyError) and isinstance(node, DictConfig):
        known = _dotted_keys(schema) + [f"optim.optimizer.{a}" for a in plain.optim.get("optimizer") or {}]
        elsewhere = [k for k in known if k.rpartition(".")[2] == leaf and k != key]
        hint = f"; did you mean {' or '.join(elsewhere)}?" if elsewhere else ""
        where = f"of {parent}" if parent else "at the top level"
        return f"{key}: no such key{hint} (valid keys {where}: {', '.join(node)})"
    expected = _expected(schema, key)
    if expected:
        return f"{key} must be {expected}, got {OmegaConf.select(plain, key)!r}"
    text = str(err).split("\n")[0].strip()
    return f"{key}: {text}" if key else text


_NODE_TYPES = {"IntegerNode": "an integer", "FloatNode": "a number", "BooleanNode": "true or false",
               "StringNode": "a string"}


def _expected(schema: DictConfig, key: str) -> str | None:
    """What the schema's value node at `key` accepts, in words ("an integer")."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(schema, parent) if parent else schema
    if not isinstance(node, DictConfig) or leaf not in node:
        return None
    value_node = node._get_node(leaf)
    words = _NODE_TYPES.get(type(value_node).__name__)
    if words and value_node._is_optional():
        words += " or null"
    return words


def _dotted_keys(node: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for k in node:
        if k == "optimizer":
            continue
        child = node._get_node(k)
        out.append(prefix + str(k))
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            out += _dotted_keys(child, f"{prefix}{k}.")
    return out


def check_ranges(cfg: DictConfig) -> None:
    """The ranges of a config already typed by its schema (eval.py's)."""
    _check_ranges(cfg, cfg, "")


def validate(cfg: DictConfig) -> None:
    """Refuse a config a run cannot train as asked: an unknown key, a wrong type, a value out
    of its range, or keys that contradict each other. One ValueError, naming the key."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:  # a `???` in a config file: a value only the user can give (data.root=... for imagefolder)
        raise ValueError(f"{missing[0]} is required: give it on the command line ({missing[0]}=...)")
    plain = OmegaConf.create(OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                                    resolve=True))
    schema = schema_for(plain)
    try:
        typed = OmegaConf.merge(schema, plain)
    except OmegaConfBaseException as err:
        raise ValueError(_message(err, schema, plain)) from None
    _check_ranges(typed, plain, "")
    _optimizer(plain.optim.optimizer)
    _cross_field(plain)


def _check_ranges(node: DictConfig, plain: DictConfig, prefix: str) -> None:
    """Every value against its field's range; the message shows the value as it was typed."""
    cls = OmegaConf.get_type(node)
    metadata = {f.name: f.metadata for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key in node:
        if OmegaConf.is_missing(node, key):
            continue
        value, dotted = node[key], f"{prefix}{key}"
        if isinstance(value, DictConfig):
            _check_ranges(value, plain, dotted + ".")
            continue
        check = metadata.get(key, {}).get("check")
        if check is None or value is None:
            continue
        try:
            ok = check.test(value)
        except TypeError:
            ok = False
        if not ok or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{dotted} must be {check.valid}, got {OmegaConf.select(plain, dotted)!r}")


def _optimizer(optimizer: DictConfig) -> None:
    """optim.optimizer: built once on a stand-in parameter, so the optimizer itself refuses an
    argument it does not take or a value it does not accept (torch checks its ranges)."""
    target = optimizer.get("_target_")
    cls = None
    if isinstance(target, str) and "." in target:
        module, _, name = target.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
    if cls is None:
        raise ValueError(f"optim.optimizer._target_: {target!r} is not an importable optimizer class "
                         "(e.g. torch.optim.SGD, torch.optim.AdamW)")
    kwargs = {k: v for k, v in optimizer.items() if k not in ("_target_", "_partial_")}
    params = [p for p in inspect.signature(cls).parameters if p not in ("self", "params", "lr")]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ValueError(f"optim.optimizer.{unknown[0]}: not an argument of {target}; valid: {', '.join(params)}")
    try:
        cls([torch.zeros(1, requires_grad=True)], lr=1.0, **OmegaConf.to_container(DictConfig(kwargs)))
    except (ValueError, TypeError) as err:
        raise ValueError(f"optim.optimizer: {target} refuses {dict(kwargs)}: {err}") from None


def _cross_field(cfg: DictConfig) -> None:
    """Rules between keys."""
    trainer = cfg.trainer
    if trainer.max_epochs == -1 and (trainer.get("max_steps") or -1) < 1:
        raise ValueError("trainer.max_epochs=-1 is a step budget: it needs trainer.max_steps (a positive integer)")
    if trainer.get("max_epochs") is None and (trainer.get("max_steps") or -1) < 1:
        raise ValueError("trainer.max_epochs must be a positive integer (or -1 with trainer.max_steps), got None")
    optim = cfg.optim
    if optim.get("schedule") == "step":
        milestones = list(optim.get("milestones") or [])
        if not milestones or any(m <= 0 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"optim.schedule=step needs optim.milestones, increasing positive epochs "
                             f"(e.g. [30,60,90]), got {milestones}")
    if trainer.get("sync_batchnorm"):
        raise ValueError("trainer.sync_batchnorm=true would convert NormLab's bn layers to nn.SyncBatchNorm, which "
                         "loses the ViT token layout and ghost batches and refuses CPU tensors; use norm.sync=true")
    if norms.uses_batch_statistics(cfg.norm) and cfg.data.batch_size == 1:
        raise ValueError(f"norm={cfg.norm.kind} with data.batch_size=1: batch statistics of one sample per device are "
                         f"undefined; use a batch size of at least 2, or a norm without batch statistics "
                         f"({', '.join(k for k in norms.kinds() if not norms.get(k).batch_statistics)})")
