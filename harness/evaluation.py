"""Evaluation that separates a model from its normalization statistics.

Three accuracies of one trained network, which differ only for norms with batch statistics:
- with the running (EMA) statistics training left, the usual number (`test_acc`);
- with PreciseBN's (`precise_bn`): the population statistics recomputed after training as the
  equal-weight average of the per-batch statistics of training batches at the run's batch
  size (fvcore's update_bn_stats; Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"),
  not an average weighted towards the last steps;
- with each test batch of the training batch size normalized by its own statistics, as in
  training (train-mode statistics, no running-statistic update).
The EMA-to-PreciseBN gap is what the running averages cost; the EMA-to-batch-statistics gap is
bn's train/eval inconsistency at that batch size.
"""
from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

import norms


def statistics_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The norm layers that keep running statistics of the batches they saw."""
    out = []
    for module in net.modules():
        kind = norms.kind_of(module)
        if kind and norms.get(kind).batch_statistics and getattr(module, "running_mean", None) is not None:
            out.append(module)
    return out


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _as_net(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x in the network's dtype (float64 after trainer.precision=64; images are made in float32)."""
    dtype = next(net.parameters()).dtype
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


@torch.no_grad()
def accuracy(net: nn.Module, batches: Iterable, batch_statistics: bool = False) -> float:
    """Top-1 accuracy over (x, y) batches. With `batch_statistics`, every batch-statistics norm
    normalizes each batch with that batch's own statistics (on a copy: nothing is updated)."""
    if batch_statistics:
        net = copy.deepcopy(net)
    net.eval()
    if batch_statistics:
        for layer in statistics_layers(net):
            layer.train()
            layer.momentum = 0.0  # running = running: train-mode statistics leave no trace
    correct = total = 0
    for x, y in batches:
        correct += (net(_as_net(net, x)).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)


@torch.no_grad()
def precise_bn(net: nn.Module, batches: Iterable) -> tuple[nn.Module, int]:
    """A copy of `net` whose batch-statistics norms hold the equal-weight average of the
    per-batch means and (unbiased) variances of `batches`; the number of batches used. The
    network's own statistics are left as they are."""
    net = copy.deepcopy(net).eval()
    layers = statistics_layers(net)
    if not layers:
        return net, 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # PyTorch's cumulative average: the i-th batch weighs 1/i
        layer.train()
    n = 0
    for x, _ in batches:
        net(_as_net(net, x))
        n += 1
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    return net.eval(), n


def on_device(loader, preprocess, train: bool, device, limit: int | None = None):
    """(x, y) batches from a DataLoader, moved to `device` and preprocessed as the model sees
    them (augmented when `train`)."""
    for x, y in itertools.islice(loader, limit):
        yield preprocess((x.to(device), y.to(device)), train=train)


def evaluate(net: nn.Module, dm, batch_size: int, precise_bn_batches: int, precise_splits=("val", "test"),
             batch_stat_splits=("test",)) -> dict:
    """The accuracies this module is about, as summary.json keys; {} for a network without
    batch statistics (they would equal the EMA numbers by construction). The recalibrated
    network is returned under "_net" (not a summary key) when PreciseBN ran."""
    if not statistics_layers(net):
        return {}
    device, out = _device(net), {}
    was_training = net.training
    for split in batch_stat_splits:  # the last partial batch is left out: it would be a smaller batch
        loader = dm.eval_loader(split, batch_size, drop_last=True)
        out[f"{split}_acc_batch_stats"] = accuracy(net, on_device(loader, dm.preprocess, False, device),
                                                   batch_statistics=True)
    if precise_bn_batches > 0:
        train = dm.train_dataloader()
        recalibrated, used = precise_bn(net, on_device(train, dm.preprocess, True, device, precise_bn_batches))
        out["precise_bn_batches"] = used
        for split in precise_splits:
            loader = dm.eval_loader(split, dm.eval_batch_size)
            out[f"{split}_acc_precise_bn"] = accuracy(recalibrated, on_device(loader, dm.preprocess, False, device))
        out["_net"] = recalibrated
    net.train(was_training)
    return out


# ---------------------------------------------------------------------------------------
# A finished run's checkpoint, evaluated again (eval.py)
# ---------------------------------------------------------------------------------------
def run_config(run_dir: Path):
    """The config a run trained with: its .hydra/config.yaml, else its summary's config."""
    from omegaconf import OmegaConf

    from . import record

    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        return OmegaConf.load(hydra_cfg)
    summary = record.read_summary(run_dir)
    if summary and isinstance(summary.get("config"), dict):
        return OmegaConf.create(summary["config"])
    raise FileNotFoundError(f"{run_dir} is not a run directory: no .hydra/config.yaml or summary.json with a config")


def evaluate_run(opts) -> dict:
    """Evaluate a run directory's checkpoint (eval.py's options, harness.schema.EvalConfig) and
    write eval.json beside its summary. Raises ValueError / FileNotFoundError with one line."""
    import pytorch_lightning as pl
    from omegaconf import open_dict

    from . import build, record

    run_dir = Path(opts.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    cfg = run_config(run_dir)
    if opts.data_root is not None:
        with open_dict(cfg):
            cfg.data.root = opts.data_root
    ckpt = Path(opts.checkpoint) if opts.checkpoint else run_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt}: no checkpoint (checkpoint=<path> names another)")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        weights = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    except Exception as err:  # noqa: BLE001 - truncated, empty, or not a Lightning checkpoint
        raise ValueError(f"{ckpt} is not a readable checkpoint ({type(err).__name__})") from None
    record.check_checkpoint(state, cfg, ckpt)  # another configuration's checkpoint: one line
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # PreciseBN's batches: the run's first epoch order
    dm, net = build.data_and_net(cfg)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{ckpt} does not fit the network of {run_dir}'s config: {str(err).splitlines()[0]}") from None
    device = torch.device("cuda" if torch.cuda.is_available() and opts.device != "cpu" else "cpu")
    net.to(device)
    loader = dm.eval_loader(opts.split, dm.eval_batch_size)
    out = {"run_dir": str(run_dir), "checkpoint": str(ckpt), "identity": record.identity(cfg), "split": opts.split,
           "global_step": state.get("global_step"), f"{opts.split}_acc": accuracy(net, on_device(loader, dm.preprocess,
                                                                                                False, device))}
    extra = evaluate(net, dm, cfg.data.batch_size, opts.precise_bn_batches, precise_splits=(opts.split,),
                     batch_stat_splits=(opts.split,))
    extra.pop("_net", None)
    out.update(extra)
    summary = record.read_summary(run_dir) or {}
    recorded = summary.get(f"{opts.split}_acc") if opts.split == "test" else summary.get("final_val_acc")
    if recorded is not None and summary.get("identity") == out["identity"]:
        out[f"summary_{opts.split}_acc"] = recorded
    record.write_json(run_dir / opts.out, out)
    return out
