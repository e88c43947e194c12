"""Run bookkeeping shared by train.py and report.py: run identity, W&B mode, summaries, the CSV log.

A run's identity is a short hash of its resolved config, leaving out settings that do not
change what is trained (logging, progress bars, where data files live, Hydra's own
settings). The run directory and the W&B run id derive from it, so relaunching a sweep
finds every run it already did.
"""
from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

# Dotted config keys that never change the trained model, so they stay out of the identity.
NOT_IDENTITY = (
    "hydra", "logger", "experiment_name", "progress_bar", "progress_bar_refresh", "checkpoint",
    "data.root", "data.download", "data.num_workers", "data.system_dir",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "trainer.enable_model_summary",
    "num_threads", "perf",
)
# Keys added after runs had been named, left out of the identity while they hold the value
# that trains what runs trained before the key existed; so relaunching an older sweep still
# finds its runs. Any other value is part of the identity.
NEUTRAL_WHEN_ABSENT = {
    "norm.sync": False,
    "trainer.num_nodes": 1,
    "trainer.strategy": "auto",
    "data.pipeline": "memory",
}
SUMMARY_FILE = "summary.json"


def _identity_source(cfg) -> dict:
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


def _parent(tree: dict, dotted: str) -> tuple[dict, str]:
    """The dict holding `dotted`'s last key (an empty one where the path does not exist)."""
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    return (node if isinstance(node, dict) else {}), leaf


def identity(cfg) -> str:
    """8 hex characters that name the trained configuration."""
    blob = json.dumps(_identity_source(cfg), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def wandb_run_id(cfg) -> str:
    """The W&B run id: the identity within its experiment (the same config in two experiments
    is two W&B runs)."""
    return hashlib.sha1(f"{cfg.experiment_name}/{identity(cfg)}".encode()).hexdigest()[:16]


def slurm_gpus_per_node(devices):
    """hydra/launcher=submitit_slurm asks SLURM for trainer.devices GPUs (and tasks) per node."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"hydra/launcher=submitit_slurm needs trainer.devices to be the number of GPUs per node "
                         f"(a positive integer), got {devices!r}; e.g. trainer=ddp trainer.devices=4")
    return devices


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("identity", lambda *, _root_: identity(_root_), replace=True)
    OmegaConf.register_new_resolver("slurm_gpus_per_node", slurm_gpus_per_node, replace=True)


# Set by Lightning's DDP launcher in the launching process. Left behind, LOCAL_RANK makes the
# next run of a multirun believe its processes were started externally, and it waits forever.
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def ddp_launch_environment() -> dict:
    return {var: os.environ.get(var) for var in DDP_LAUNCH_ENV}


def end_ddp(saved_environment: dict | None) -> None:
    """After a run: end its process group (Lightning keeps it until exit, and the next run of a
    multirun in this process must start its own with its own child processes) and give the
    launching process back the environment it had before Lightning's launcher changed it.
    (Here rather than in train.py: joblib pickles train.py's functions by value, and code that
    names torch.distributed there drags in torch.distributed.config, which cannot be pickled.)"""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for var, value in (saved_environment or {}).items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def is_global_zero() -> bool:
    """Whether this process is global rank 0 by what its launcher set, known before any Trainer
    exists: False in the processes Lightning's DDP launcher starts (LOCAL_RANK > 0), on the
    other nodes of a multi-node run (NODE_RANK > 0) and in SLURM / torchrun tasks but the first."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


# ---------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------
def write_json(path: Path, obj: dict) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(json.dumps(obj, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------
# Secrets: a W&B key or anything named like a key or token never reaches a file we write
# ---------------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"(api[_-]?key|token|secret|passw(or)?d|credential|auth)", re.IGNORECASE)
REDACTED = "<redacted>"


def _secret_values() -> list[str]:
    """Values of environment variables named like secrets (long enough to be one)."""
    return sorted((v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= 8), key=len, reverse=True)


def scrub(text: str) -> str:
    """Replace every secret environment value in a string."""
    for value in _secret_values():
        text = text.replace(value, REDACTED)
    return text


def redact(obj):
    """A copy of a config tree with secret-named keys and secret values replaced."""
    if isinstance(obj, dict):
        return {k: REDACTED if SECRET_NAME.search(str(k)) and obj[k] not in (None, "") else redact(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return scrub(obj)
    return obj


_SECRET_ASSIGNMENT = re.compile(r"([\w.+~]*(?:api[_-]?key|token|secret|passw(?:or)?d|credential|auth)\w*\s*[:=]\s*)([^\s,'\]]+)",
                                re.IGNORECASE)


def scrub_argv(argv: list[str]) -> list[str]:
    """The command line with secret values replaced (W&B records it in the run's metadata)."""
    return [_SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, scrub(a)) for a in argv]


def scrub_files(paths) -> None:
    """Redact secrets from files Hydra wrote (the command line it records may hold one)."""
    for path in paths:
        text = Path(path).read_text()
        clean = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, scrub(text))
        if clean != text:
            Path(path).write_text(clean)


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


# ---------------------------------------------------------------------------------------
# W&B: online when possible, offline otherwise, decided before wandb.init so it never hangs
# ---------------------------------------------------------------------------------------
def _wandb_base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _wandb_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators(urlparse(_wandb_base_url()).hostname) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(requested: str) -> tuple[str, str]:
    """(mode, why): the mode to start W&B in, and the reason, for one line on the console."""
    if requested in ("online", "offline", "disabled"):
        return requested, f"logger.wandb.mode={requested}"
    if requested != "auto":
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled, got {requested!r}")
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE is set"
    if not _wandb_key_present():
        return "offline", "no W&B API key; run `wandb login` to log online"
    if not _reachable(_wandb_base_url()):
        return "offline", f"{urlparse(_wandb_base_url()).hostname} is not reachable"
    return "online", "logged in"


# ---------------------------------------------------------------------------------------
# CSV log that survives a resume
# ---------------------------------------------------------------------------------------
class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, writing `metrics.csv` into the run directory itself.

    Lightning deletes an existing metrics.csv when its writer starts. When a run resumes from
    a checkpoint taken at global step `resume_step`, this logger first keeps the rows logged
    before that step, so the file ends up holding every step and epoch exactly once.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        # Flushed at every log call (every trainer.log_every_n_steps), so a killed run loses nothing.
        super().__init__(str(run_dir), name="", version="", flush_logs_every_n_steps=1)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            kept = []
            path = Path(self.log_dir) / "metrics.csv"
            if self.resume_step is not None and path.is_file():
                with open(path, newline="") as f:
                    kept = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)
                            if row.get("step") and int(row["step"]) < self.resume_step]
            writer = CSVLogger.experiment.fget(self)  # removes the old file
            writer.metrics[:0] = kept
        return self._experiment
