"""What a run is and what it leaves behind: its identity, summary.json, the run-directory lock.

A run's identity is a short hash of its resolved config, leaving out settings that do not
change what is trained (logging, progress bars, where data files live, Hydra's own
settings). The run directory and the W&B run id derive from it, so relaunching a sweep
finds every run it already did. Free of Lightning: the report reads summaries through here.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path

from omegaconf import OmegaConf

from .secrets import redact

# Dotted config keys that never change the trained model, so they stay out of the identity.
NOT_IDENTITY = (
    "hydra", "logger", "experiment_name", "progress_bar", "progress_bar_refresh", "checkpoint",
    "data.root", "data.download", "data.num_workers", "data.system_dir",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "trainer.enable_model_summary",
    "num_threads", "perf", "rerun", "eval", "diagnostics",
    "model.gn_groups",  # a default for norm.num_groups, which the identity holds
    "tags", "ckpt_path",  # labels; a checkpoint of this same run to resume from
)
# Keys added after runs had been named, left out of the identity while they hold the value
# that trains what runs trained before the key existed; so relaunching an older sweep still
# finds its runs. Any other value is part of the identity.
NEUTRAL_WHEN_ABSENT = {
    "norm.sync": False,
    "trainer.num_nodes": 1,
    "trainer.strategy": "auto",
    "data.pipeline": "memory",
    "model.conv": "plain",
    "optim.schedule": "cosine",
    "optim.milestones": [],
    "optim.step_gamma": 0.1,
}
SUMMARY_FILE = "summary.json"
# The three batch sizes a run records (README "Three batch sizes").
# What the statistics evaluation adds (harness.evaluation), for norms with batch statistics only.
STATISTICS_KEYS = ("test_acc_batch_stats", "val_acc_precise_bn", "test_acc_precise_bn", "precise_bn_batches")
BATCH_KEYS = ("per_device_batch_size", "world_size", "optimization_batch_size", "normalization_batch_size")


def identity_source(cfg) -> dict:
    """The resolved config as the identity sees it: what is trained, and nothing else."""
    keys = [k for k in cfg.keys() if k != "hydra"]  # resolving hydra.* here would recurse
    tree = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    for dotted in NOT_IDENTITY:
        node, leaf = _parent(tree, dotted)
        node.pop(leaf, None)
    for dotted, neutral in NEUTRAL_WHEN_ABSENT.items():
        node, leaf = _parent(tree, dotted)
        if leaf in node and node[leaf] == neutral:
            del node[leaf]
    return tree


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys: {"norm.kind": "gn", "data.batch_size": 8, ...} (lists as tuples)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def _parent(tree: dict, dotted: str) -> tuple[dict, str]:
    """The dict holding `dotted`'s last key (an empty one where the path does not exist)."""
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    return (node if isinstance(node, dict) else {}), leaf


def identity(cfg) -> str:
    """8 hex characters that name the trained configuration."""
    blob = json.dumps(identity_source(cfg), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def wandb_run_id(cfg) -> str:
    """The W&B run id: the identity within its experiment (the same config in two experiments
    is two W&B runs)."""
    return hashlib.sha1(f"{cfg.experiment_name}/{identity(cfg)}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "wandb")


@cache
def code_version() -> dict:
    """The code that trains: the repository's commit and whether its tracked files had changes,
    and the versions of the packages that shape a run. A relaunch compares the commit."""
    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    version = {"commit": git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status)}
    for package in PACKAGES:
        try:
            version[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            version[package] = None
    return version


def stale(done: dict) -> str | None:
    """Why a completed run's result may not be what this code would give (another commit), or None."""
    then, now = (done.get("code") or {}).get("commit"), code_version()["commit"]
    if then is None or now is None or then == now:
        return None
    return f"completed by other code (commit {then[:8]}, this is {now[:8]})"


def start_summary(cfg, out_dir: Path) -> dict:
    """The summary of a run that has just started: what it is, not yet what it gave."""
    return {
        "status": "running", "norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name,
        "batch_size": cfg.data.batch_size, "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
        "run_name": cfg.run_name, "experiment": cfg.experiment_name, "tags": list(cfg.get("tags") or []), "identity": identity(cfg),
        "output_dir": str(out_dir), "started_at": _now(), "code": code_version(),
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
    }


def refused(out_dir: Path, cfg, error: str) -> None:
    """Record a config refused before it started as a failed run (a sweep's list of failed runs
    and the report show it), unless the directory holds a completed run."""
    done = read_summary(out_dir)
    if done and done.get("status") == "completed":
        return
    try:
        summary = start_summary(cfg, out_dir)
    except Exception:  # noqa: BLE001 - a config too broken to summarize: what can be said
        summary = {"run_name": str(cfg.get("run_name")), "output_dir": str(out_dir), "started_at": _now()}
    summary.update(status="failed", error=error)
    write_summary(out_dir, summary, time.time())


def results(history: list[dict], test: dict) -> dict:
    """What a completed run gave: test, best and final validation, throughput, the curve."""
    validated = [row for row in history if row.get("val/acc") is not None]
    best = max(validated, key=lambda row: row["val/acc"], default=None)
    ips = [row["images_per_second"] for row in history if row.get("images_per_second")]
    return {
        "status": "completed", "epochs_completed": len(history),
        "best_val_acc": best["val/acc"] if best else None, "best_epoch": best["epoch"] if best else None,
        "final_val_acc": validated[-1]["val/acc"] if validated else None,
        "test_acc": test["test/acc"], "test_loss": test["test/loss"],
        "images_per_second": sum(ips) / len(ips) if ips else None, "history": history,
        "norm_diagnostics": next((row["norm_diagnostics"] for row in reversed(history) if row.get("norm_diagnostics")),
                                 None),
    }


def write_summary(out_dir: Path, summary: dict, started: float) -> None:
    """Stamp the end time and wall-clock seconds since `started` (time.time()), write summary.json."""
    summary.update(finished_at=_now(), wall_seconds=time.time() - started)
    write_json(Path(out_dir) / SUMMARY_FILE, summary)


def save_atomic(obj, path: Path) -> None:
    """torch.save through a temporary file and a rename (removed if the write fails)."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=2, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError:  # a full disk: no temporary file left behind, the previous file untouched
        tmp.unlink(missing_ok=True)
        raise


def read_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


class NotThisRun(ValueError):
    """A run directory (or checkpoint) belongs to another configuration."""


def set_aside(path: Path, why: str, tag: str = "unreadable") -> Path:
    """Move a file out of the way, keeping it: <name>.<tag>-<time>."""
    kept = path.with_name(f"{path.name}.{tag}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}")
    os.replace(path, kept)
    print(f"{path}: {why}; kept as {kept.name}", flush=True)
    return kept


def own_summary(run_dir: Path, cfg) -> dict | None:
    """The summary a run left in `run_dir`, after checking that it is this configuration's.

    A summary that cannot be read is set aside (and None returned: the run starts again); one
    written by another configuration (its identity differs) is refused with NotThisRun, so a
    directory reused for another config never reports the other run's result as this one's."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
        if not isinstance(done, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        set_aside(path, f"unreadable summary ({type(err).__name__}), starting from what is sound")
        return None
    _check_identity(done.get("identity"), cfg, f"{run_dir} holds the run of another configuration", done)
    return done


def _check_identity(found, cfg, where: str, details: dict | None = None) -> None:
    asked = identity(cfg)
    if found is not None and found != asked:
        what = ""
        if details and details.get("run_name"):
            what = f" ({details['run_name']})"
        raise NotThisRun(f"{where}: identity {found}{what}, while this config is {asked} ({cfg.run_name}); "
                         f"use another directory (hydra.run.dir / hydra.sweep.dir) or delete it")


def check_checkpoint(state: dict, cfg, path: Path) -> None:
    """Refuse a checkpoint that another configuration wrote (checkpoints from before identities
    were recorded in them are accepted)."""
    _check_identity((state.get("normlab") or {}).get("identity"), cfg, f"{path} was written by another configuration")


# ---------------------------------------------------------------------------------------
# One trainer per run directory at a time
# ---------------------------------------------------------------------------------------
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
