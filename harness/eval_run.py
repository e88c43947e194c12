"""A finished run's checkpoint, evaluated again (eval.py): its test or validation accuracy with
the running statistics it trained with, with PreciseBN's and with batch statistics, and (bn,
bgn) inference example weighing's alpha chosen on validation and its test accuracy
(harness.evaluation), written to eval.json beside its summary."""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf, open_dict

from record import Malformed, RunDir, RunSpec
from record.io import write_json
from record.rundir import not_this_run

from . import build
from .evaluation import accuracy, evaluate


def run_config(run_dir: RunDir):
    """The config a run trained with: its .hydra/config.yaml, else its summary's config."""
    hydra_cfg = run_dir.path / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        return OmegaConf.load(hydra_cfg)
    try:
        record = run_dir.read()
    except Malformed:
        record = None
    if record is not None and isinstance(record.what.config, dict):
        return OmegaConf.create(record.what.config)
    raise FileNotFoundError(f"{run_dir.path} is not a run directory: no .hydra/config.yaml or summary.json with a config")


def evaluate_run(opts) -> dict:
    """Evaluate a run directory's checkpoint (eval.py's options, harness.schema.EvalConfig) and
    write eval.json beside its summary. Raises ValueError / FileNotFoundError with one line."""
    run_dir = RunDir(opts.run_dir)
    if not run_dir.path.is_dir():
        raise FileNotFoundError(f"{run_dir.path}: no such run directory")
    cfg = run_config(run_dir)
    if opts.data_root is not None:
        with open_dict(cfg):
            cfg.data.root = opts.data_root
    spec = RunSpec.of(cfg)
    state = run_dir.state(spec.identity, spec.run_name)
    if state.kind == "foreign":  # its config and its summary disagree: neither can be trusted
        raise ValueError(state.detail)
    ckpt = Path(opts.checkpoint) if opts.checkpoint else run_dir.checkpoint
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no checkpoint (checkpoint=<path> names another)")
    try:
        ckpt_state = torch.load(ckpt, map_location="cpu", weights_only=True)
        weights = {k.removeprefix("net."): v for k, v in ckpt_state["state_dict"].items() if k.startswith("net.")}
    except Exception as err:  # noqa: BLE001 - truncated, empty, or not a Lightning checkpoint
        raise ValueError(f"{ckpt} is not a readable checkpoint ({type(err).__name__})") from None
    found = (ckpt_state.get("normlab") or {}).get("identity")
    if found is not None and found != spec.identity:  # another configuration's checkpoint: one line
        raise not_this_run(f"checkpoint={ckpt} was written by another configuration", found, None, spec.identity,
                           spec.run_name, advice=f"evaluate it with its own run directory, not {run_dir.path}")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # PreciseBN's batches: the run's first epoch order
    dm, net = build.data_and_net(cfg)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{ckpt} does not fit the network of {run_dir.path}'s config: {str(err).splitlines()[0]}") from None
    device = torch.device("cuda" if torch.cuda.is_available() and opts.device != "cpu" else "cpu")
    net.to(device)
    out = {"run_dir": str(run_dir.path), "checkpoint": str(ckpt), "identity": spec.identity, "split": opts.split,
           "global_step": ckpt_state.get("global_step"),
           f"{opts.split}_acc": accuracy(net, dm.batches(opts.split, dm.eval_batch_size, device))}
    batches = cfg.eval.precise_bn_batches if opts.precise_bn_batches is None else opts.precise_bn_batches
    weights = opts.example_weights if opts.example_weights is not None else cfg.eval.get("example_weights")
    extra = evaluate(net, dm, cfg.data.batch_size, batches, int(cfg.seed), precise_splits=(opts.split,),
                     batch_stat_splits=(opts.split,), example_weights=weights or ())
    extra.pop("_net", None)
    if "_val" in extra:  # every alpha's validation accuracy, as {"0.1": ...}
        extra["val_acc_by_example_weight"] = {str(a): acc for a, acc in extra.pop("_val").items()}
    out.update(extra)
    if state.kind in ("done", "stale") and state.record.completed:
        res = state.record.results
        recorded = res.test_acc if opts.split == "test" else res.final_val_acc
        if recorded is not None:
            out[f"summary_{opts.split}_acc"] = recorded
    write_json(run_dir.path / opts.out, out)
    return out
