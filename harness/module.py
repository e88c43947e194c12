"""The LightningModule: cross-entropy classification, exact epoch and split metrics.

The learning-rate schedule and the weight-decay parameter groups are pure functions
(`warmup_cosine`, `param_groups`), testable and reusable without a Trainer.
"""
from __future__ import annotations

import math
import time

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

import norms

from . import agc


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The learning-rate factor at optimizer step `step` (from 0): linear warmup over `warmup`
    steps, then cosine decay to zero at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def warmup_step_decay(step: int, warmup: int, milestones: list[int], gamma: float) -> float:
    """The learning-rate factor at optimizer step `step`: linear warmup over `warmup` steps,
    then multiplied by `gamma` at each milestone step passed (the GN paper's ImageNet schedule:
    x0.1 at epochs 30, 60 and 90)."""
    if step < warmup:
        return (step + 1) / warmup
    return gamma ** sum(step >= m for m in milestones)


def warmup_steps(warmup_epochs: float, steps_per_epoch: float, total_steps: int) -> tuple[int, str | None]:
    """Warmup epochs as optimizer steps, and why they were capped (None if not).

    Counted in the run's real optimizer steps per epoch, so a step budget (trainer.max_steps,
    max_epochs=-1) warms up as long as an epoch budget would. A warmup as long as the whole run
    would reach the learning rate only at its last step: it is capped to a tenth of the run."""
    warmup = int(warmup_epochs * steps_per_epoch)
    if warmup > 0 and warmup >= total_steps:
        capped = max(1, total_steps // 10)
        return capped, (f"optim.warmup_epochs={warmup_epochs} is {warmup} steps, the whole {total_steps}-step run: "
                        f"warming up over its first {capped} steps (a tenth) instead")
    return warmup, None


def param_groups(net: torch.nn.Module, weight_decay_norm: bool) -> list[dict]:
    """[decayed, not decayed]: without `weight_decay_norm`, norm gamma/beta and biases are not
    decayed (the GN paper decays every weight: weight_decay_norm=true). The parameters a model
    names in `no_weight_decay()` (the ViT's position embedding and class token, as in timm)
    are never decayed."""
    never = net.no_weight_decay() if hasattr(net, "no_weight_decay") else set()
    decay, no_decay = [], []
    for module_name, module in net.named_modules():
        is_norm = norms.kind_of(module) is not None
        for name, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            skip = full in never or (not weight_decay_norm and (is_norm or name == "bias"))
            (no_decay if skip else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer(net: torch.nn.Module, optim: DictConfig, lr: float) -> torch.optim.Optimizer:
    """optim.optimizer over the network's parameter groups (`param_groups`), at `lr`."""
    return hydra.utils.instantiate(optim.optimizer)(param_groups(net, optim.weight_decay_norm), lr=lr)


def lr_factor(optim: DictConfig, steps_per_epoch: int, total_steps: int):
    """The learning-rate factor of optimizer step t, as a function, and why the warmup was capped
    (None if it was not): warmup, then cosine decay to zero or optim.schedule=step's drops."""
    warmup, capped = warmup_steps(optim.warmup_epochs, steps_per_epoch, total_steps)
    if optim.get("schedule", "cosine") == "step":
        milestones = [round(e * steps_per_epoch) for e in optim.milestones]
        return (lambda step: warmup_step_decay(step, warmup, milestones, optim.step_gamma)), capped
    return (lambda step: warmup_cosine(step, warmup, total_steps)), capped


def _add_sums(total, loss_sum, logits, y):
    """total + (loss sum, correct, count) of a batch, all on the device. new_full fills on the
    device; torch.tensor(n, device="cuda") would be a blocking host-to-device copy."""
    loss_sum = loss_sum.float()
    sums = torch.stack([loss_sum, (logits.argmax(1) == y).sum().float(), loss_sum.new_full((), float(len(y)))])
    return sums if total is None else total + sums


class Classifier(pl.LightningModule):
    """Cross-entropy classification with SGD/AdamW and a warmup + cosine schedule.

    The module owns its history: one row per epoch ({"epoch": 1-based, "val/loss", "val/acc",
    "train/loss", "train/acc", "images_per_second"}), filled by validation and by the end of the
    training epoch in whichever order they come; an epoch without validation has no val/* keys.
    Throughput is training images per second of the epoch's training steps (validation
    excluded), measured here too, so a Classifier records its training metrics whatever
    callbacks print them.
    """

    def __init__(self, net: torch.nn.Module, optim: DictConfig, lr: float, channels_last: bool = False,
                 compile: bool = False, identity: str | None = None):
        super().__init__()
        self.net, self.optim_cfg, self.lr = net, optim, lr
        self._clip = agc.clipper(net, optim.get("agc_clip"))  # optim.agc_clip: adaptive gradient clipping
        self.identity = identity  # written into checkpoints, so a resume can check whose they are
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Compiled forward, kept out of the module tree so checkpoints hold the plain net's keys
        # (a compiled and a plain run resume from each other's checkpoints).
        object.__setattr__(self, "net_forward", torch.compile(self.net) if compile else self.net)
        self.history: list[dict] = []  # kept in checkpoints
        self.fit_seconds = 0.0  # time spent in fit by earlier attempts of this run
        self._eval = None  # (loss sum, correct, count) of the split being evaluated, on the device
        self._train = None  # the same for the training epoch so far
        self._show_progress = False
        self._logged_step = None
        self._images, self._t0, self._finished = 0, time.perf_counter(), None  # this epoch's

    def forward(self, x):
        # Images are made on the device in float32 (data.base: augmentation after the transfer);
        # a network Lightning converted (trainer.precision=64, 16-true, bf16-true) takes its own dtype.
        if x.is_floating_point() and x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net_forward(x)

    def epoch_number(self) -> int:
        """The epoch as the console, summary.json, the CSV log and W&B count it: from 1. In
        training and validation the epoch under way; in testing after fit, the last one."""
        return self.current_epoch if self.trainer.testing else self.current_epoch + 1

    def epoch_row(self) -> dict:
        """The history row of the current epoch, created on first use."""
        epoch = self.current_epoch + 1
        if not self.history or self.history[-1]["epoch"] != epoch:
            self.history.append({"epoch": epoch})
        return self.history[-1]

    # Per-step bookkeeping stays on the device: the epoch's loss and accuracy are sums added to
    # on the device and read once per epoch (finish_train_epoch); the step curve is read and
    # written to the loggers every trainer.log_every_n_steps steps. Lightning's self.log costs
    # about 1 ms of Python per call (it moves its whole result collection to the value's
    # device each time), which at batch 2 on a CPU is a large share of a step.
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            self._train = _add_sums(self._train, loss.detach() * len(y), logits, y)
        self._images += len(y)
        step = self.global_step
        if (step + 1) % self.trainer.log_every_n_steps == 0 and step != self._logged_step:  # Lightning's logging steps
            self._logged_step = step  # once per optimizer step, with gradient accumulation too
            self._log_step(loss)
        if self._show_progress:
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def _log_step(self, loss):
        # Every DDP process takes the same decision, so none is left waiting for the others.
        if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False):
            raise Diverged(f"training loss is {loss.item()} at step {self.global_step}")
        metrics = {"train/loss_step": loss.item(), "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                   "epoch": self.epoch_number()}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def on_train_start(self):
        bar = self.trainer.progress_bar_callback
        self._show_progress = bar is not None and bar.is_enabled
        # Resumed mid-epoch (Lightning does not start that epoch again): its training sums so far
        resumed, self._resumed_sums = getattr(self, "_resumed_sums", None), None
        if resumed is not None and resumed[0] == self.current_epoch:
            rows = resumed[1]
            mine = (rows[self.global_rank] if len(rows) == self.trainer.world_size
                    else rows.sum(0) if self.global_rank == 0 else torch.zeros_like(rows[0]))
            self._train = mine.to(self.device)

    def on_train_epoch_start(self):
        self._train, self._images, self._t0 = None, 0, time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # The epoch's training metrics are closed at its last step, before the callbacks' epoch
        # end (the epoch line, the checkpoint) read them.
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._finish_epoch()

    def on_train_epoch_end(self):
        if self._finished != self.current_epoch:  # an epoch cut short (trainer.max_steps)
            self._finish_epoch()

    def _finish_epoch(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = max(time.perf_counter() - self._t0, 1e-9)
        train = self.finish_train_epoch(self._images * self.trainer.world_size / seconds)  # each process trains as many
        self._finished = self.current_epoch
        if not math.isfinite(train["train/loss_epoch"]):
            raise Diverged(f"mean training loss of epoch {self.current_epoch + 1} is {train['train/loss_epoch']}")

    def _means(self, sums, loss_key: str, acc_key: str) -> dict:
        """Mean loss and accuracy from (loss sum, correct, count) summed over every process, logged;
        the one host-device sync of an epoch or split."""
        sums = sums if sums is not None else torch.zeros(3, device=self.device)
        loss, correct, count = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        result = {loss_key: loss / max(count, 1), acc_key: correct / max(count, 1)}
        # on_epoch: logged once at the end of the epoch or split, whichever hook this is called from
        self.log_dict({**result, "epoch": float(self.epoch_number())}, on_step=False, on_epoch=True)
        return result

    def finish_train_epoch(self, images_per_second: float) -> dict:
        """The epoch's mean training loss and accuracy over every process, into its history row."""
        result = self._means(self._train, "train/loss_epoch", "train/acc")
        self.log_dict({"train/images_per_second": images_per_second, "epoch": float(self.epoch_number())},
                      on_step=False, on_epoch=True)
        self.epoch_row().update({"train/loss": result["train/loss_epoch"], "train/acc": result["train/acc"],
                                 "images_per_second": images_per_second})
        return result

    # Evaluation sums exact counts over the whole split (over every DDP process) rather than
    # averaging batch means; the sums stay on the device until the end of the split.
    def _eval_step(self, batch):
        x, y = batch
        logits = self(x)
        self._eval = _add_sums(self._eval, F.cross_entropy(logits, y, reduction="sum"), logits, y)

    def _eval_end(self, split: str) -> dict:
        sums, self._eval = self._eval, None
        return self._means(sums, f"{split}/loss", f"{split}/acc")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        result = self._eval_end("val")
        if not self.trainer.sanity_checking:
            self.epoch_row().update(result)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end("test")

    def on_save_checkpoint(self, checkpoint):
        # The epoch's training sums so far, every process's (a collective: every process saves),
        # so a run resumed mid-epoch reports that epoch's loss and accuracy over all its steps.
        sums = self._train if self._train is not None else torch.zeros(3, device=self.device)
        rows = self.all_gather(sums).reshape(-1, 3).cpu()
        checkpoint["normlab"] = {"history": self.history, "fit_seconds": self.fit_seconds + self.fit_elapsed(),
                                 "identity": self.identity, "train_sums": (self.current_epoch, rows)}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("normlab", {})
        self.history, self.fit_seconds = list(state.get("history", [])), state.get("fit_seconds", 0.0)
        self._resumed_sums = state.get("train_sums")

    def on_fit_start(self):
        self._fit_t0 = self._t0 = time.perf_counter()  # a run resumed mid-epoch counts from here

    def fit_elapsed(self) -> float:
        """Seconds in fit in this process (earlier attempts of the run: `fit_seconds`)."""
        return time.perf_counter() - getattr(self, "_fit_t0", time.perf_counter())

    def on_before_optimizer_step(self, optimizer):
        # After the backward pass (and AMP's unscaling, and accumulation), before the step.
        if self._clip is not None:
            self._clip()

    def configure_optimizers(self):
        opt = optimizer(self.net, self.optim_cfg, self.lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)  # also sets num_training_batches
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches):  # a step budget (max_epochs=-1): Lightning has not counted them
            batches = len(self.trainer.datamodule.train_dataloader()) // self.trainer.world_size
        factor, capped = lr_factor(self.optim_cfg, math.ceil(batches / self.trainer.accumulate_grad_batches), total)
        if capped and self.trainer.is_global_zero:
            print(capped, flush=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
