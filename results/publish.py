"""The report's W&B run (job type "report"): its figures and tables, online or offline."""
from __future__ import annotations

import csv
from pathlib import Path

from omegaconf import DictConfig

from record.wandb_mode import start_run


def _table(path: Path):
    import wandb

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return wandb.Table(columns=rows[0], data=rows[1:])


def log_to_wandb(cfg: DictConfig, out_dir: Path, title: str, experiment: str, findings: list[str]) -> str | None:
    """The figures, results.csv, comparisons.csv and runs.csv as W&B images and tables."""
    run = start_run(cfg.wandb.mode, cfg.wandb.init_timeout, what="W&B report", project=cfg.wandb.project,
                    entity=cfg.wandb.entity, job_type="report", group=experiment, name=f"report-{experiment}",
                    dir=str(out_dir), config={"experiment": experiment})
    if run is None:
        return None
    import wandb

    images = {p.stem: wandb.Image(str(p), caption=title) for p in sorted(out_dir.glob("*.png"))}
    run.log({**images, "results": _table(out_dir / "results.csv"), "comparisons": _table(out_dir / "comparisons.csv"),
             "runs": _table(out_dir / "runs.csv"),
             "findings": wandb.Table(columns=["finding"], data=[[f] for f in findings])})
    run.finish()
    return run.id
