"""The CSV log of a run, which survives a resume (W&B: harness/wandb_run.py)."""
from __future__ import annotations

import csv
from pathlib import Path

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

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
