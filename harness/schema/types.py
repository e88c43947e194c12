"""The types and ranges of the fixed part of the training config (conf/config.yaml), and of
eval.py's options. Types and ranges only: every value a run trains with is stated in conf/
(or, for a choice's own options, in the code the choice names), never here."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from norms.registry import POSITIVE, POSITIVE_INT, Check

from ..build import LR_SCALINGS

NON_NEGATIVE = Check(lambda v: math.isfinite(v) and v >= 0, "0 or more")
NON_NEGATIVE_INT = Check(lambda v: v >= 0, "an integer, 0 or more")
SEED = Check(lambda v: 0 <= v < 2**32, "an integer from 0 to 2**32 - 1")
NAME = Check(lambda v: v != "" and "/" not in v and len(v.encode()) <= 200,
             "a non-empty name without '/', at most 200 bytes (it names a directory)")
RERUN = ("none", "stale")  # rerun=stale: train again what another commit completed
WANDB_MODES = ("auto", "online", "offline", "disabled")
SCHEDULES = ("cosine", "step")
# inference example weighing's alphas (norms/batch.py): a list of numbers from 0 to 1
EXAMPLE_WEIGHTS = Check(lambda v: all(isinstance(a, (int, float)) and not isinstance(a, bool) and 0 <= a <= 1 for a in v),
                        "a list of numbers from 0 to 1, e.g. [0,0.1,0.2,0.3,0.5]")


def one_of(*values) -> Check:
    words = [str(v).lower() if isinstance(v, bool) else str(v) for v in values]  # true, as users type it
    return Check(lambda v: v in values, f"one of {', '.join(words)}")


def ranged(check: Check, default=MISSING):
    """A dataclass field whose value `validate` checks against `check` (None always passes)."""
    return field(default=default, metadata={"check": check})


@dataclass
class OptimBase:
    base_batch_size: int = ranged(POSITIVE_INT)
    lr_scaling: str = ranged(one_of(*LR_SCALINGS))
    warmup_epochs: float = ranged(Check(NON_NEGATIVE.test, "a number of epochs, 0 or more"))
    weight_decay_norm: bool = MISSING
    lr: float = ranged(POSITIVE)
    optimizer: Dict[str, Any] = MISSING  # checked by building it (validate._optimizer)
    schedule: str = ranged(one_of(*SCHEDULES))
    milestones: List[float] = MISSING
    step_gamma: float = ranged(Check(lambda v: 0 < v <= 1, "a number above 0, at most 1"))
    agc_clip: Optional[float] = ranged(POSITIVE)  # adaptive gradient clipping's lambda (harness/agc.py); null: off


@dataclass
class Perf:
    channels_last: bool = MISSING
    compile: bool = MISSING
    cudnn_benchmark: bool = MISSING
    cuda_graphs: bool = MISSING


@dataclass
class Checkpoint:
    enabled: bool = MISSING
    every_n_steps: Optional[int] = ranged(POSITIVE_INT)


@dataclass
class Eval:
    precise_bn_batches: int = ranged(NON_NEGATIVE_INT)
    example_weights: List[float] = ranged(EXAMPLE_WEIGHTS)


@dataclass
class Diagnostics:
    enabled: bool = MISSING
    every_n_steps: int = ranged(POSITIVE_INT)


@dataclass
class WandbLogger:
    project: str = MISSING
    entity: Optional[str] = MISSING
    mode: str = ranged(one_of(*WANDB_MODES))
    group: str = MISSING
    tags: List[str] = MISSING
    init_timeout: float = ranged(POSITIVE)


@dataclass
class Logger:
    wandb: Optional[WandbLogger] = MISSING


@dataclass
class TrainConfig:
    seed: int = ranged(SEED)
    experiment_name: str = ranged(NAME)
    run_name: str = ranged(NAME)
    data: Any = MISSING  # derive.data_schema(name)
    norm: Any = MISSING  # derive.norm_schema(kind)
    model: Any = MISSING  # derive.model_schema(arch)
    optim: OptimBase = field(default_factory=OptimBase)
    trainer: Any = MISSING  # derive.trainer_schema()
    logger: Logger = field(default_factory=Logger)
    num_threads: Any = ranged(Check(lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
                                    "auto or a positive integer"))
    perf: Perf = field(default_factory=Perf)
    progress_bar: Any = ranged(one_of("auto", True, False))
    progress_bar_refresh: int = ranged(POSITIVE_INT)
    rerun: str = ranged(one_of(*RERUN))
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    eval: Eval = field(default_factory=Eval)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    tags: List[str] = MISSING
    ckpt_path: Optional[str] = MISSING


@dataclass
class EvalConfig:
    """eval.py's options (conf/eval.yaml states only that run_dir is required)."""
    run_dir: str = MISSING
    checkpoint: Optional[str] = None  # default: <run_dir>/checkpoints/last.ckpt
    split: str = ranged(one_of("test", "val"), "test")
    precise_bn_batches: Optional[int] = ranged(NON_NEGATIVE_INT, None)  # null: the run's own eval.precise_bn_batches
    data_root: Optional[str] = None  # where the data set lives, if not where the run found it
    device: str = ranged(one_of("auto", "cpu"), "auto")
    out: str = ranged(NAME, "eval.json")  # written in run_dir
    # inference example weighing (bn, bgn): each alpha on the validation split, the best on test;
    # null: the run's own eval.example_weights ([] for a run from before it)
    example_weights: Optional[List[float]] = ranged(EXAMPLE_WEIGHTS, None)

