"""Lightning callbacks of every run: the epoch line and throughput, checkpoints, signals."""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException



class EpochReport(pl.Callback):
    """One line per epoch from the module's history row (its training metrics, validation and
    throughput; absent values print as nan)."""

    def on_train_epoch_end(self, trainer, pl_module):
        row = pl_module.epoch_row()
        if trainer.is_global_zero:
            nan = float("nan")
            print(
                f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
                f"train loss {row.get('train/loss', nan):.4f} acc {row.get('train/acc', nan):.2%} | "
                f"val loss {row.get('val/loss', nan):.4f} acc {row.get('val/acc', nan):.2%} | "
                f"{row.get('images_per_second', nan):.0f} img/s",
                flush=True,
            )


class LastCheckpoint(pl.Callback):
    """Writes checkpoints/last.ckpt at the end of every epoch and every `every_n_steps` steps.

    Written to a temporary file and renamed, so a crash never leaves a half-written checkpoint
    that a relaunch would trust. Loggers are flushed first, so the CSV log on disk is never
    behind the checkpoint a resumed run starts from.
    """

    def __init__(self, path: Path, every_n_steps: int | None):
        self.path, self.every_n_steps = Path(path), every_n_steps

    def save(self, trainer):
        for logger in trainer.loggers:
            logger.save()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            trainer.save_checkpoint(tmp, weights_only=False)  # the full state, to resume from
        except OSError as err:  # a full disk, a quota: the temporary file goes, the last checkpoint stays
            tmp.unlink(missing_ok=True)
            kept = f"; the last checkpoint, {self.path}, is intact" if self.path.is_file() else ""
            raise OSError(err.errno, f"cannot write a checkpoint in {self.path.parent} "
                                     f"({err.strerror or err}){kept}") from None
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last_of_epoch = batch_idx + 1 == trainer.num_training_batches  # saved at epoch end instead
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not last_of_epoch:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.save(trainer)

    def on_exception(self, trainer, pl_module, exception):
        # SIGTERM (and a first Ctrl-C, see StopOnSignal) stop at a step boundary: save there.
        if isinstance(exception, SIGTERMException):
            self.save(trainer)
            print(f"checkpoint saved at step {trainer.global_step}: {self.path}", flush=True)


class RngState(pl.Callback):
    """Carries torch's global random generators (CPU and CUDA) and Python's in the checkpoint,
    and puts them back when a resumed run starts training, so the batch augmentation (and
    dropout) draw what the uninterrupted run drew. The data order has its own generators
    (data.base.EpochSampler)."""

    KEY = "normlab_rng"

    def __init__(self):
        self._loaded = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint[self.KEY] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                                "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
                                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._loaded = checkpoint.get(self.KEY)

    def on_train_start(self, trainer, pl_module):
        # After the sanity check and the model's set-up, right before the first resumed batch.
        state, self._loaded = self._loaded, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def parse_duration(value) -> timedelta:
    """trainer.max_time as Lightning takes it: "DD:HH:MM:SS", a dict of timedelta's arguments
    ({"hours": 2}), or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, dict):
        return timedelta(**value)
    days, hours, minutes, seconds = (int(part) for part in str(value).split(":"))
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


class StopAtLimit(pl.Callback):
    """trainer.max_time, and trainer.max_steps under an epoch budget, are limits, not budgets:
    the run stops at a step boundary as it does for SIGTERM (Lightning's own path, so the
    checkpoint it saves resumes bit-exactly), and its record says `stopped` (harness/outcome.py),
    never `completed`. Lightning's Timer and max_steps would instead end the epoch early and
    let the run look complete. max_time counts from this process's start of training."""

    def __init__(self, max_steps: int | None, max_time: timedelta | None):
        self.max_steps, self.max_time = max_steps, max_time
        self.reason = None  # set when a limit stopped the run

    def on_fit_start(self, trainer, pl_module):
        self._t0 = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.max_steps is not None and trainer.global_step >= self.max_steps:
            self.reason = f"trainer.max_steps={self.max_steps}"
        elif self.max_time is not None and time.monotonic() - self._t0 >= self.max_time.total_seconds():
            self.reason = f"trainer.max_time={self.max_time}"
        if self.reason and not trainer.received_sigterm:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM path, as StopOnSignal: stop after this step


class StopOnSignal(pl.Callback):
    """A first Ctrl-C asks Lightning to stop at the end of the current step, as it does for
    SIGTERM, so a checkpoint is saved before exiting. A second Ctrl-C aborts at once."""

    def on_fit_start(self, trainer, pl_module):
        self.previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if trainer.received_sigterm:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM path: stop at the step boundary
            print("\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again to abort)", flush=True)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)

    def teardown(self, trainer, pl_module, stage):
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, getattr(self, "previous", signal.default_int_handler))
