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
    before that checkpoint, so the file ends up holding every step and epoch exactly once, with
    every column it ever had.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        # Flushed at every log call (every trainer.log_every_n_steps), so a killed run loses nothing.
        super().__init__(str(run_dir), name="", version="", flush_logs_every_n_steps=1)
        self.resume_step = resume_step

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if "epoch" in metrics:  # an integer column, though Lightning hands logged values over as floats
            metrics = {**metrics, "epoch": int(metrics["epoch"])}
        super().log_metrics(metrics, step)

    def _before_resume(self, step: int, row: dict) -> bool:
        """Whether the checkpointed run logged this row before its checkpoint at `resume_step`.
        Rows at that very step are its epoch end (validation, training metrics, diagnostics),
        which the resumed run never logs again, except the step curve's `train/loss_step`, which
        the next training step logs at the same step number. A test row is never kept: the
        relaunch tests again."""
        if any(k.startswith("test/") and v for k, v in row.items()):
            return False
        return step < self.resume_step or (step == self.resume_step and not row.get("train/loss_step"))

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            kept = []
            path = Path(self.log_dir) / "metrics.csv"
            if self.resume_step is not None and path.is_file():
                with open(path, newline="") as f:
                    kept = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)
                            if row.get("step") and self._before_resume(int(row["step"]), row)]
            writer = CSVLogger.experiment.fget(self)  # removes the old file
            writer.metrics[:0] = kept
        return self._experiment
