"""From a composed (and validated, harness.schema) config to the objects a run trains with.

An error a user can cause that only the objects reveal (a data file missing, a group count
that does not divide a layer) is raised here, as a ValueError or FileNotFoundError whose
message names the key and what would be valid.
"""
from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

import data as datasets
import models
import norms

from .callbacks import StopAtLimit, parse_duration

LR_SCALINGS = {"linear": lambda r: r, "sqrt": math.sqrt, "none": lambda r: 1.0}


LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches")


def debug_settings(cfg: DictConfig) -> dict:
    """The Trainer settings that make a run a check of the code rather than a measurement
    (fast_dev_run, overfit_batches, a profiler, a limit_*_batches below the whole split; Lightning reads an
    integer limit as a number of batches, so limit_train_batches=1 is one batch). {} when none."""
    trainer, out = cfg.trainer, {}
    if trainer.get("fast_dev_run"):
        out["trainer.fast_dev_run"] = trainer.fast_dev_run
    if trainer.get("overfit_batches"):
        out["trainer.overfit_batches"] = trainer.overfit_batches
    if trainer.get("profiler"):  # its hooks slow every step: the run's costs are not the norm's
        out["trainer.profiler"] = trainer.profiler
    for key in LIMITS:
        value = trainer.get(key)
        if value is not None and (isinstance(value, int) or value != 1.0):
            out[f"trainer.{key}"] = value
    return out


def stop_limit(cfg: DictConfig):
    """The callback that stops a run at trainer.max_time, or at trainer.max_steps under an epoch
    budget (the run is then `stopped`, resumable); None when neither is set."""
    trainer = cfg.trainer
    steps = trainer.get("max_steps") if trainer.get("max_epochs") != -1 else None
    steps = steps if steps is not None and steps >= 0 else None
    wall = trainer.get("max_time")
    if steps is None and wall is None:
        return None
    return StopAtLimit(steps, parse_duration(OmegaConf.to_container(wall) if OmegaConf.is_config(wall) else wall)
                       if wall is not None else None)


def scaled_lr(optim: DictConfig, optimization_batch: int) -> float:
    """optim.lr at optim.base_batch_size, scaled (optim.lr_scaling) to the optimisation batch."""
    return optim.lr * LR_SCALINGS[optim.lr_scaling](optimization_batch / optim.base_batch_size)


def data(cfg: DictConfig):
    """The DataModule, its files read and checked now."""
    dm = datasets.build(cfg.data)
    try:
        dm.setup()
    except OSError as err:
        if err.errno is None or err.filename is None:  # NormLab's own message already says what to do
            raise
        where = f"data.root={cfg.data.root}" if cfg.data.get("root") else "the default data directory"
        raise OSError(err.errno, f"{where} cannot hold the data set: {err.strerror} ({err.filename}); "
                                 "set data.root to a writable directory") from None
    return dm


def net(cfg: DictConfig, dm) -> torch.nn.Module:
    return models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)


def data_and_net(cfg: DictConfig):
    """The DataModule and the network, in the run's RNG state (after pl.seed_everything: the
    data module's setup draws nothing from torch's generator)."""
    dm = data(cfg)
    return dm, net(cfg, dm)


def activation_mib(net: torch.nn.Module, dm, batch_size: int) -> float:
    """What a training batch's activations cost (models.activation_bytes), in MiB, measured on
    a copy of the model (bn's running statistics untouched) without drawing from the run's RNG."""
    with torch.random.fork_rng(devices=[]):
        x = torch.randn(batch_size, dm.in_channels, dm.image_size, dm.image_size)
        return models.activation_bytes(copy.deepcopy(net).train(), x) / 2**20


def resolve_precision(precision):
    """trainer.precision=auto: bf16 mixed precision on a GPU that has it, fp16 on one that
    does not, fp32 on a CPU."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def describe_setup(record, cfg: DictConfig, trainer: pl.Trainer) -> None:
    """What the record says of the run's setup once its Trainer exists: the learning rate,
    which follows the optimisation batch (per device x devices x accumulation), the three batch
    sizes (README "Three batch sizes"), and what it runs on."""
    what = record.what
    what.optimization_batch_size = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
    what.lr, what.base_lr = scaled_lr(cfg.optim, what.optimization_batch_size), cfg.optim.lr
    what.per_device_batch_size, what.world_size = cfg.data.batch_size, trainer.world_size
    what.normalization_batch_size = norms.normalization_batch(cfg.norm, cfg.data.batch_size, trainer.world_size)
    what.torch_threads = torch.get_num_threads()
    what.accelerator = trainer.accelerator.__class__.__name__.replace("Accelerator", "").lower()
    what.precision = str(trainer.precision)


def trainer(cfg: DictConfig, out_dir: Path, loggers: list, callbacks: list, **fixed) -> pl.Trainer:
    """A Trainer from the `trainer` config group (any Trainer argument), plus `fixed` ones."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    for limit in ("max_time", *(("max_steps",) if kwargs.get("max_epochs") != -1 else ())):
        kwargs.pop(limit, None)  # limits, not budgets: harness.callbacks.StopAtLimit (stop_limit below)
    kwargs["precision"] = resolve_precision(kwargs.get("precision", "auto"))
    kwargs.setdefault("benchmark", cfg.perf.cudnn_benchmark)  # trainer.benchmark, if given, wins
    valid = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger", "callbacks", *fixed}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown Trainer argument(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return pl.Trainer(**kwargs, **fixed, logger=loggers, callbacks=callbacks, default_root_dir=str(out_dir))
