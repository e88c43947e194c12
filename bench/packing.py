"""What packing pays: member steps per second of K runs trained as one stacked model
(harness/packed) against the same runs one at a time, by batch size.

For the quick study's network (ResNet-8 of width 16, Fashion-MNIST's 1x28x28 images held on the
device) and a norm, each (batch, K) times the pack's own training step: the batch gathered on the
device for each member (harness.packed.loop.Pack.batch), the stacked forward and backward
(loop.backward), each member's SGD step and schedule (loop.optimize); with --cuda-graphs the
captured step instead (harness/packed/graph.py). K = 1 is a run alone (its network called
directly, no vmap). The figure that decides is member steps per second: K x steps/s of the pack.

    python -m bench.packing --batch-sizes 2,8,32 --members 1,3,9 --norms bn,gn --threads 1
    python -m bench.packing --device cuda --batch-sizes 2,8,32,128 --members 1,3,9 --cuda-graphs
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from harness import build
from harness.packed.graph import GraphStep
from harness.packed.loop import Pack, backward, optimize
from harness.packed.member import build_net

from .common import compose, describe, int_list, machine, markdown_table, resolve_device, str_list, sync, write_json


class _Member:
    """What the pack's loop reads of a member, for timing: config, network, optimizer, generator."""

    def __init__(self, cfg, dm, device):
        self.cfg, self.alive = cfg, True
        self.net = build_net(cfg, dm).to(device).train()
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.rng = torch.Generator(device=device).manual_seed(int(cfg.seed))


def timing_pack(norm: str, batch: int, k: int, device, overrides: list[str]):
    """A pack of k quick-study members (seeds 0..k-1) at a constant learning rate, with one
    random order each: (pack, members, schedulers, orders)."""
    cfgs = [compose(["experiment=quick", f"norm={norm}", f"data.batch_size={batch}", f"seed={s}", *overrides])
            for s in range(k)]
    dm = build.data(cfgs[0])
    members = [_Member(c, dm, device) for c in cfgs]
    pack = Pack(members, dm, device, autocast=lambda: torch.autocast(device.type, enabled=False))
    scheds = [torch.optim.lr_scheduler.LambdaLR(m.optimizer, lambda s: 1.0) for m in members]
    orders = [torch.randperm(len(pack.split), device=device) for _ in members]
    return pack, members, scheds, orders


def member_steps_per_s(norm: str, batch: int, k: int, device, steps: int, warmup: int, graphs: bool,
                       overrides: list[str]) -> float:
    pack, members, scheds, orders = timing_pack(norm, batch, k, device, overrides)
    per_epoch = len(pack.split) // batch
    graph = GraphStep(pack, batch, augment=False) if graphs else None
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        j = i % per_epoch
        if graph is not None:
            graph.run(torch.stack([o[j * batch:(j + 1) * batch] for o in orders]), [])
        else:
            x, y = pack.batch(orders, j, batch, augment=True)
            backward(pack.stack, [m.net for m in members], x, y)
        optimize(pack.stack, [m.optimizer for m in members], scheds, keep_grads=graph is not None)
    sync(device)
    return k * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int_list, default=[2, 8, 32])
    p.add_argument("--members", type=int_list, default=[1, 3, 9])
    p.add_argument("--norms", type=str_list, default=["bn", "gn"])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--cuda-graphs", action="store_true", help="also time the captured step (GPU only)")
    p.add_argument("--model", default=None, help="model= override (default: the quick study's resnet8 of width 16)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    overrides = [f"model={args.model}"] if args.model else []
    info = machine(device)
    print(describe(info), flush=True)
    headers = ["norm", "batch", "K", "graphs", "member steps/s", "range", "vs K=1"]
    rows, out = [], []
    for norm in args.norms:
        for batch in args.batch_sizes:
            for graphs in ([False, True] if args.cuda_graphs and device.type == "cuda" else [False]):
                base = None
                for k in args.members:
                    runs = [member_steps_per_s(norm, batch, k, device, args.steps, args.warmup, graphs, overrides)
                            for _ in range(args.repeats)]
                    rate = statistics.median(runs)
                    base = base or rate
                    out.append({"norm": norm, "batch": batch, "members": k, "graphs": graphs,
                                "member_steps_per_s": rate, "runs": runs, "vs_alone": rate / base})
                    rows.append([norm, batch, k, "on" if graphs else "off", f"{rate:.1f}",
                                 f"{min(runs):.1f}–{max(runs):.1f}", f"{rate / base:.2f}"])
                    print(markdown_table(headers, rows[-1:]), flush=True)
    print(markdown_table(headers, rows))
    if args.out:
        write_json(args.out, {"machine": info, "args": vars(args), "results": out})


if __name__ == "__main__":
    main()
