"""`validate`: refuse a config a run cannot train as asked, before anything is read or
trained: an unknown key, a wrong type, a value out of its range, an optimizer argument the
optimizer refuses, or keys that contradict each other. One ValueError, naming the key."""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import math

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

import norms

from .derive import schema_for
from .messages import message


def validate(cfg: DictConfig) -> None:
    schema = schema_for(cfg)  # the choices first: conf/'s ${norm_default:...} and the like resolve through them
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:  # a `???` in a config file: a value only the user can give (data.root=... for imagefolder)
        raise ValueError(f"{missing[0]} is required: give it on the command line ({missing[0]}=...)")
    try:
        plain = OmegaConf.create(OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                                                        resolve=True))
    except InterpolationResolutionError as err:
        cause = err.__cause__ or err
        raise ValueError(f"{getattr(err, 'full_key', '') or 'the config'}: {str(cause).splitlines()[0]}") from None
    try:
        typed = OmegaConf.merge(schema, plain)
    except OmegaConfBaseException as err:
        raise ValueError(message(err, schema, plain)) from None
    _check_ranges(typed, plain, "")
    _optimizer(plain.optim.optimizer)
    _cross_field(plain)


def check_ranges(cfg: DictConfig) -> None:
    """The ranges of a config already typed by its schema (eval.py's)."""
    _check_ranges(cfg, cfg, "")


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


def _cuda(trainer: DictConfig) -> bool:
    accelerator = str(trainer.get("accelerator") or "auto")
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


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
    if cfg.perf.get("cuda_graphs") and not _cuda(trainer):
        raise ValueError(f"perf.cuda_graphs=true captures the training step in a CUDA graph: it needs a CUDA GPU, and "
                         f"this run trains on the CPU (trainer.accelerator={trainer.get('accelerator')}, "
                         f"CUDA available: {torch.cuda.is_available()})")
    if trainer.get("sync_batchnorm"):
        raise ValueError("trainer.sync_batchnorm=true would convert NormLab's bn layers to nn.SyncBatchNorm, which "
                         "loses the ViT token layout and ghost batches and refuses CPU tensors; use norm.sync=true")
    norms.check_batch(cfg.norm, cfg.data.batch_size)  # bgn: its groups of examples split the batch
    if norms.uses_batch_statistics(cfg.norm) and cfg.data.batch_size == 1:
        raise ValueError(f"norm={cfg.norm.kind} with data.batch_size=1: batch statistics of one sample per device are "
                         f"undefined; use a batch size of at least 2, or a norm without batch statistics "
                         f"({', '.join(k for k in norms.kinds() if not norms.get(k).batch_statistics)})")
    if cfg.optim.get("agc_clip") is not None and cfg.trainer.get("gradient_clip_val"):
        raise ValueError(f"optim.agc_clip={cfg.optim.agc_clip} and trainer.gradient_clip_val="
                         f"{cfg.trainer.gradient_clip_val} both clip the gradients; use one (null / 0 turns either off)")
