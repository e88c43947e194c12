"""A training run's W&B run: started, updated and finished here, and nowhere else.

Online when possible, offline otherwise, CSV only when W&B cannot start at all
(record.wandb_mode); W&B never fails a run. Every string handed to W&B is scrubbed of secret
values (W&B writes them to its files).
"""
from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from record import RunRecord, RunSpec
from record.code import code_version
from record.identity import flatten
from record.run import BATCH_KEYS, STATISTICS_KEYS
from record.secrets import redact, scrub
from record.wandb_mode import start_run

from . import launch

# Epoch-level curves are drawn against epochs in the W&B workspace, step curves against steps.
EPOCH_METRICS = ("train/loss_epoch", "train/acc", "train/images_per_second", "val/loss", "val/acc")


def wandb_config(cfg: DictConfig, spec: RunSpec) -> dict:
    """The run's W&B config: every key of the resolved config as a flat dotted key
    ("norm.num_groups", "optim.lr", "model.conv", ...), so a workspace groups and filters by
    any of them; short keys for the usual groupings; the identity and the code version. The
    learning rate after scaling and the batch sizes follow once the Trainer knows them (`setup`)."""
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    resolved.pop("hydra", None)
    flat = flatten({**resolved, "code": code_version()})  # code.commit, code.dirty, code.torch, ...
    return {**{k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()},
            "norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name, "batch_size": cfg.data.batch_size,
            "epochs": cfg.trainer.max_epochs, "experiment": cfg.experiment_name, "identity": spec.identity}


class WandbRun:
    """One run's W&B run, or an inactive stand-in when W&B is off (logger=csv) or could not
    start: every method is then a no-op."""

    def __init__(self, run=None, run_dir: Path | None = None):
        self.run, self.run_dir = run, run_dir
        self.logger = WandbLogger(experiment=run, save_dir=str(run_dir)) if run is not None else None

    @classmethod
    def start(cls, cfg: DictConfig, run_dir: Path, spec: RunSpec, args: list[str] | None = None) -> WandbRun:
        """Start the run's W&B run. Its name is the run directory's (two configurations never
        share one); its id derives from the identity and resume="allow", so a relaunched run
        continues the same W&B run (offline: one offline-run-* directory per attempt, same id).
        A W&B agent chooses the id itself (WANDB_SWEEP_ID). The recorded arguments are the job's
        own overrides (`args`; default: this Hydra job's), not a whole sweep's command."""
        wcfg = cfg.logger.get("wandb")
        if wcfg is None:
            return cls()
        tags = [f"norm:{cfg.norm.kind}", f"model:{cfg.model.name}", f"data:{cfg.data.name}",
                f"bs:{cfg.data.batch_size}", *wcfg.tags, *cfg.get("tags", [])]
        run = start_run(wcfg.mode, wcfg.init_timeout, project=scrub(wcfg.project), entity=redact(wcfg.entity),
                        name=scrub(spec.title), group=scrub(wcfg.group), tags=[scrub(t) for t in tags],
                        dir=str(run_dir), config=wandb_config(cfg, spec), resume="allow",
                        args=launch.job_overrides() if args is None else args, reinit="create_new",
                        id=None if os.environ.get("WANDB_SWEEP_ID") else spec.wandb_id)
        if run is None:
            return cls()
        # The x-axes WandbLogger sets on runs it starts itself; then epochs for the epoch curves.
        run.define_metric("trainer/global_step")
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        run.define_metric("epoch")
        for key in (*EPOCH_METRICS, "diag/*"):
            run.define_metric(key, step_metric="epoch")
        room = cls(run, run_dir)
        link_to_dashboard(run_dir, Path(run.dir).parent)
        return room

    @property
    def loggers(self) -> list:
        return [self.logger] if self.logger is not None else []

    def describe(self, record: RunRecord) -> None:
        """Where the record says its W&B run is."""
        if self.run is not None:
            record.wandb = {"id": self.run.id, "dir": str(Path(self.run.dir).parent), "mode": self.run.settings.mode}

    def setup(self, record: RunRecord) -> None:
        """The learning rate and batch sizes, to group and filter by in the W&B workspace."""
        if self.run is not None:
            what = record.what
            self.run.config.update({"lr": what.lr, "base_lr": what.base_lr, **{k: getattr(what, k) for k in BATCH_KEYS}},
                                   allow_val_change=True)

    def results(self, record: RunRecord) -> None:
        """What the logged curves do not already hold (test/acc, val/acc: their last values)."""
        if self.run is None:
            return
        res = record.results
        summary = {"train/images_per_second": res.images_per_second,  # the mean over epochs, as summary.json's
                   "best_val_acc": res.best_val_acc, "num_params": record.what.num_params,
                   "activation_mib": res.activation_mib, **{k: getattr(res, k) for k in STATISTICS_KEYS}}
        self.run.summary.update({k: v for k, v in summary.items() if v is not None})

    def finish(self, ok: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if ok else 1)
            self.run = self.logger = None


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


