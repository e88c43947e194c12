"""The loggers of a run: a CSV log that survives a resume, and W&B (online, offline or none)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

from . import record
from .secrets import redact, scrub
from .wandb_mode import start_run

# Epoch-level curves are drawn against epochs in the W&B workspace, step curves against steps.
EPOCH_METRICS = ("train/loss_epoch", "train/acc", "train/images_per_second", "val/loss", "val/acc")


def wandb_logger(cfg: DictConfig, out_dir: Path) -> WandbLogger | None:
    """A WandbLogger on a run started by `wandb_mode.start_run`, or None (CSV only)."""
    wcfg = cfg.logger.wandb
    tags = [f"norm:{cfg.norm.kind}", f"model:{cfg.model.name}", f"data:{cfg.data.name}",
            f"bs:{cfg.data.batch_size}", *wcfg.tags]
    # Flat keys to group and filter by in the W&B workspace; the whole resolved config under "cfg".
    config = {"norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name,
              "batch_size": cfg.data.batch_size, "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
              "experiment": cfg.experiment_name, "identity": record.identity(cfg), "code": record.code_version(),
              "cfg": redact(OmegaConf.to_container(cfg, resolve=True))}
    # The id derives from the run's identity and resume="allow": a relaunched run continues the
    # same W&B run (offline: one offline-run-* directory per attempt, same id). A W&B agent
    # chooses the run id itself (WANDB_RUN_ID).
    # Every string handed to W&B is scrubbed of secret values (W&B writes them to its files).
    run = start_run(wcfg.mode, wcfg.init_timeout, project=scrub(wcfg.project), entity=redact(wcfg.entity),
                    name=scrub(cfg.run_name), group=scrub(wcfg.group), tags=[scrub(t) for t in tags], dir=str(out_dir),
                    config=config, resume="allow", id=None if os.environ.get("WANDB_SWEEP_ID") else record.wandb_run_id(cfg))
    if run is None:
        return None
    # The x-axes WandbLogger sets on runs it starts itself; then epochs for the epoch curves.
    run.define_metric("trainer/global_step")
    run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    run.define_metric("epoch")
    for key in (*EPOCH_METRICS, "diag/*"):
        run.define_metric(key, step_metric="epoch")
    return WandbLogger(experiment=run, save_dir=str(out_dir))


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
