#!/usr/bin/env python
"""The cost of each norm: training-step (forward + backward) time, activation memory and
parameters of every norm in every model, at several batch sizes, on random inputs.

    .venv/bin/python -m bench.norm_cost --batch-sizes 8,32 --models resnet20
    .venv/bin/python -m bench.norm_cost --device cuda --markdown bench/norm_cost.md --json bench/norm_cost.json

Models and norms are built by models.build from conf/model/*.yaml and conf/norm/*.yaml, as
train.py builds them. Time: the median over --steps training steps (cross-entropy forward,
backward, gradients dropped) after 5 warmup steps.

Memory, on any device: the bytes autograd saves for backward during one training forward
(distinct storages; parameters and buffers excluded), counted with
torch.autograd.graph.saved_tensors_hooks. That is the activation memory a step holds from its
forward to its backward, the part that differs between norms; buffers an op frees before it
returns are not in it. The process's max RSS is not used: it is a high-water mark for the whole
process, so after the first large configuration it no longer moves. On CUDA, also the peak
allocated during a step above what was allocated before it (activations, gradients,
workspaces), from torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import models
from bench.common import (
    compose,
    describe,
    int_list,
    machine,
    markdown_table,
    plain,
    resolve_device,
    str_list,
    sync,
    write_json,
)

NORMS = ["bn", "ln", "in", "gn", "none"]
NUM_CLASSES = 10
WARMUP = 5
SEED = 0
MiB = 2**20


def build(model: str, norm: str, args) -> torch.nn.Module:
    cfg = compose([f"model={model}", f"norm={norm}"])
    torch.manual_seed(SEED)
    return models.build(plain(cfg.model), plain(cfg.norm), args.channels, NUM_CLASSES, args.image_size)


def step(net, x, y, precision: str = "fp32") -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = F.cross_entropy(net(x), y)
    loss.backward()
    net.zero_grad(set_to_none=True)


def step_ms(net, x, y, device, steps: int, precision: str = "fp32") -> float:
    times = []
    for _ in range(WARMUP + steps):
        sync(device)
        t0 = time.perf_counter()
        step(net, x, y, precision)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times[WARMUP:])


def cuda_peak_bytes(net, x, y, device) -> int:
    net.zero_grad(set_to_none=True)
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    F.cross_entropy(net(x), y).backward()  # gradients kept until the peak is read: they count
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    net.zero_grad(set_to_none=True)
    return peak


def measure(model: str, norm: str, batch: int, device, args) -> dict:
    net = build(model, norm, args).to(device).train()
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, args.channels, args.image_size, args.image_size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)
    if args.channels_last:  # train.py's perf.channels_last
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    timed = torch.compile(net) if args.compile else net  # train.py's perf.compile
    row = {"model": model, "norm": norm, "batch": batch, "ms": step_ms(timed, x, y, device, args.steps, args.precision),
           "saved_mib": models.activation_bytes(net, x) / MiB, "params": sum(p.numel() for p in net.parameters())}
    if device.type == "cuda":
        row["cuda_peak_mib"] = cuda_peak_bytes(net, x, y, device) / MiB
    return row


def table(rows: list[dict], cuda: bool) -> str:
    bn_ms = {(r["model"], r["batch"]): r["ms"] for r in rows if r["norm"] == "bn"}
    headers = ["model", "norm", "batch", "fwd+bwd ms", "vs bn", "saved-activation MiB"]
    headers += ["CUDA peak MiB"] if cuda else []
    out = []
    for r in rows:
        bn = bn_ms.get((r["model"], r["batch"]))
        cells = [r["model"], r["norm"], r["batch"], f"{r['ms']:.2f}", f"{r['ms'] / bn:.2f}x" if bn else "-",
                 f"{r['saved_mib']:.2f}"]
        cells += [f"{r['cuda_peak_mib']:.2f}"] if cuda else []
        out.append(cells + [f"{r['params']:,}"])
    return markdown_table(headers + ["params"], out, left=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=str_list, default=["resnet20", "vit"])
    p.add_argument("--norms", type=str_list, default=NORMS)
    p.add_argument("--batch-sizes", type=int_list, default=[8, 32, 128])
    p.add_argument("--steps", type=int, default=20, help=f"timed steps (after {WARMUP} warmup steps)")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, as bf16-mixed")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and input (perf.channels_last)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (perf.compile); warmup compiles")
    p.add_argument("--markdown", metavar="PATH", help="also write the table (and the machine) as markdown")
    p.add_argument("--json", metavar="PATH", help="also write the rows (and the machine) as JSON")
    args = p.parse_args()
    if args.steps < 1:
        p.error("--steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    info = machine(device)
    shape = f"{args.channels}x{args.image_size}x{args.image_size}"
    options = ", ".join([args.precision] + ["channels_last"] * args.channels_last + ["compiled"] * args.compile)
    header = [describe(info), f"input {shape}, {NUM_CLASSES} classes; {options}; median of {args.steps} steps after {WARMUP}"]
    print("\n".join(header), flush=True)

    rows, notes = [], []
    for model in args.models:
        for norm in args.norms:
            for batch in args.batch_sizes:
                try:
                    rows.append(measure(model, norm, batch, device, args))
                except ValueError as err:  # models.build's messages: gn groups, ViT patch size, ...
                    notes.append(f"skipped {model} {norm} batch {batch}: {err}")
                    print(notes[-1], flush=True)

    text = table(rows, device.type == "cuda")
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(header) + "\n\n" + text + "\n" + "".join(f"\n{n}" for n in notes))
        print(f"wrote {args.markdown}")
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args), "rows": rows, "notes": notes})


if __name__ == "__main__":
    main()
