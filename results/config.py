"""The report's options, typed: Hydra rejects an unknown option or a wrong type by name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class WandbReport:
    mode: str = "auto"  # auto (online when logged in, else offline), online, offline, disabled
    project: str = "normlab"
    entity: Optional[str] = None
    init_timeout: float = 30


@dataclass
class ReportConfig:
    runs_dir: str = MISSING
    out_dir: Optional[str] = None
    cols: Optional[str] = None  # default: data.batch_size
    rows: Optional[str] = None  # keys named first in a row label; every other varying key follows
    facet: Optional[str] = None  # one table and figure per value of these keys
    select: Optional[str] = None  # tuned per cell and seed on validation error: optim.lr
    baseline: Optional[str] = None  # a series every other is compared with: bn
    ci: str = "t"  # t or bootstrap
    test: str = "welch"  # welch or permutation
    equivalence_margin: float = 1.0  # points of test error: "equivalent" only when a TOST within it passes
    contrasts: Optional[List[str]] = None  # pre-specified: ["gn conv=ws@2 vs bn@32"], in the table's Holm family
    plan: bool = False  # plan.csv: seeds per side the undecided comparisons need, and the command to add them
    include_debug: bool = False  # runs with fast_dev_run, limit_*_batches, ... (never results)
    timing: bool = False  # time every cell's configuration in turns, in this process
    timing_rounds: int = 5
    wandb: WandbReport = field(default_factory=WandbReport)


def register() -> None:
    ConfigStore.instance().store(name="report_schema", node=ReportConfig)
