"""Train a pack: K runs of one configuration but for their seed, learning rate and weight decay,
as one stacked model (stack.Stack), each the run it would be alone (member.Member).

The loop is Lightning's for one run, written out for K: per step, each member's batch gathered
on the device in its own order, augmented from its own generator, the stacked forward and
backward, each member's optimizer and schedule; its loss and learning rate logged every
trainer.log_every_n_steps steps, where a non-finite loss ends that member as diverged and the
others go on (the stack is rebuilt without it); at an epoch's end each member's training
metrics, validation (one pass for all: every member sees the same images), history row,
diagnostics and checkpoint; then the test split, the statistics evaluations, and each record.
SIGTERM (or a first Ctrl-C) stops at a step boundary with every member's checkpoint saved.
"""
from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.exceptions import SIGTERMException

from data.device import apply_crop_flip, draw_crop_flip

from .. import evaluation
from ..diagnostics import NormStats, flat, norm_layers
from ..module import Diverged, _add_sums
from . import member as mb
from .signals import StepBoundarySignals
from .stack import Stack


class Pack:
    """The members that still train, their stack, and the shared data."""

    def __init__(self, members: list, dm, device, autocast):
        self.dm, self.device, self.autocast = dm, device, autocast
        self.split = dm.device_split("train", device)
        self.members = members
        self.restack()

    def restack(self) -> None:
        """The stack of the members still training (rebuilt without one that diverged: each
        member's optimizer is rebuilt on its new parameters, its state carried over)."""
        self.alive = [m for m in self.members if m.alive]
        if len(self.alive) > 1:
            self.stack = Stack([m.net for m in self.alive])
            for m in self.alive:
                state = m.optimizer.state_dict()
                m.optimizer.param_groups.clear()
                m.optimizer.state.clear()
                for group, params in zip(state["param_groups"], _groups(m)):
                    m.optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": params})
                m.optimizer.load_state_dict(state)
        else:
            self.stack = None

    @property
    def info(self) -> dict:
        return {"size": len(self.members), "members": [m.run_dir.path.name for m in self.members]}

    def forward(self, x):
        """Logits of every alive member: x (K, B, ...) -> (K, B, classes); shared=True: (B, ...)."""
        with self.autocast():
            if self.stack is None:
                return self.alive[0].net(x[0]).unsqueeze(0)
            return self.stack(x)

    def train(self, mode: bool):
        for m in self.alive:
            m.net.train(mode)
        if self.stack is not None:
            self.stack.train(mode)

    def batch(self, epoch_orders: list, step: int, batch_size: int, augment: bool):
        """Each alive member's `step`-th batch of this epoch: one gather for all, then each
        member's augmentation draws from its own generator, normalization."""
        idx = torch.stack([order[step * batch_size:(step + 1) * batch_size] for order in epoch_orders])
        x, y = self.split.x[idx], self.split.y[idx]
        k, b = idx.shape
        x = x.flatten(0, 1).float().div_(255)
        dm = self.dm
        if augment and dm.augment:
            draws = [draw_crop_flip(b, dm.crop_padding, dm.hflip, x.device, m.rng) for m in self.alive]
            x = apply_crop_flip(x, dm.crop_padding, *(None if d[0] is None else torch.cat(d) for d in zip(*draws)))
        mean, std = dm._normalization(x.device)
        return ((x - mean) / std).view(k, b, *x.shape[1:]), y

    def evaluate(self, split: str) -> list[tuple[float, float]]:
        """(mean loss, accuracy) of every alive member on a split, in eval mode: one pass, every
        member on the same images."""
        self.train(False)
        sums = [None] * len(self.alive)
        with torch.no_grad(), self.autocast():
            for x, y in self.dm.batches(split, self.dm.eval_batch_size, self.device):
                logits = self.alive[0].net(x).unsqueeze(0) if self.stack is None else self.stack(x, shared=True)
                for i in range(len(self.alive)):
                    sums[i] = _add_sums(sums[i], F.cross_entropy(logits[i].float(), y, reduction="sum"), logits[i], y)
        out = []
        for s in sums:
            loss, correct, count = s.tolist()
            out.append((loss / max(count, 1), correct / max(count, 1)))
        return out


def backward(stack: Stack | None, nets: list, x, y, autocast=contextlib.nullcontext):
    """The forward and backward pass of a pack's step: (K, B, ...) images, (K, B) labels; each
    member's mean cross-entropy (K,) and logits. Each member's gradient lands in its own
    parameters' .grad (a pack of one: its network alone, as a solo run's step)."""
    if stack is None:  # exactly a solo run's step
        with autocast():
            logits = nets[0](x[0])
        loss = F.cross_entropy(logits, y[0])
        loss.backward()
        return loss.unsqueeze(0), logits.unsqueeze(0)
    with autocast():
        logits = stack(x)
    losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape).mean(1)
    losses.sum().backward()
    stack.take_grads()
    return losses, logits


def optimize(stack: Stack | None, optimizers: list, schedulers: list, keep_grads: bool = False, clips=None) -> None:
    """Each member's gradient clipping (`clips`, harness/agc.py; in place in its rows of the stacked
    gradient), optimizer step and learning-rate schedule step, then no gradient left (`keep_grads`:
    a CUDA graph's backward writes them anew at every replay, into the same memory)."""
    for opt, sched, clip in zip(optimizers, schedulers, clips or [None] * len(optimizers)):
        if clip is not None:
            clip()
        opt.step()
        sched.step()
        if not keep_grads:
            opt.zero_grad(set_to_none=True)
    if stack is not None and not keep_grads:
        stack.zero_grad()


def _groups(m) -> list[list]:
    """The member's parameters in the order of its optimizer's parameter groups."""
    from ..module import param_groups

    return [g["params"] for g in param_groups(m.net, m.cfg.optim.weight_decay_norm)]


def train(members: list, dm, device, precision: str) -> None:
    """Train the members (each inside its RunEnd) to their end; each one's record holds it."""
    cfg = members[0].cfg
    batch_size = int(cfg.data.batch_size)
    per_epoch, total = mb.steps(dm, batch_size, cfg.trainer.max_epochs, cfg.trainer.get("max_steps"))
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    autocast = (lambda: torch.autocast(torch.device(device).type, dtype=dtype)) if dtype else contextlib.nullcontext
    states = [mb.load(m) for m in members]
    for m, state in zip(members, states):
        m.net.to(device)
        mb.describe(m, precision, device)
        mb.setup(m, dm, device, per_epoch, total, state)
    step0 = states[0]["global_step"] if states[0] else 0
    data0 = states[0]["data"] if states[0] else {"epoch": 0, "samples_done": 0}
    if states[0] is not None:
        torch.set_rng_state(states[0]["torch_rng"])
    pack = Pack(members, dm, device, autocast)
    every, log_every = cfg.checkpoint.every_n_steps if cfg.checkpoint.enabled else None, int(cfg.trainer.log_every_n_steps)
    diag_every = int(cfg.diagnostics.every_n_steps)
    probe = _probe(members[0]) if cfg.diagnostics.enabled else None
    for m in members:  # each member's diagnostics hook the probe; its gradients are its own layers'
        m.norm_layers = norm_layers(m.net)
        m.stats = NormStats(norm_layers(probe), device) if probe is not None else None
    max_epochs = cfg.trainer.max_epochs if cfg.trainer.max_epochs and cfg.trainer.max_epochs > 0 else math.inf
    step, epoch, started = step0, data0["epoch"], time.perf_counter()
    graphs = _graphs(pack, cfg, batch_size)
    with StepBoundarySignals() as signals:
        while epoch < max_epochs and step < total and pack.alive:
            skip = data0["samples_done"] // batch_size if epoch == data0["epoch"] else 0
            orders = []
            for m in pack.alive:
                m.order.set_epoch(epoch)
                orders.append(torch.as_tensor(list(m.order), device=device))
                if skip == 0:
                    m.sums = torch.zeros(3, device=device)
            pack.train(True)
            t0, images = time.perf_counter(), 0
            for i in range(skip, per_epoch):
                if signals.stop:
                    _save_all(pack, epoch, step, i, time.perf_counter() - started)
                    raise SIGTERMException()
                measured = probe is not None and step % diag_every == 0
                if graphs is not None and not measured:  # the captured step, replayed
                    graph = graphs()
                    idx = torch.stack([o[i * batch_size:(i + 1) * batch_size] for o in orders])
                    draws = [draw_crop_flip(batch_size, dm.crop_padding, dm.hflip, device, m.rng) for m in pack.alive
                             ] if dm.augment else []
                    losses, logits = graph.run(idx, [None if d[0] is None else torch.cat(d) for d in zip(*draws)])
                    y = pack.split.y[idx]
                else:
                    x, y = pack.batch(orders, i, batch_size, augment=True)
                    if measured:  # each member's batch of this step through the probe, before the step
                        for k, m in enumerate(pack.alive):
                            _measure(m, probe, x[k])
                    losses, logits = backward(pack.stack, [m.net for m in pack.alive], x, y, pack.autocast)
                with torch.no_grad():
                    for k, m in enumerate(pack.alive):
                        m.sums = _add_sums(m.sums, losses[k].detach() * batch_size, logits[k], y[k])
                if measured:
                    for m in pack.alive:
                        m.stats.grad_norms(m.norm_layers)
                if (step + 1) % log_every == 0:
                    _log_steps(pack, losses, step, epoch)
                optimize(pack.stack, [m.optimizer for m in pack.alive], [m.scheduler for m in pack.alive],
                         keep_grads=graphs is not None and not measured, clips=[m.clip for m in pack.alive])
                step, images = step + 1, images + batch_size
                if every and step % every == 0 and i + 1 < per_epoch:
                    _save_all(pack, epoch, step, i + 1, time.perf_counter() - started)
                if step >= total:
                    break
            _end_epoch(pack, epoch, step, images / max(time.perf_counter() - t0, 1e-9), time.perf_counter() - started)
            epoch += 1
        seconds = time.perf_counter() - started
        _test(pack, epoch, step, seconds)


def _graphs(pack: Pack, cfg, batch_size: int):
    """perf.cuda_graphs=true: a function giving the pack's captured step (captured again after a
    member leaves the stack), or None; each member's record says whether its step was captured."""
    from .graph import GraphStep, why_not

    if not cfg.perf.get("cuda_graphs"):
        return None
    why = why_not(pack.members)
    for m in pack.members:
        m.record.what.cuda_graphs = why is None
    if why is not None:
        print(f"note: perf.cuda_graphs: the step is not captured ({why}); it runs eagerly", flush=True)
        return None
    captured = {}

    def graph() -> GraphStep:
        key = tuple(id(m) for m in pack.alive)
        if key not in captured:
            captured.clear()
            captured[key] = GraphStep(pack, batch_size, augment=True)
        return captured[key]
    return graph


def _log_steps(pack: Pack, losses, step: int, epoch: int) -> None:
    values = losses.tolist()  # the one read of the step's losses
    for m, loss in zip(list(pack.alive), values):
        if not math.isfinite(loss):
            _diverge(pack, m, f"training loss is {loss} at step {step}", step)
            continue
        mb.log(m, {"train/loss_step": loss, "train/lr": m.optimizer.param_groups[0]["lr"], "epoch": epoch + 1}, step)


def _diverge(pack: Pack, m, error: str, step: int) -> None:
    """A member whose loss is not finite ends as diverged (a finding); the others go on."""
    m.alive = False
    m.end.close(Diverged(error), step=step, history=list(m.history))
    print(f"{m.name}: diverged ({error}); the pack goes on without it", flush=True)
    pack.restack()


def _end_epoch(pack: Pack, epoch: int, step: int, ips: float, seconds: float) -> None:
    """Each member's epoch: training metrics, validation, diagnostics, the epoch line, the checkpoint."""
    for m in list(pack.alive):
        loss, correct, count = m.sums.tolist()
        row = {"epoch": epoch + 1, "train/loss": loss / max(count, 1), "train/acc": correct / max(count, 1),
               "images_per_second": ips}
        m.history = [r for r in m.history if r["epoch"] != epoch + 1] + [row]
        if not math.isfinite(row["train/loss"]):
            _diverge(pack, m, f"mean training loss of epoch {epoch + 1} is {row['train/loss']}", step)
            continue
        mb.log(m, {"train/loss_epoch": row["train/loss"], "train/acc": row["train/acc"],
                   "train/images_per_second": ips, "epoch": epoch + 1}, step - 1)
    if not pack.alive:
        return
    every_val = pack.members[0].cfg.trainer.get("check_val_every_n_epoch") or 1
    if (epoch + 1) % every_val == 0:
        for m, (loss, acc) in zip(pack.alive, pack.evaluate("val")):
            m.history[-1].update({"val/loss": loss, "val/acc": acc})
            mb.log(m, {"val/loss": loss, "val/acc": acc, "epoch": epoch + 1}, step - 1)
    for m in pack.alive:
        row = m.history[-1]
        if m.stats is not None:
            means = m.stats.epoch_means()
            m.stats.reset(m.sums.device)
            row["norm_diagnostics"] = means
            if means:
                mb.log(m, {**flat(means), "epoch": epoch + 1}, step)
        nan = float("nan")
        print(f"{m.name} epoch {epoch + 1}/{m.cfg.trainer.max_epochs}: train loss {row['train/loss']:.4f} acc "
              f"{row['train/acc']:.2%} | val loss {row.get('val/loss', nan):.4f} acc {row.get('val/acc', nan):.2%} | "
              f"{ips:.0f} img/s", flush=True)
    _save_all(pack, epoch + 1, step, 0, seconds)


def _test(pack: Pack, epoch: int, step: int, seconds: float) -> None:
    """The test split, the statistics evaluations and each member's results: completed."""
    if not pack.alive:
        return
    for m, (loss, acc) in zip(pack.alive, pack.evaluate("test")):
        mb.log(m, {"test/acc": acc, "test/loss": loss, "epoch": epoch}, step)
        for logger in (m.csv, *m.wandb.loggers):
            logger.save()
        res = m.record.results
        res.train_seconds = m.fit_seconds + seconds
        res.fill(m.history, {"test/acc": acc, "test/loss": loss})
        evaluation.record_statistics(res, m.cfg, m.net, pack.dm, 1, m.run_dir.path)
        m.record.pack = pack.info if len(pack.members) > 1 else None
        m.record.status = "completed"
        m.wandb.results(m.record)


def _save_all(pack: Pack, epoch: int, step: int, batches_done: int, seconds: float) -> None:
    if not pack.members[0].cfg.checkpoint.enabled:
        return
    for m in pack.alive:
        mb.save(m, epoch, step, batches_done * int(m.cfg.data.batch_size), seconds, pack.info)


def _probe(m):
    """A network of the members' architecture that the diagnostics hook: each measured member's
    state is copied into it, so measuring never touches a member's own running statistics."""
    import copy

    probe = copy.deepcopy(m.net)
    for p in probe.parameters():
        p.requires_grad_(False)
    return probe


def _measure(m, probe, x) -> None:
    probe.load_state_dict(m.net.state_dict())
    probe.train(True)
    with torch.no_grad():
        m.stats.start()
        probe(x)
        m.stats.stop()
