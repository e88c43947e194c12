"""Where a packed training step's time goes: the host (Python and kernel launches) or the device's
kernels. torch.profiler over a few steps of the pack's own step (bench.packing's): wall time per
step, the summed device-kernel time per step (GPU only) and the number of kernels launched.
A step whose kernels take far less than its wall time is launch-bound: packing more members
into it, or capturing it in a CUDA graph, is what moves it.

    python -m bench.step_profile --device cuda --batch-sizes 2,128 --members 1,9
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from harness.packed.loop import backward, optimize

from .common import compose, describe, int_list, machine, markdown_table, resolve_device, sync, write_json
from .packing import timing_pack


def profile_step(norm: str, batch: int, k: int, device, steps: int, model: str) -> dict:
    pack, members, scheds, orders = timing_pack(norm, batch, k, device, [f"model={model}"])

    def step(j):
        x, y = pack.batch(orders, j, batch, augment=True)
        backward(pack.stack, [m.net for m in members], x, y)
        optimize(pack.stack, [m.optimizer for m in members], scheds)

    for j in range(5):
        step(j)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for j in range(steps):
            step(5 + j)
        sync(device)
        wall = (time.perf_counter() - t0) / steps
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") if device.type == "cuda" else 0.0
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
    return {"norm": norm, "batch": batch, "members": k, "wall_ms": 1e3 * wall, "kernel_ms": kernel_us / 1e3 / steps,
            "launches_per_step": launches / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int_list, default=[2, 128])
    p.add_argument("--members", type=int_list, default=[1, 9])
    p.add_argument("--norm", default="bn")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = resolve_device(args.device)
    info = machine(device)
    print(describe(info), flush=True)
    out = [profile_step(args.norm, b, k, device, args.steps, args.model) for b in args.batch_sizes for k in args.members]
    print(markdown_table(["norm", "batch", "K", "wall ms/step", "kernel ms/step", "launches/step"],
                         [[r["norm"], r["batch"], r["members"], f"{r['wall_ms']:.2f}", f"{r['kernel_ms']:.2f}",
                           f"{r['launches_per_step']:.0f}"] for r in out]))
    if args.out:
        write_json(args.out, {"machine": info, "args": vars(args), "results": out})


if __name__ == "__main__":
    main()
