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

And, for bn and bgn, inference example weighing (Summers & Dinneen 2020; norms/batch.py): each
alpha of eval.example_weights evaluated on the validation split, the best (the smallest on a
tie) on the test split: `example_weight`, `val_acc_example_weight`, `test_acc_example_weight`.
No training: it only changes which statistics evaluation normalizes with.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

import norms
from data.order import _mix


def statistics_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The norm layers that keep running statistics of the batches they saw."""
    out = []
    for module in net.modules():
        kind = norms.kind_of(module)
        if kind and norms.get(kind).batch_statistics and getattr(module, "running_mean", None) is not None:
            out.append(module)
    return out


def weighing_layers(net: nn.Module) -> list[nn.Module]:
    """The norm layers inference example weighing applies to: bn's and bgn's with running statistics."""
    return [m for m in statistics_layers(net) if hasattr(m, "eval_example_weight")]


@contextlib.contextmanager
def example_weighted(net: nn.Module, alpha: float):
    """The network evaluating with example weight `alpha` in every layer that takes one, for the
    block's duration (then 0 again, as every other evaluation expects)."""
    layers = weighing_layers(net)
    for layer in layers:
        layer.eval_example_weight = float(alpha)
    try:
        yield net
    finally:
        for layer in layers:
            layer.eval_example_weight = 0.0


def example_weighing(net: nn.Module, dm, weights, device) -> dict:
    """Each alpha of `weights` on the validation split, the best (ties: the smallest alpha) on the
    test split, as summary.json keys, and every alpha's validation accuracy under "_val" (not a
    summary key); {} without layers to weigh or alphas to try."""
    weights = sorted({float(a) for a in weights or []})
    if not weights or not weighing_layers(net):
        return {}
    val = {}
    for alpha in weights:
        with example_weighted(net, alpha):
            val[alpha] = accuracy(net, dm.batches("val", dm.eval_batch_size, device))
    best = max(weights, key=lambda a: (val[a], -a))
    with example_weighted(net, best):
        test = accuracy(net, dm.batches("test", dm.eval_batch_size, device))
    return {"example_weight": best, "val_acc_example_weight": val[best], "test_acc_example_weight": test, "_val": val}


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _as_net(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x in the network's dtype (float64 after trainer.precision=64; images are made in float32)."""
    dtype = next(net.parameters()).dtype
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


@torch.no_grad()
def accuracy(net: nn.Module, batches: Iterable, batch_statistics: int | None = None) -> float:
    """Top-1 accuracy over (x, y) batches. With `batch_statistics` = b, every batch-statistics
    norm normalizes each group of b consecutive images by that group's own statistics, as a
    training batch of b is (on a copy: nothing is updated); images past a multiple of b in a
    batch are left out (measured: passes of one batch of b are as fast as larger passes of
    several groups on a CPU, and faster at b = 32, so evaluate() passes batches of b)."""
    if batch_statistics:
        net = copy.deepcopy(net)
    net.eval()
    if batch_statistics:
        for layer in statistics_layers(net):
            layer.train()
            layer.momentum = 0.0  # running = running: train-mode statistics leave no trace
            layer.virtual_batch_size = batch_statistics
    correct = total = 0
    for x, y in batches:
        if batch_statistics:
            n = len(y) - len(y) % batch_statistics
            x, y = x[:n], y[:n]
        if len(y):
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


PRECISE_STREAM = 4  # the stream of a run's seed PreciseBN's augmentation draws from


def evaluate(net: nn.Module, dm, batch_size: int, precise_bn_batches: int, seed: int, precise_splits=("val", "test"),
             batch_stat_splits=("test",), example_weights=()) -> dict:
    """The accuracies this module is about, as summary.json keys; {} for a network without
    batch statistics (they would equal the EMA numbers by construction). The recalibrated
    network is returned under "_net" (not a summary key) when PreciseBN ran. PreciseBN's
    batches are the first `precise_bn_batches` of the run's first epoch (`seed`'s order),
    augmented from a generator of the seed's own: the same whether the run trained alone or in
    a pack."""
    if not statistics_layers(net):
        return {}
    device, out = _device(net), {}
    was_training = net.training
    for split in batch_stat_splits:  # the last partial batch is left out: it would be a smaller batch
        out[f"{split}_acc_batch_stats"] = accuracy(net, dm.batches(split, batch_size, device, drop_last=True),
                                                   batch_statistics=batch_size)
    if precise_bn_batches > 0:
        rng = torch.Generator(device=device).manual_seed(_mix(seed, PRECISE_STREAM))
        batches = dm.batches("train", batch_size, device, seed=seed, drop_last=True, limit=precise_bn_batches, rng=rng)
        recalibrated, used = precise_bn(net, batches)
        out["precise_bn_batches"] = used
        for split in precise_splits:
            out[f"{split}_acc_precise_bn"] = accuracy(recalibrated, dm.batches(split, dm.eval_batch_size, device))
        out["_net"] = recalibrated
    out.update(example_weighing(net, dm, example_weights, device))
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

    out = evaluate(net, dm, cfg.data.batch_size, cfg.eval.precise_bn_batches, int(cfg.seed),
                   example_weights=cfg.eval.get("example_weights") or ())
    out.pop("_val", None)
    recalibrated = out.pop("_net", None)
    if recalibrated is not None:
        path = Path(run_dir) / "checkpoints" / "precise_bn.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(recalibrated.state_dict(), path)
        results.precise_bn_state = path
    for key, value in out.items():
        setattr(results, key, value)
