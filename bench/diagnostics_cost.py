#!/usr/bin/env python
"""What the training diagnostics cost (harness/diagnostics.py): the training-step time of a step
that is not measured (the hooks exist only during measured steps, so this is the plain step)
and of a measured one, and the overhead that implies at `diagnostics.every_n_steps`.

    .venv/bin/python -m bench.diagnostics_cost
    .venv/bin/python -m bench.diagnostics_cost --models resnet20,vit --batch-sizes 2,32 --every 50

Both are timed in interleaved rounds (plain, measured, plain, ...), the median of --steps steps
per round and the median over rounds, so drifts of the machine hit both alike.
overhead = (measured - plain) / plain / every.
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from bench.common import describe, int_list, machine, markdown_table, resolve_device, str_list, sync
from bench.norm_cost import NUM_CLASSES, SEED, WARMUP, build, step
from harness.diagnostics import NormDiagnostics


def timed(net, x, y, device, steps: int, diag=None, active: bool = False) -> float:
    times = []
    for _ in range(WARMUP + steps):
        sync(device)
        t0 = time.perf_counter()
        step_with(net, x, y, diag, active)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[WARMUP:])


def step_with(net, x, y, diag, active: bool) -> None:
    if diag is None or not active:
        step(net, x, y)
        return
    import torch.nn.functional as F

    diag.stats.start()  # what on_train_batch_start does on a measured step
    F.cross_entropy(net(x), y).backward()
    diag.stats.grad_norms()  # the gradient norms, as before an optimizer step
    diag.stats.stop()  # the step's values into the sums
    net.zero_grad(set_to_none=True)


def measure(model: str, norm: str, batch: int, device, args) -> dict:
    net = build(model, norm, args).to(device).train()
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, args.channels, args.image_size, args.image_size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    diag = NormDiagnostics(args.every)
    module = SimpleNamespace(net=net, device=device)
    diag.setup(None, module, "fit")
    rounds = {"plain": [], "measured": []}
    for _ in range(args.rounds):
        rounds["plain"].append(timed(net, x, y, device, args.steps, diag, active=False))
        rounds["measured"].append(timed(net, x, y, device, args.steps, diag, active=True))
    ms = {k: statistics.median(v) for k, v in rounds.items()}
    overhead = (ms["measured"] - ms["plain"]) / ms["plain"] / args.every
    return {"model": model, "norm": norm, "batch": batch, **ms, "overhead": overhead}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=str_list, default=["resnet20"])
    p.add_argument("--norms", type=str_list, default=["bn", "gn", "none"])
    p.add_argument("--batch-sizes", type=int_list, default=[8, 32])
    p.add_argument("--every", type=int, default=50, help="diagnostics.every_n_steps")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    args = p.parse_args()
    device = resolve_device(args.device)
    print(describe(machine(device)))
    rows = []
    for model in args.models:
        for norm in args.norms:
            for batch in args.batch_sizes:
                r = measure(model, norm, batch, device, args)
                rows.append([r["model"], r["norm"], r["batch"], f"{r['plain']:.2f}", f"{r['measured']:.2f}",
                             f"{100 * r['overhead']:.2f} %"])
                print(f"{model} {norm} batch {batch}: {r['plain']:.2f} / {r['measured']:.2f} ms", flush=True)
    print(markdown_table(["model", "norm", "batch", "plain step ms", "measured step ms",
                          f"overhead at every {args.every}"], rows, left=2))


if __name__ == "__main__":
    main()
