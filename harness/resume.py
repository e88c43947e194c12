"""Checkpoints a run trusts: only its own configuration's, written whole.

`resume_point` finds the checkpoint a run that stopped part-way resumes from; `check` refuses
a checkpoint another configuration wrote; `save_atomic` writes through a temporary file.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from record import RunDir, RunSpec
from record.rundir import not_this_run


def check(state: dict, spec: RunSpec, path: Path, given: bool) -> None:
    """Refuse a checkpoint that another configuration wrote (checkpoints from before identities
    were recorded in them are accepted); `given`: named by ckpt_path, not found in the run
    directory (the advice differs: another run's checkpoint is never to be deleted)."""
    found = (state.get("normlab") or {}).get("identity")
    if found is not None and found != spec.identity:
        advice = ("give ckpt_path a checkpoint of this configuration, or leave it out" if given else
                  "use another directory (hydra.run.dir / hydra.sweep.dir) or delete it")
        raise not_this_run(f"{path} was written by another configuration", found, None, spec.identity, spec.run_name,
                           advice=advice)


def resume_point(ckpt_path: str | None, run_dir: RunDir, spec: RunSpec, rank_zero: bool) -> tuple[Path | None, int | None]:
    """The checkpoint a run resumes from, and its step: `ckpt_path` when given, else the run's
    own last.ckpt. Only this configuration's (another's is refused); an unreadable last.ckpt
    is set aside and the run starts over, an unreadable ckpt_path refused."""
    ckpt = Path(ckpt_path).expanduser() if ckpt_path else run_dir.checkpoint
    if not ckpt.is_file():
        if ckpt_path:
            raise FileNotFoundError(f"ckpt_path={ckpt_path}: no such checkpoint file")
        return None, None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        step = state["global_step"]
    except Exception as err:  # noqa: BLE001 - truncated, empty or not a checkpoint at all
        if ckpt_path:
            raise ValueError(f"ckpt_path={ckpt_path} is not a readable checkpoint ({type(err).__name__})") from None
        if rank_zero:
            run_dir.set_aside(ckpt, f"unreadable checkpoint ({type(err).__name__}), starting over")
        return None, None
    check(state, spec, ckpt, given=bool(ckpt_path))
    return ckpt, step


def save_atomic(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename (removed if the write fails)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
