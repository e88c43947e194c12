"""The loggers of a run: a CSV log that survives a resume, and W&B (online, offline or none)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from . import launch, record
from .secrets import redact, scrub
from .wandb_mode import start_run

# Epoch-level curves are drawn against epochs in the W&B workspace, step curves against steps.
EPOCH_METRICS = ("train/loss_epoch", "train/acc", "train/images_per_second", "val/loss", "val/acc")


def run_title(cfg: DictConfig) -> str:
    """The name a run goes by in W&B: its directory's under runs/, run name and identity."""
    return f"{launch.dir_name(cfg.run_name)}-{record.identity(cfg)}"


def wandb_config(cfg: DictConfig) -> dict:
    """The run's W&B config: every key of the resolved config as a flat dotted key
    ("norm.num_groups", "optim.lr", "model.conv", ...), so a workspace groups and filters by
    any of them; short keys for the usual groupings; the identity and the code version. The
    learning rate after scaling and the batch sizes are added once the Trainer knows them
    (train.py: "lr", "base_lr", record.BATCH_KEYS)."""
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    resolved.pop("hydra", None)
    flat = record.flatten({**resolved, "code": record.code_version()})  # code.commit, code.dirty, code.torch, ...
    return {**{k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()},
            "norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name, "batch_size": cfg.data.batch_size,
            "epochs": cfg.trainer.max_epochs, "experiment": cfg.experiment_name, "identity": record.identity(cfg)}


def wandb_logger(cfg: DictConfig, out_dir: Path) -> WandbLogger | None:
    """A WandbLogger on a run started by `wandb_mode.start_run`, or None (CSV only)."""
    wcfg = cfg.logger.wandb
    tags = [f"norm:{cfg.norm.kind}", f"model:{cfg.model.name}", f"data:{cfg.data.name}",
            f"bs:{cfg.data.batch_size}", *wcfg.tags, *cfg.get("tags", [])]
    # Run names are those of the run directories: two configurations never share one.
    # Every string handed to W&B is scrubbed of secret values (W&B writes them to its files).
    # The id derives from the run's identity and resume="allow": a relaunched run continues the
    # same W&B run (offline: one offline-run-* directory per attempt, same id). A W&B agent
    # chooses the run id itself (WANDB_RUN_ID). The recorded arguments are the job's own
    # overrides, not a whole sweep's command.
    run = start_run(wcfg.mode, wcfg.init_timeout, project=scrub(wcfg.project), entity=redact(wcfg.entity),
                    name=scrub(run_title(cfg)), group=scrub(wcfg.group), tags=[scrub(t) for t in tags], dir=str(out_dir),
                    config=wandb_config(cfg), resume="allow", args=launch.job_overrides(),
                    id=None if os.environ.get("WANDB_SWEEP_ID") else record.wandb_run_id(cfg))
    if run is None:
        return None
    # The x-axes WandbLogger sets on runs it starts itself; then epochs for the epoch curves.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    run.define_metric("epoch")
    for key in (*EPOCH_METRICS, "diag/*"):
        run.define_metric(key, step_metric="epoch")
    return WandbLogger(experiment=run, save_dir=str(out_dir))


def link_to_dashboard(out_dir: Path, attempt_dir: Path) -> Path | None:
    """Link a run's W&B directory (this attempt's) into `<out_dir.parent>/wandb/`, the sweep's
    (or the experiment's) W&B directory, so `wandb leet runs/<experiment>/wandb` browses every
    run of it in one terminal dashboard. The link is named like the run directory
    (`offline-run-<run dir>`; a resumed run's later attempts get `-attempt<k>`) and is relative,
    so moving runs/ keeps it. A file system without links costs the dashboard, never the run."""
    board = out_dir.parent / "wandb"
    prefix = "offline-run-" if attempt_dir.name.startswith("offline-run-") else "run-"
    base = f"{prefix}{out_dir.name}"
    target = os.path.relpath(attempt_dir, board)
    try:
        board.mkdir(exist_ok=True)
        links = [p for p in board.iterdir() if p.name == base or p.name.startswith(base + "-attempt")]
        if any(os.readlink(p) == target for p in links if p.is_symlink()):
            return None  # already linked
        link = board / (base if not links else f"{base}-attempt{len(links) + 1}")
        link.symlink_to(target, target_is_directory=True)
        return link
    except OSError as err:
        print(f"note: could not link the W&B run into {board} for `wandb leet` ({err.strerror}); "
              f"it is in {attempt_dir}", flush=True)
        return None


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, writing `metrics.csv` into the run directory itself.

    Lightning deletes an existing metrics.csv when its writer starts. When a run resumes from
    a checkpoint taken at global step `resume_step`, this logger first keeps the rows logged
    before that step, so the file ends up holding every step and epoch exactly once.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        # Flushed at every log call (every trainer.log_every_n_steps), so a killed run loses nothing.
        super().__init__(str(run_dir), name="", version="", flush_logs_every_n_steps=1)
        self.resume_step = resume_step

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if "epoch" in metrics:  # an integer column, though Lightning hands logged values over as floats
            metrics = {**metrics, "epoch": int(metrics["epoch"])}
        super().log_metrics(metrics, step)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            kept = []
            path = Path(self.log_dir) / "metrics.csv"
            if self.resume_step is not None and path.is_file():
                with open(path, newline="") as f:
                    kept = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)
                            if row.get("step") and int(row["step"]) < self.resume_step]
            writer = CSVLogger.experiment.fget(self)  # removes the old file
            writer.metrics[:0] = kept
        return self._experiment
