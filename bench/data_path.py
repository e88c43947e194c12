#!/usr/bin/env python
"""The data path's share of a training step: the in-memory pipeline (uint8 tensors, crop and
flip on whole batches on the device) against torchvision's Dataset + DataLoader pipeline
(per-sample PIL images and transforms, in worker processes or not).

    .venv/bin/python -m bench.data_path --batch-sizes 8,32,128
    .venv/bin/python -m bench.data_path --device cuda --workers 0,4

For each pipeline and batch size it times, on real Fashion-MNIST training batches:
- data: fetching --steps batches from the DataLoader, moving them to the device and
  preprocessing them (augmentation + normalization) as train.py does, with no model;
- step: one ResNet-20 (width 8) training step (forward, backward, SGD) on a batch already
  on the device, the median over --steps;
and prints data ms/batch, step ms and the data share = data / (data + step): the fraction
of a training step the data path would add if nothing overlapped it. (Lightning fetches the
next batch before running the current step but in the same thread, so with 0 workers nothing
does overlap; worker processes overlap on spare cores.)
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import data as datasets
import models
from bench.common import (compose, describe, int_list, machine, markdown_table, plain, resolve_device, sgd_step_ms, sync,
                          write_json)


def data_ms_per_batch(dm, device, steps: int) -> float:
    loader = iter(dm.train_dataloader())
    x, y = next(loader)  # worker start-up is not per-batch cost
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(loader)
        x, y = dm.preprocess((x.to(device, non_blocking=True), y.to(device, non_blocking=True)), train=True)
    sync(device)
    return 1e3 * (time.perf_counter() - t0) / steps


def step_ms(dm, device, steps: int) -> float:
    cfg = compose(["model=resnet20", "norm=bn"])
    cfg.model.width = 8
    torch.manual_seed(0)
    net = models.build(plain(cfg.model), plain(cfg.norm), dm.in_channels, dm.num_classes, dm.image_size).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = next(iter(dm.train_dataloader()))
    x, y = dm.preprocess((x.to(device), y.to(device)), train=True)
    times = [sgd_step_ms(net, opt, x, y, device) for _ in range(steps + 5)]
    return statistics.median(times[5:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int_list, default=[8, 32, 128])
    p.add_argument("--workers", type=int_list, default=[0, 2], help="DataLoader workers for the dataloader pipeline")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    device = resolve_device(args.device)
    info = machine(device)
    print(describe(info), flush=True)
    rows = []
    for batch in args.batch_sizes:
        base = {"name": "fashion_mnist", "batch_size": batch, "val_size": 1000}
        compute = step_ms(datasets.build(base), device, args.steps)
        for pipeline, workers in [("memory", 0)] + [("dataloader", w) for w in args.workers]:
            dm = datasets.build({**base, "pipeline": pipeline, "num_workers": workers})
            ms = data_ms_per_batch(dm, device, args.steps)
            rows.append({"batch": batch, "pipeline": pipeline, "workers": workers, "data_ms": ms, "step_ms": compute,
                         "share": ms / (ms + compute)})
            print(f"  batch {batch} {pipeline} ({workers} workers): data {ms:.2f} ms, step {compute:.2f} ms", flush=True)
    print()
    print(markdown_table(["batch", "pipeline", "workers", "data ms/batch", "step ms", "data share"],
                         [[r["batch"], r["pipeline"], r["workers"], f"{r['data_ms']:.2f}", f"{r['step_ms']:.2f}",
                           f"{100 * r['share']:.1f}%"] for r in rows], left=3))
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
