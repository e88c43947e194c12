#!/usr/bin/env python
"""The data loader's share of a training step on an ImageFolder tree (data=imagefolder):
JPEG decoding and ImageNet's transforms in worker processes, against the step they feed.

    .venv/bin/python -m bench.loader_share                                   # a generated tree, CPU
    .venv/bin/python -m bench.loader_share --root /datasets/imagenet --device cuda --workers 4,8,16

For each number of workers it runs --steps training steps of --model (ResNet-50 by default)
at --crop pixels, fetching every batch from the real DataLoader of data=imagefolder as a run
does, and times:
- wait: the time the loop is blocked in next(loader) waiting for a batch (what the loader
  costs the step after its prefetching and worker processes have overlapped what they can);
- step: the forward, backward and SGD step on the batch once it is on the device;
and prints their medians and the loader's share = wait / (wait + step). Without --root, a tree
of --classes x --images-per-class JPEGs of 400x350 pixels (smooth random images at quality 90,
about the size of ImageNet's) is written to a temporary directory first.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import data as datasets
import models
from bench.common import describe, int_list, machine, markdown_table, resolve_device, sgd_step_ms, sync, write_json


def write_tree(root: Path, classes: int, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"class{c:03d}"
            folder.mkdir(parents=True)
            for i in range(n):
                low = torch.from_numpy(rng.random((1, 3, 12, 14), dtype=np.float32))
                img = F.interpolate(low, size=(350, 400), mode="bicubic", align_corners=False)[0]
                pixels = (img.clamp(0, 1) * 255).permute(1, 2, 0).numpy().astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.JPEG", quality=90)
    return root


def measure(dm, net, opt, device, steps: int) -> tuple[float, float]:
    loader = iter(dm.train_dataloader())
    waits, computes = [], []
    for i in range(steps + 2):  # the first 2: worker start-up and first-step allocations
        t0 = time.perf_counter()
        x, y = next(loader)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync(device)
        wait = 1e3 * (time.perf_counter() - t0)
        step = sgd_step_ms(net, opt, x, y, device)
        if i >= 2:
            waits.append(wait)
            computes.append(step)
    return statistics.median(waits), statistics.median(computes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", help="an ImageFolder tree (train/, val/); default: a generated one")
    p.add_argument("--classes", type=int, default=8)
    p.add_argument("--images-per-class", type=int, default=40)
    p.add_argument("--model", default="resnet50", choices=["resnet18", "resnet50"])
    p.add_argument("--norm", default="bn")
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int_list, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    device = resolve_device(args.device)
    info = machine(device)
    print(describe(info), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else write_tree(Path(tmp), args.classes, args.images_per_class)
        rows = []
        for workers in args.workers:
            dm = datasets.build({"name": "imagefolder", "root": str(root), "crop_size": args.crop,
                                 "resize_size": round(args.crop * 256 / 224), "batch_size": args.batch_size,
                                 "val_size": args.classes, "num_workers": workers})
            torch.manual_seed(0)
            net = models.build({"name": args.model, "arch": "torchvision_resnet", "depth": int(args.model[6:]),
                                "small_stem": False}, {"kind": args.norm, **({"num_groups": 32} if args.norm == "gn" else {})},
                               3, dm.num_classes, args.crop).to(device)
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
            wait, step = measure(dm, net.train(), opt, device, args.steps)
            rows.append({"workers": workers, "wait_ms": wait, "step_ms": step, "share": wait / (wait + step)})
            print(f"  {workers} workers: wait {wait:.1f} ms, step {step:.1f} ms", flush=True)
    print()
    print(markdown_table(["workers", "wait ms/batch", "step ms", "loader share"],
                         [[r["workers"], f"{r['wait_ms']:.1f}", f"{r['step_ms']:.1f}", f"{100 * r['share']:.1f}%"]
                          for r in rows]))
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
