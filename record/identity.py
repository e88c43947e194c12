"""A run's identity: a short hash of what it trains.

The identity is a hash of the resolved config, leaving out settings that do not change what
is trained (logging, progress bars, where data files live, Hydra's own settings, the
evaluations after training). The run directory and the W&B run id derive from it, so a
relaunched sweep finds every run it already did. It is computed once per run (`RunSpec`) and
carried as a value from there on.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from omegaconf import OmegaConf

# Dotted config keys that never change the trained model, so they stay out of the identity.
NOT_IDENTITY = (
    "hydra", "logger", "experiment_name", "progress_bar", "progress_bar_refresh", "checkpoint",
    "data.root", "data.download", "data.num_workers", "data.system_dir",
    "trainer.enable_progress_bar", "trainer.log_every_n_steps", "trainer.enable_model_summary",
    "num_threads", "perf", "rerun", "eval", "diagnostics",
    "model.gn_groups",  # a default for norm.num_groups, which the identity holds
    "tags", "ckpt_path",  # labels; a checkpoint of this same run to resume from
    "trainer.max_time",  # a wall-clock limit: where a run stops, not what it trains (harness.callbacks.StopAtLimit)
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
    "optim.agc_clip": None,
    "model.skipinit": False,
}


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
    trainer = tree.get("trainer") or {}
    if trainer.get("max_epochs") != -1:  # an epoch budget: trainer.max_steps only says where the run stops
        trainer.pop("max_steps", None)
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


def dir_name(name) -> str:
    """A run name as one directory name: '/' replaced and cut to 200 bytes, so that Hydra can
    create the directory of any run name (the schema then refuses such a name in one line,
    recorded in that directory)."""
    name = str(name).replace("/", "_") or "_"
    return name.encode()[:200].decode(errors="ignore")


@dataclass(frozen=True)
class RunSpec:
    """Who a run is, computed once from its config and carried as a value: its identity, its
    name, its experiment, and the names derived from them."""

    identity: str
    run_name: str
    experiment: str

    @classmethod
    def of(cls, cfg) -> RunSpec:
        return cls(identity(cfg), str(cfg.get("run_name")), str(cfg.get("experiment_name")))

    @property
    def title(self) -> str:
        """The name a run goes by in W&B and on disk: its run name and identity."""
        return f"{dir_name(self.run_name)}-{self.identity}"

    @property
    def wandb_id(self) -> str:
        """The W&B run id: the identity within its experiment (the same config in two
        experiments is two W&B runs)."""
        return hashlib.sha1(f"{self.experiment}/{self.identity}".encode()).hexdigest()[:16]
