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


def record_statistics(results, cfg, net: nn.Module, dm, world_size: int, run_dir: Path) -> None:
    """Into a run's results (record.run.Results): PreciseBN and batch-statistics accuracies for
    a network with batch statistics; the recalibrated statistics go beside the checkpoint,
    which keeps its own."""
    if world_size > 1:
        print("note: PreciseBN and batch-statistics evaluation run on one process only; "
              "python eval.py <run dir> computes them for this run", flush=True)
        return
    from .resume import save_atomic

    out = evaluate(net, dm, cfg.data.batch_size, cfg.eval.precise_bn_batches)
    recalibrated = out.pop("_net", None)
    if recalibrated is not None:
        path = Path(run_dir) / "checkpoints" / "precise_bn.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(recalibrated.state_dict(), path)
        results.precise_bn_state = path
    for key, value in out.items():
        setattr(results, key, value)
