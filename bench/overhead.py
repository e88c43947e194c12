#!/usr/bin/env python
"""Framework overhead: the same model, data and optimizer trained for the same number of steps
by PyTorch Lightning (the harness's own Classifier, callbacks and Trainer) and by a hand-written
PyTorch loop, and the steps/s of each.

    .venv/bin/python -m bench.overhead --batch-sizes 2,8 --norms bn
    .venv/bin/python -m bench.overhead --data synthetic --steps 50 --warmup 5 --repeats 1
    .venv/bin/python -m bench.overhead --device cuda --profile --json bench/overhead.json

Both paths iterate the same DataLoader (dm.train_dataloader()), run the DataModule's own
on-device preprocessing (uint8 -> float, random crop + flip, normalization), and step the
optimizer (harness.module.param_groups) and warmup + cosine schedule (harness.module.warmup_cosine)
that Classifier.configure_optimizers uses, from the same seed. Only
the steps after --warmup are timed, from the start of step `warmup` (its batch already on the
device) to the end of the last step; runs that span several epochs include the cost of
re-entering the loader at each epoch boundary in both paths (and Lightning's epoch-end hooks).
The two paths alternate --repeats times and the median steps/s of each is reported.

The Lightning step is Classifier.training_step as train.py runs it, so it also adds the
batch's loss and accuracy to the epoch's device-side sums, and every trainer.log_every_n_steps
checks the loss is finite and writes the step curve: the overhead measured is that of the
framework as NormLab uses it.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.profilers import SimpleProfiler

import data as datasets
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
from harness import build
from harness.callbacks import EpochReport, StopOnSignal
from harness.module import Classifier, param_groups, warmup_cosine, warmup_steps

SEED = 0

# Lightning's start-up chatter and its advice for tiny runs (few workers, logging interval
# longer than an epoch) are not what is measured here.
logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")


def config(args, norm: str, batch: int, device: torch.device):
    overrides = [f"model={args.model}", f"norm={norm}", f"data={args.data}", f"data.batch_size={batch}",
                 f"seed={SEED}",
                 "trainer.max_epochs=-1",  # max_steps ends the run; -1 is Lightning's "no epoch limit"
                 # fp32 in both paths (train.py's `auto` would pick bf16-mixed on a GPU)
                 "trainer.precision=32-true",
                 f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}"]
    if args.data == "fashion_mnist":
        overrides.append("data.val_size=1000")  # a larger training split: fewer epoch boundaries
    cfg = compose(overrides)
    if "width" in cfg.model:  # CIFAR ResNets; the ViT has no width
        cfg.model.width = args.width
    return cfg


def learning_rate(cfg) -> float:
    """train.py's rule, on one device without accumulation: the optimisation batch is the batch."""
    return build.scaled_lr(cfg.optim, cfg.data.batch_size)


def build_net(cfg, dm) -> torch.nn.Module:
    pl.seed_everything(SEED, workers=True, verbose=False)  # as train.run: same init in both paths
    return models.build(plain(cfg.model), plain(cfg.norm), dm.in_channels, dm.num_classes, dm.image_size)


# ---------------------------------------------------------------------------------------
# (a) Lightning, as train.py runs it
# ---------------------------------------------------------------------------------------
class StepTimer(pl.Callback):
    """Times the steps after warmup: from the start of step `warmup` (its batch already
    fetched, on the device and augmented) to the end of the last step, as the raw loop does."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.last, self.t0, self.t1 = warmup, warmup + steps, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup and self.t0 is None:
            sync(pl_module.device)
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.last:
            sync(pl_module.device)
            self.t1 = time.perf_counter()


def lightning_run(cfg, dm, args, profiler=None) -> tuple[float, float]:
    """Steps/s of the Lightning path, and the learning rate it ended at."""
    module = Classifier(build_net(cfg, dm), cfg.optim, learning_rate(cfg))
    timer = StepTimer(args.warmup, args.steps)
    # train.py's callbacks, less LastCheckpoint: it writes checkpoints to disk (I/O, not framework
    # overhead; on a small data set's short epochs it would write one every few steps). Its
    # loggers (CSV, W&B: files and a W&B process) and the progress bar are off for the same
    # reason. The timer goes last, so the timed window holds the other callbacks' batch-end work.
    callbacks = [EpochReport(), StopOnSignal(), timer]
    # EpochReport prints a line per epoch; short epochs would flood the table.
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        trainer = build.trainer(
            cfg, Path(out), [], callbacks, max_steps=args.warmup + args.steps, limit_val_batches=0,
            num_sanity_val_steps=0, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, profiler=profiler)
        trainer.fit(module, datamodule=dm)
    return args.steps / (timer.t1 - timer.t0), trainer.optimizers[0].param_groups[0]["lr"]


# ---------------------------------------------------------------------------------------
# (b) A hand-written loop doing the same work
# ---------------------------------------------------------------------------------------
def raw_run(cfg, dm, device, args) -> tuple[float, float]:
    """Steps/s of the hand-written loop, and the learning rate it ended at."""
    net = build_net(cfg, dm).to(device).train()
    total = args.warmup + args.steps
    # Trainer(max_steps=total, max_epochs=-1) gives Classifier.configure_optimizers these values
    optimizer = hydra.utils.instantiate(cfg.optim.optimizer)(param_groups(net, cfg.optim.weight_decay_norm),
                                                             lr=learning_rate(cfg))
    warmup, _ = warmup_steps(cfg.optim.warmup_epochs, len(dm.train_dataloader()), total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup, total))
    loader = dm.train_dataloader()
    step = 0
    while True:  # a fresh pass over the loader at each epoch boundary, as Lightning makes
        for x, y in loader:
            x, y = dm.preprocess((x.to(device, non_blocking=True), y.to(device, non_blocking=True)), train=True)
            if step == args.warmup:
                sync(device)
                t0 = time.perf_counter()
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)  # where Lightning's closure zeroes: before backward
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step == total:
                sync(device)
                return args.steps / (time.perf_counter() - t0), optimizer.param_groups[0]["lr"]


# ---------------------------------------------------------------------------------------
def measure(cfg, dm, device, args) -> dict:
    light, raw = [], []
    for _ in range(args.repeats):  # alternating, so a change in machine load hits both paths
        light.append(lightning_run(cfg, dm, args))
        raw.append(raw_run(cfg, dm, device, args))
    l_sps, r_sps = statistics.median(s for s, _ in light), statistics.median(s for s, _ in raw)
    if abs(light[-1][1] - raw[-1][1]) > 1e-12 * max(abs(raw[-1][1]), 1.0):
        print(f"warning: the paths ended at different learning rates ({light[-1][1]} vs {raw[-1][1]})")
    batch = cfg.data.batch_size
    return {"norm": cfg.norm.kind, "batch": batch, "model": cfg.model.name, "width": cfg.model.get("width"),
            "data": cfg.data.name, "device": str(device), "steps": args.steps, "warmup": args.warmup,
            "epochs": (args.warmup + args.steps) / len(dm.train_dataloader()),
            "lightning_steps_per_s": l_sps, "raw_steps_per_s": r_sps, "ratio": l_sps / r_sps,
            "overhead_pct": 100 * (r_sps / l_sps - 1),
            "lightning_images_per_s": l_sps * batch, "raw_images_per_s": r_sps * batch,
            "lightning_repeats": [s for s, _ in light], "raw_repeats": [s for s, _ in raw]}


def profile(cfg, dm, args, row: dict, top: int = 15) -> None:
    """One more Lightning run under SimpleProfiler: where a step's time goes, hook by hook."""
    profiler = SimpleProfiler()
    lightning_run(cfg, dm, args, profiler=profiler)
    total_steps = args.warmup + args.steps
    durations = sorted(profiler.recorded_durations.items(), key=lambda kv: -sum(kv[1]))[:top]
    print(f"\nSimpleProfiler, norm={row['norm']} batch={row['batch']}, all {total_steps} steps (warmup included). "
          f"Actions nest (run_training_batch holds training_step, backward, optimizer_step, ...).")
    print(f"unprofiled: Lightning {1e3 / row['lightning_steps_per_s']:.3f} ms/step, "
          f"raw loop {1e3 / row['raw_steps_per_s']:.3f} ms/step")
    print(markdown_table(["action", "calls", "mean ms", "total s", "ms per step"],
                         [[name, len(d), f"{1e3 * statistics.fmean(d):.3f}", f"{sum(d):.3f}",
                           f"{1e3 * sum(d) / total_steps:.3f}"] for name, d in durations]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int_list, default=[2, 8, 32, 128])
    p.add_argument("--norms", type=str_list, default=["bn", "gn"])
    p.add_argument("--steps", type=int, default=200, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=3, help="runs of each path; the median is reported")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--width", type=int, default=8, help="model.width, for the CIFAR ResNets")
    p.add_argument("--data", choices=["fashion_mnist", "synthetic"], default="fashion_mnist")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--profile", action="store_true", help="also profile one Lightning run (first norm, smallest batch)")
    p.add_argument("--json", metavar="PATH", help="write the rows (and the machine) as JSON")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be at least 1, --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    info = {**machine(device), "pytorch_lightning": pl.__version__}
    print(describe(info))
    print(f"{args.model} (width {args.width}) on {args.data}, {args.steps} timed steps after {args.warmup}, "
          f"median of {args.repeats}, fp32", flush=True)

    rows, profiled = [], None
    for norm in args.norms:
        for batch in args.batch_sizes:
            cfg = config(args, norm, batch, device)
            try:
                dm = datasets.build(plain(cfg.data))
                dm.setup()
                row = measure(cfg, dm, device, args)
            except ValueError as err:  # e.g. gn groups that do not divide a width, bn at batch 1
                print(f"skipped norm={norm} batch={batch}: {err}", flush=True)
                continue
            rows.append(row)
            print(f"  {norm} batch {batch}: Lightning {row['lightning_steps_per_s']:.1f} steps/s, "
                  f"raw {row['raw_steps_per_s']:.1f} steps/s ({row['epochs']:.3g} epochs per run)", flush=True)
            if args.profile and profiled is None and batch == min(args.batch_sizes):
                profiled = (cfg, dm, row)

    print()
    print(markdown_table(
        ["norm", "batch", "lightning steps/s", "raw steps/s", "ratio", "overhead %", "lightning img/s", "raw img/s"],
        [[r["norm"], r["batch"], f"{r['lightning_steps_per_s']:.1f}", f"{r['raw_steps_per_s']:.1f}",
          f"{r['ratio']:.3f}", f"{r['overhead_pct']:+.1f}", f"{r['lightning_images_per_s']:.0f}",
          f"{r['raw_images_per_s']:.0f}"] for r in rows]))
    print("ratio: Lightning / raw steps/s. overhead: the extra time per step Lightning takes, % of the raw loop's.")
    if profiled:
        profile(*profiled[:2], args, profiled[2])
    if args.json:
        write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
