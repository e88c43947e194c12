"""Time every cell's configuration against the others under the same conditions.

A run's own images/s is measured whenever that run trained, sharing the machine with whatever
ran beside it; ratios of those numbers mislead (a busy machine once made ln look 10x faster
than bn). Here each cell's network is built from its run's config and a training step
(forward, cross-entropy, backward, SGD) on a random batch of its batch size is timed in
turns: round after round, every configuration takes a few steps, so a change in load hits all
of them. The median over rounds is reported with its spread. Same method as bench/norm_cost.py.
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

import data as datasets
import models

from .runs import Run


def _network(run: Run):
    tree = run.resolved
    dm = datasets.build(tree["data"])  # the data set's shape and classes, no files read
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = models.build(tree["model"], tree["norm"], dm.in_channels, dm.num_classes, dm.image_size).train()
    batch = tree["data"]["batch_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, dm.in_channels, dm.image_size, dm.image_size, generator=g)
    y = torch.randint(0, dm.num_classes, (batch,), generator=g)
    return net, torch.optim.SGD(net.parameters(), lr=1e-3), x, y


def _steps(net, opt, x, y, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return 1e3 * (time.perf_counter() - t0) / n


def interleaved(cells: dict, rounds: int = 5, steps: int = 3) -> dict:
    """{key: {"median_ms", "min_ms", "max_ms", "rounds"}} for `cells` = {key: a run of that cell},
    timed in turns on this process's CPU threads (one warm-up round is not counted)."""
    nets = {key: _network(run) for key, run in cells.items()}
    times: dict = {key: [] for key in nets}
    for r in range(rounds + 1):
        for key, (net, opt, x, y) in nets.items():
            ms = _steps(net, opt, x, y, steps)
            if r:
                times[key].append(ms)
    return {key: {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t), "rounds": rounds}
            for key, t in times.items()}
