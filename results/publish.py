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
    """The figures and the CSV tables (results, comparisons, runs, aggregate, improvement, plan) as W&B
    images and tables."""
    run = start_run(cfg.wandb.mode, cfg.wandb.init_timeout, what="W&B report", project=cfg.wandb.project,
                    entity=cfg.wandb.entity, job_type="report", group=experiment, name=f"report-{experiment}",
                    dir=str(out_dir), config={"experiment": experiment})
    if run is None:
        return None
    import wandb

    images = {p.stem: wandb.Image(str(p), caption=title) for p in sorted(out_dir.glob("*.png"))}
    names = ("results", "comparisons", "runs", "aggregate", "improvement", "plan")
    tables = {name: _table(out_dir / f"{name}.csv") for name in names if (out_dir / f"{name}.csv").is_file()}
    run.log({**images, **tables,
             "findings": wandb.Table(columns=["finding"], data=[[f] for f in findings])})
    run.finish()
    return run.id
