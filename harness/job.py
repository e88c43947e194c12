"""Whether this process trains a run, decided before anything in its directory is trusted.

`prepare` validates the config (a refused config is recorded as a failed run), then asks the
run directory for its state (record.RunDir.state): another configuration's directory is
refused; a completed run is skipped (or, completed by other code with rerun=stale, set aside
and trained again); a summary that does not read is set aside; anything else trains, resuming
from its checkpoint when it has one.
"""
from __future__ import annotations

from omegaconf import DictConfig

from record import NotThisRun, RunDir, RunRecord, RunSpec, State
from record.run import What
from record.secrets import scrub

from . import schema


def refused(run_dir: RunDir, cfg: DictConfig, spec: RunSpec, error: str) -> None:
    """Record a config refused before it started as a failed run (a sweep's list of failed runs
    and the report show it), unless the directory holds a completed run."""
    state = run_dir.state(spec.identity, spec.run_name)
    if state.kind in ("done", "stale", "foreign"):
        return
    try:
        record = RunRecord.begin(cfg, spec, run_dir.path).drop_unfitting()
    except Exception:  # noqa: BLE001 - a config too broken to describe: what can be said
        record = RunRecord(What(identity=spec.identity, run_name=spec.run_name, output_dir=str(run_dir.path)))
    record.status, record.error = "failed", error
    run_dir.write(record)


def prepare(cfg: DictConfig, spec: RunSpec, run_dir: RunDir) -> State | None:
    """None: train (or resume) this run. A State: skip it (done, or stale without rerun=stale)."""
    try:
        schema.validate(cfg)  # before anything in the directory is read or trusted
    except ValueError as err:
        refused(run_dir, cfg, spec, scrub(str(err)))
        raise
    state = run_dir.state(spec.identity, spec.run_name)
    if state.kind == "foreign":
        raise NotThisRun(state.detail)
    if state.malformed:
        run_dir.set_aside(run_dir.summary, f"unreadable summary ({state.malformed}), starting from what is sound")
    if state.kind == "stale" and cfg.rerun == "stale":
        for path in (run_dir.summary, run_dir.checkpoint):
            if path.is_file():
                run_dir.set_aside(path, f"{state.detail}; rerun=stale trains it again", tag="stale")
        return None
    if state.kind in ("done", "stale"):
        # Same config, same directory: a relaunched sweep skips what it already did.
        advice = ("rerun=stale trains it again" if state.kind == "stale" else f"delete {run_dir.path} to train it again")
        print(f"{spec.run_name}: already {state.record.status}, {state.detail}; skipping ({advice})", flush=True)
        return state
    return None


def announce(record: RunRecord, run_dir: RunDir) -> float | None:
    """The run's last line, and what a sweep's job returns (its test accuracy)."""
    if record.status == "diverged":
        print(f"{record.what.run_name}: diverged ({record.error}); summary in {run_dir.path}", flush=True)
        return None
    if record.status == "stopped":
        print(f"{record.what.run_name}: {record.error}; outputs in {run_dir.path}", flush=True)
        return None
    res = record.results
    best = f"best val {res.best_val_acc:.2%}" if res.best_val_acc is not None else "no validation ran"
    print(f"{record.what.run_name}: test accuracy {res.test_acc:.2%} ({best}); outputs in {run_dir.path}", flush=True)
    return res.test_acc
