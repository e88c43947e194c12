"""One run of a pack: everything it owns, as it would own it alone.

Its directory, identity and record; its network (a view into the pack's stack once stacked),
built from its own seed exactly as a solo run builds it; its optimizer and learning-rate
schedule at its own learning rate and weight decay; its training order and augmentation
generator from its seed; its CSV log and W&B run; its epoch history; its norm diagnostics; and
how it ended (harness/outcome.RunEnd). Its checkpoint holds what a relaunch resumes it from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from data.device import augment_generator
from data.order import EpochSampler
from record import RunDir, RunRecord, RunSpec

from .. import agc, build, resume
from ..loggers import ResumableCSVLogger
from ..module import lr_factor, optimizer
from ..outcome import RunEnd
from ..wandb_run import WandbRun

FORMAT = "normlab-pack/1"  # a member's checkpoint (train.py resumes it through the pack's loop)


@dataclass
class Member:
    cfg: DictConfig
    spec: RunSpec
    run_dir: RunDir
    overrides: list
    record: RunRecord
    end: RunEnd
    net: torch.nn.Module
    history: list = field(default_factory=list)
    fit_seconds: float = 0.0  # earlier attempts'
    alive: bool = True

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def name(self) -> str:
        return self.spec.run_name


def build_net(cfg: DictConfig, dm) -> torch.nn.Module:
    """The member's network in the RNG state a solo run builds it in (build.data_and_net)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    return build.net(cfg, dm)


def setup(member: Member, dm, device, steps_per_epoch: int, total_steps: int, state: dict | None) -> None:
    """The member's optimizer, schedule, order, augmentation, loggers and diagnostics; from its
    checkpoint `state` when it resumes."""
    cfg, rec = member.cfg, member.record
    member.optimizer = optimizer(member.net, cfg.optim, rec.what.lr)
    member.clip = agc.clipper(member.net, cfg.optim.get("agc_clip"))  # optim.agc_clip, before each step
    factor, capped = lr_factor(cfg.optim, steps_per_epoch, total_steps)
    if capped:
        print(f"{member.name}: {capped}", flush=True)
    member.scheduler = torch.optim.lr_scheduler.LambdaLR(member.optimizer, factor)
    member.order = EpochSampler(len(dm.dataset("train")), member.seed)
    member.rng = augment_generator(member.seed, device)
    member.sums = torch.zeros(3, device=device)  # the epoch's loss sum, correct, count
    step = None
    if state is not None:
        member.net.load_state_dict({k.removeprefix("net."): v for k, v in state["state_dict"].items()})
        member.optimizer.load_state_dict(state["optimizer_states"][0])
        member.scheduler.load_state_dict(state["lr_schedulers"][0])
        member.history = list(state["normlab"]["history"])
        member.fit_seconds = state["normlab"]["fit_seconds"]
        member.rng.set_state(state["data"]["augment_rng"])
        member.sums = state["train_sums"].to(device)
        step = state["global_step"]
    member.wandb = WandbRun.start(cfg, member.run_dir.path, member.spec, args=member.overrides)
    member.end.wandb = member.wandb
    member.wandb.describe(rec)
    member.csv = ResumableCSVLogger(member.run_dir.path, step)
    rec.csv_log = Path(member.csv.log_dir) / "metrics.csv"
    member.wandb.setup(rec)


def log(member: Member, metrics: dict, step: int) -> None:
    for logger in (member.csv, *member.wandb.loggers):
        logger.log_metrics(metrics, step=step)


def save(member: Member, epoch: int, step: int, samples_done: int, seconds: float, pack: dict) -> None:
    """checkpoints/last.ckpt through a temporary file: a solo run's keys where they mean the same
    (state_dict as "net.<name>", global_step, epoch, normlab), so eval.py, the dry run and the
    identity check read it as they read a solo run's."""
    for logger in (member.csv, *member.wandb.loggers):
        logger.save()
    state = {"format": FORMAT, "epoch": epoch, "global_step": step,
             "state_dict": {f"net.{k}": v.detach().clone() for k, v in member.net.state_dict().items()},
             "optimizer_states": [member.optimizer.state_dict()], "lr_schedulers": [member.scheduler.state_dict()],
             "normlab": {"history": member.history, "fit_seconds": member.fit_seconds + seconds,
                         "identity": member.spec.identity, "packed": pack},
             "data": {"epoch": epoch, "samples_done": samples_done, "augment_rng": member.rng.get_state()},
             "train_sums": member.sums.detach().cpu(), "torch_rng": torch.get_rng_state()}
    path = member.run_dir.checkpoint
    path.parent.mkdir(parents=True, exist_ok=True)
    resume.save_atomic(state, path)


def load(member: Member) -> dict | None:
    """The member's checkpoint, if it has one of its own written by a pack (resume.resume_point
    refuses another configuration's and sets an unreadable one aside)."""
    ckpt, _ = resume.resume_point(None, member.run_dir, member.spec, rank_zero=True)
    if ckpt is None:
        return None
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ValueError(f"{ckpt} was written by a run trained alone (Lightning): relaunch it without "
                         "hydra/launcher=packed to resume it")
    member.record.resumed_from = {"checkpoint": str(ckpt), "global_step": state["global_step"]}
    return state


def written_by_pack(run_dir: RunDir) -> bool:
    """Whether the run's checkpoint was written by a pack (it resumes through the pack's loop)."""
    try:
        return torch.load(run_dir.checkpoint, map_location="cpu", weights_only=True).get("format") == FORMAT
    except Exception:  # noqa: BLE001 - no checkpoint, or one resume.resume_point sets aside
        return False


def describe(member: Member, trainer_precision: str, device) -> None:
    """What the record says of the member's setup, as build.describe_setup for a solo run."""
    cfg, what = member.cfg, member.record.what
    import norms

    what.optimization_batch_size = what.per_device_batch_size = cfg.data.batch_size
    what.world_size = 1
    what.lr, what.base_lr = build.scaled_lr(cfg.optim, cfg.data.batch_size), cfg.optim.lr
    what.normalization_batch_size = norms.normalization_batch(cfg.norm, cfg.data.batch_size, 1)
    what.torch_threads = torch.get_num_threads()
    what.accelerator = torch.device(device).type
    what.precision = trainer_precision


def steps(dm, batch_size: int, max_epochs: int, max_steps: int | None) -> tuple[int, int]:
    """(optimizer steps per epoch, steps in the run): drop_last batches, the step budget if any."""
    per_epoch = len(dm.dataset("train")) // batch_size
    total = per_epoch * max_epochs if max_epochs and max_epochs > 0 else math.inf
    if max_steps and max_steps > 0:
        total = min(total, max_steps)
    return per_epoch, int(total)
