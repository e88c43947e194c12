"""How a run ended, recorded last: the one place that owns the taxonomy.

    completed    its budget reached and tested (the run sets its results)
    diverged     the training loss became NaN or infinite: a finding, not a bug; a sweep goes on
    stopped      trainer.max_time, or trainer.max_steps under an epoch budget, stopped it before
                 its budget: a checkpoint was saved, a relaunch resumes; not a result
    interrupted  SIGTERM or Ctrl-C: a checkpoint was saved, a relaunch resumes
    failed       anything else, with the error in one line (secrets scrubbed)
    foreign      the directory or checkpoint is another configuration's: nothing is written

W&B finishes first and summary.json is written last, so a kill in between leaves a run that a
relaunch trains (and logs) again, never a summary beside an unfinished W&B run.
"""
from __future__ import annotations

import signal
import sys
import time

from pytorch_lightning.utilities.exceptions import SIGTERMException

from record import NotThisRun, RunDir, RunRecord
from record.secrets import scrub

from .module import Diverged
from .wandb_run import WandbRun


class RunEnd:
    """`with RunEnd(run_dir, record) as end:` around a run's work. The work sets `end.module`,
    `end.trainer` and `end.wandb` as it creates them, and the record's results when it completes.
    A pack's loop ends its members with `close` instead (harness/packed)."""

    def __init__(self, run_dir: RunDir, record: RunRecord, write: bool = True):
        self.run_dir, self.record, self.write = run_dir, record, write
        self.module = self.trainer = None
        self.limit = None  # harness.callbacks.StopAtLimit, when the run has a limit
        self.wandb = WandbRun()
        self.started = time.time()
        self.closed = False

    def __enter__(self) -> RunEnd:
        return self

    def __exit__(self, typ, err, tb) -> bool:
        suppress = self.close(err)
        if self.record.status == "stopped":
            return True  # a limit the user set: the run's record says so, the sweep goes on
        if isinstance(err, SIGTERMException):
            raise SystemExit(128 + signal.SIGTERM)
        return suppress

    def close(self, err: BaseException | None, step: int | None = None, history: list | None = None) -> bool:
        """Record how the run ended (`err`: None when it completed), finish W&B, write the record
        last; once. `step` and `history` stand for a trainer and module the run does not have (a
        pack's member). Returns whether `err` is a finding rather than a failure (divergence)."""
        if self.closed:
            return False
        self.closed = True
        rec, finding = self.record, isinstance(err, Diverged)
        history = history if history is not None else (list(self.module.history) if self.module is not None else None)
        if step is None and self.trainer is not None:
            step = self.trainer.global_step
        if finding:
            rec.status, rec.error, rec.diverged_at_step = "diverged", str(err), step
            rec.results.history = history or []
            rec.results.epochs_completed = len(rec.results.history)
        elif isinstance(err, SIGTERMException) and self.limit is not None and self.limit.reason:
            rec.status = "stopped"
            rec.error = (f"stopped by {self.limit.reason} at step {step}, before its budget of "
                         f"{rec.what.epochs} epochs; relaunch to resume from the checkpoint")
            rec.results.history = history or []
        elif isinstance(err, SIGTERMException):
            rec.status, rec.error = "interrupted", "stopped by a signal; relaunch to resume from the checkpoint"
            rec.results.history = history or []
        elif isinstance(err, NotThisRun):
            self.write = False  # never over the record of another configuration's run
        elif err is not None:
            rec.status, rec.error = "failed", scrub(f"{type(err).__name__}: {err}")
            if history is not None:
                rec.results.history = history
        self.wandb.finish(ok=rec.status == "completed")
        if self.write:
            try:
                self.run_dir.write(rec, self.started)
            except OSError as write_err:
                if rec.status not in ("failed", "interrupted"):
                    raise  # the run's only error: say it
                print(f"note: {self.run_dir.summary} could not be written either ({write_err.strerror or write_err})",
                      file=sys.stderr, flush=True)
        return finding
