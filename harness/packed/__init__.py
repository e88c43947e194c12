"""Packed runs: the seeds and learning rates of a cell trained as one model (hydra/launcher=packed).

    stack.py    K networks as one: parameters and buffers stacked, each member's net a view
    member.py   one run of a pack: what it owns, as it would own it alone; its checkpoint
    loop.py     the training loop for K members: steps, logs, epochs, divergence, signals, test

`pack_key(cfg)` says which runs may pack together (their configs differ only in the seed, the
learning rate and the weight decay) or why a run cannot pack; `train(jobs)` trains one pack.
"""
from __future__ import annotations

import os
import signal

import torch
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

import norms
from record import RunDir, RunRecord, RunSpec
from record.identity import flatten, identity_source

from .. import build
from ..outcome import RunEnd
from . import loop
from . import member as mb

# What members of one pack may differ in; the run name holds the seed.
PACKED_KEYS = ("seed", "run_name", "optim.lr", "optim.optimizer.weight_decay")
PRECISIONS = ("32-true", "bf16-mixed")
# On a CPU a pack pays only at the smallest batches with many members (BENCHMARKS.md "Packed
# runs"): measured for the quick study's ResNet-8 on one core, 1.2-1.3x the member steps of runs
# alone at batch 2 with 9 members, and 0.6-0.9x with 3 members or at batch 8 and 32. Elsewhere
# the runs of a cell train one at a time in the pack's loop.
CPU_PACK_BATCH, CPU_PACK_MEMBERS = 2, 9


def why_alone(cfg: DictConfig) -> str | None:
    """Why a run cannot train in a pack, or None when it can."""
    trainer = cfg.trainer
    if (trainer.get("devices") not in (1, "1", None, "auto") or (trainer.get("num_nodes") or 1) > 1
            or "ddp" in str(trainer.get("strategy") or "")):
        return "it trains on several processes (DDP)"
    if cfg.norm.get("sync"):
        return "norm.sync=true synchronizes statistics across processes"
    if cfg.data.get("pipeline") != "memory":
        return f"data.pipeline={cfg.data.get('pipeline')}: a pack gathers its batches from data held on the device"
    precision = build.resolve_precision(trainer.get("precision", "auto"))
    if precision not in PRECISIONS:
        return f"trainer.precision={precision}: a pack trains in {' or '.join(PRECISIONS)}"
    if build.debug_settings(cfg):
        return f"a debug run ({', '.join(build.debug_settings(cfg))})"
    for key in ("accumulate_grad_batches", "gradient_clip_val", "val_check_interval"):
        if trainer.get(key) not in (None, 1, 1.0, 0, 0.0) and not (key == "accumulate_grad_batches" and trainer.get(key) == 1):
            return f"trainer.{key}: the pack's loop does not implement it"
    if build.stop_limit(cfg) is not None:
        return "trainer.max_time or trainer.max_steps (under an epoch budget) is a limit the pack's loop does not implement"
    if cfg.perf.get("compile") or cfg.perf.get("channels_last"):
        return "perf.compile and perf.channels_last apply to a network trained alone"
    if cfg.get("ckpt_path"):
        return "ckpt_path names a checkpoint to resume from"
    if not norms.get(cfg.norm.kind).packs:
        return f"norm={cfg.norm.kind} does not run vectorized over runs (torch.func.vmap)"
    return None


def pack_key(cfg: DictConfig) -> str:
    """What every member of a pack shares: the config less PACKED_KEYS, as the identity sees it."""
    import json

    flat = flatten(identity_source(cfg))
    return json.dumps({k: v for k, v in flat.items() if k not in PACKED_KEYS}, sort_keys=True, default=str)


def pack_sizes(cfg: DictConfig, device, runs: int, max_pack: int | None = None) -> list[int]:
    """How a cell's `runs` that may pack are split into packs: at most `max_pack` members each
    when given; else on a GPU one pack, and on a CPU one pack only where it pays (batch at most
    CPU_PACK_BATCH and at least CPU_PACK_MEMBERS runs), one run per pack otherwise."""
    if max_pack:
        cap = max_pack
    elif torch.device(device).type == "cpu":
        pays = int(cfg.data.batch_size) <= CPU_PACK_BATCH and runs >= CPU_PACK_MEMBERS
        cap = runs if pays else 1
    else:
        cap = runs
    return [min(cap, runs - start) for start in range(0, runs, cap)]


def device_of(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def train(jobs: list[tuple[DictConfig, RunDir, list]]) -> list[RunRecord]:
    """Train the (validated) configs of one pack, each in its own run directory: their records,
    written there however each run ended."""
    cfg0 = jobs[0][0]
    device = device_of(cfg0)
    precision = build.resolve_precision(cfg0.trainer.get("precision", "auto"))
    dm = build.data(cfg0)  # the same data for every member: only the seed orders it
    members = []
    for cfg, run_dir, overrides in jobs:
        spec = RunSpec.of(cfg)
        record = RunRecord.begin(cfg, spec, run_dir.path)
        net = mb.build_net(cfg, dm)
        record.what.num_params = sum(p.numel() for p in net.parameters())
        record.results.activation_mib = build.activation_mib(net, dm, cfg.data.batch_size)
        members.append(mb.Member(cfg=cfg, spec=spec, run_dir=run_dir, overrides=list(overrides), record=record,
                                 end=RunEnd(run_dir, record), net=net))
    if len(members) > 1:
        print(f"pack of {len(members)} on {device}: " + ", ".join(m.name for m in members), flush=True)
    try:
        loop.train(members, dm, device, precision)
    except BaseException as err:  # the pack's end is every member's: each records it
        for m in members:
            m.end.close(err)
        if isinstance(err, SIGTERMException):
            raise SystemExit(128 + signal.SIGTERM) from None
        raise
    for m in members:
        m.end.close(None)
    return [m.record for m in members]


def threads(n_jobs: int) -> int:
    """torch threads per pack when n_jobs packs train at once on this machine's cores."""
    cores = os.cpu_count() or 1
    return max(1, cores // max(1, min(n_jobs if n_jobs > 0 else cores, cores)))
