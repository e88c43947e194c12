"""A run directory: where one configuration's run lives, and what state it is in.

`RunDir.state(identity)` is the one answer every part of NormLab asks before it trusts a
directory (training, resuming, the dry run, the sweep's failure list, eval.py):

    done      its record says it completed (or diverged, a finding) with this code
    stale     completed, but by another commit (rerun=stale trains it again)
    partial   a checkpoint to resume from
    failed    it failed, was interrupted or stopped at a limit, and left no checkpoint
    foreign   its record is another configuration's (a different identity): never touched
    to run    nothing yet (or only a summary.json that does not read, set aside when it trains)
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .code import stale
from .io import now, set_aside, write_json
from .run import SUMMARY_FILE, Malformed, RunRecord
from .secrets import scrub_values

STATES = ("done", "stale", "partial", "failed", "foreign", "to run")


class NotThisRun(ValueError):
    """A run directory (or checkpoint) belongs to another configuration."""


def not_this_run(where: str, found: str, found_name: str | None, asked: str, asked_name: str,
                 advice: str = "use another directory (hydra.run.dir / hydra.sweep.dir) or delete it") -> NotThisRun:
    what = f" ({found_name})" if found_name else ""
    return NotThisRun(f"{where}: identity {found}{what}, while this config is {asked} ({asked_name}); {advice}")


@dataclass(frozen=True)
class State:
    kind: str  # one of STATES
    detail: str  # one line: the test accuracy, the error, the checkpoint, why it is foreign
    record: RunRecord | None = None
    malformed: str | None = None  # why summary.json did not read, when it did not


class RunDir:
    def __init__(self, path):
        self.path = Path(path)
        self.summary = self.path / SUMMARY_FILE
        self.checkpoint = self.path / "checkpoints" / "last.ckpt"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- the record -------------------------------------------------------------------------
    def read(self) -> RunRecord | None:
        """The record in summary.json, None where there is none; Malformed where it does not
        read or does not fit the record's types."""
        try:
            text = self.summary.read_text()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise Malformed(f"unreadable ({err.strerror or type(err).__name__})") from None
        try:
            obj = json.loads(text)
        except ValueError as err:
            raise Malformed(f"not JSON ({type(err).__name__})") from None
        return RunRecord.from_summary(obj, self.path)

    def write(self, record: RunRecord, started: float | None = None) -> None:
        """Write summary.json, stamping the end time (and the seconds since `started`, time.time())."""
        record.finished_at = now()
        if started is not None:
            record.wall_seconds = time.time() - started
        write_json(self.summary, scrub_values(record.to_summary(self.path)))  # a secret in a run name or tag

    def set_aside(self, path: Path, why: str, tag: str = "unreadable") -> Path:
        return set_aside(path, why, tag)

    # -- the state --------------------------------------------------------------------------
    def state(self, identity: str, run_name: str = "") -> State:
        """Where the run of the configuration `identity` (named `run_name`) stands in this directory."""
        try:
            rec, malformed = self.read(), None
        except Malformed as err:
            rec, malformed = None, str(err)
        if rec is not None and rec.what.identity != identity:
            err = not_this_run(f"{self.path} holds the run of another configuration", rec.what.identity,
                               rec.what.run_name, identity, run_name)
            return State("foreign", str(err), rec)
        if rec is not None and rec.status in ("completed", "diverged"):
            why = stale((rec.what.code or {}).get("commit"))
            if rec.status == "completed":
                detail = f"test accuracy {rec.results.test_acc:.2%}"
            else:
                detail = f"diverged at step {rec.diverged_at_step}: {rec.error}"
            return State("stale" if why else "done", f"{detail} ({why})" if why else detail, rec)
        if self.checkpoint.is_file():
            return State("partial", f"resumes from {self.checkpoint}", rec, malformed)
        if rec is not None and rec.status in ("failed", "stopped", "interrupted"):
            return State("failed", str(rec.error or rec.status)[:300], rec)
        detail = f"{SUMMARY_FILE} does not read ({malformed}): set aside when it trains" if malformed else ""
        return State("to run", detail, rec, malformed)

    # -- one trainer at a time --------------------------------------------------------------
    def lock(self) -> RunLock:
        return RunLock(self.path)


class RunLock:
    """An exclusive lock on <run dir>/.lock, released by the OS if its holder dies."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.acquired, self.holder, self._file = False, None, None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            self.holder = self._file.read().strip() or "unknown"
            return self
        self.acquired = True
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc):
        self._file.close()  # closing releases the lock
        return False
