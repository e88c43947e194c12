"""A run's record: one typed value, built where its facts are known, saved as summary.json.

`RunRecord` has three sections, and the status:
- `what` the run is: its identity, name, config, code, tags, its batch sizes and learning rate,
  and what it ran on;
- its `results`: test, validation, the per-epoch history, throughput, memory, the statistics
  evaluations, the norm diagnostics;
- its `status` ("running", "completed", "diverged", "stopped", "interrupted", "failed") and what else tells
  how it ended (error, the step it diverged at, the checkpoint it resumed from, debug settings).

summary.json is the record flattened: its keys are the field names, exactly the keys NormLab has
always written (users read them). A field is written when it holds a value, and every result
key of a completed run is written (null where there is none). Paths inside the record are
relative to the run directory, so a moved sweep still reads. Loading checks every key's type:
a summary that does not fit is `Malformed`, never half-trusted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

SUMMARY_FILE = "summary.json"
STATUSES = ("running", "completed", "diverged", "stopped", "interrupted", "failed")
# The three batch sizes a run records (README "Three batch sizes"), and its world size.
BATCH_KEYS = ("per_device_batch_size", "world_size", "optimization_batch_size", "normalization_batch_size")
# What the statistics evaluation adds (harness.evaluation), for norms with batch statistics only.
STATISTICS_KEYS = ("test_acc_batch_stats", "val_acc_precise_bn", "test_acc_precise_bn", "precise_bn_batches",
                   "example_weight", "val_acc_example_weight", "test_acc_example_weight")


class Malformed(ValueError):
    """A summary.json that cannot be read, or does not fit the record's types."""


def _path(**kw):
    return field(default=None, metadata={"path": True}, **kw)


@dataclass
class What:
    """What the run is: fixed when it starts, completed once its Trainer exists."""
    identity: str
    run_name: Optional[str] = None
    experiment: Optional[str] = None
    norm: Optional[str] = None
    model: Optional[str] = None
    data: Optional[str] = None
    batch_size: Optional[int] = None
    seed: Optional[int] = None
    epochs: Optional[int] = None
    tags: Optional[list] = None
    config: Optional[dict] = None
    code: Optional[dict] = None
    output_dir: Optional[str] = None  # where it trained (informational: readers use the directory they read)
    started_at: Optional[str] = None
    lr: Optional[float] = None  # after scaling to the optimization batch
    base_lr: Optional[float] = None
    per_device_batch_size: Optional[int] = None
    world_size: Optional[int] = None
    optimization_batch_size: Optional[int] = None
    normalization_batch_size: Optional[int] = None
    torch_threads: Optional[int] = None
    accelerator: Optional[str] = None
    precision: Optional[str] = None
    num_params: Optional[int] = None
    cuda_graphs: Optional[bool] = None  # perf.cuda_graphs=true: whether its training step ran as a CUDA graph


@dataclass
class Results:
    """What it gave. `history` holds one row per epoch (module.Classifier's)."""
    epochs_completed: Optional[int] = None
    best_val_acc: Optional[float] = None
    best_epoch: Optional[int] = None
    final_val_acc: Optional[float] = None
    test_acc: Optional[float] = None
    test_loss: Optional[float] = None
    images_per_second: Optional[float] = None
    train_seconds: Optional[float] = None
    activation_mib: Optional[float] = None
    history: Optional[list] = None
    norm_diagnostics: Optional[dict] = None
    test_acc_batch_stats: Optional[float] = None
    val_acc_precise_bn: Optional[float] = None
    test_acc_precise_bn: Optional[float] = None
    precise_bn_batches: Optional[int] = None
    precise_bn_state: Optional[Path] = _path()
    # inference example weighing (bn, bgn): the alpha chosen on validation, and its accuracies
    example_weight: Optional[float] = None
    val_acc_example_weight: Optional[float] = None
    test_acc_example_weight: Optional[float] = None

    def fill(self, history: list[dict], test: dict) -> None:
        """A completed run's results from its history rows and its test metrics."""
        validated = [row for row in history if row.get("val/acc") is not None]
        best = max(validated, key=lambda row: row["val/acc"], default=None)
        ips = [row["images_per_second"] for row in history if row.get("images_per_second")]
        self.epochs_completed, self.history = len(history), history
        self.best_val_acc, self.best_epoch = (best["val/acc"], best["epoch"]) if best else (None, None)
        self.final_val_acc = validated[-1]["val/acc"] if validated else None
        self.test_acc, self.test_loss = test["test/acc"], test["test/loss"]
        self.images_per_second = sum(ips) / len(ips) if ips else None
        self.norm_diagnostics = next((row["norm_diagnostics"] for row in reversed(history)
                                      if row.get("norm_diagnostics")), None)


# Written for every completed run, null where there is no value (an epoch without validation).
COMPLETED_KEYS = ("epochs_completed", "best_val_acc", "best_epoch", "final_val_acc", "test_acc", "test_loss",
                  "images_per_second", "history", "norm_diagnostics")


@dataclass
class RunRecord:
    what: What
    results: Results = field(default_factory=Results)
    status: str = "running"
    error: Optional[str] = None
    diverged_at_step: Optional[int] = None
    result: Optional[bool] = None  # False: a debug run, never counted as a result
    debug: Optional[dict] = None  # the settings that made it one
    resumed_from: Optional[dict] = None  # {"checkpoint": path, "global_step": int}
    csv_log: Optional[Path] = _path()
    wandb: Optional[dict] = None  # {"id", "dir": path, "mode"}
    pack: Optional[dict] = None  # {"size": K, "members": [run directory names]}: trained in a pack
    finished_at: Optional[str] = None
    wall_seconds: Optional[float] = None
    extra: dict = field(default_factory=dict)  # keys this code does not know (a newer NormLab's), kept

    @classmethod
    def begin(cls, cfg, spec, run_dir: Path) -> RunRecord:
        """The record of a run that has just started: what it is, not yet what it gave."""
        from omegaconf import OmegaConf

        from .code import code_version
        from .io import now
        from .secrets import redact

        return cls(What(
            identity=spec.identity, run_name=spec.run_name, experiment=spec.experiment, norm=cfg.norm.kind,
            model=cfg.model.name, data=cfg.data.name, batch_size=cfg.data.batch_size, seed=cfg.seed,
            epochs=cfg.trainer.max_epochs, tags=list(cfg.get("tags") or []), output_dir=str(run_dir),
            started_at=now(), code=code_version(), config=redact(OmegaConf.to_container(cfg, resolve=True))))

    def drop_unfitting(self) -> RunRecord:
        """Set to None what does not have its field's type (a refused config's `seed=1.5`), so the
        record of a refusal is still a record every reader accepts; its config keeps the values."""
        for key, (section, typ) in _FIELDS.items():
            holder = getattr(self, section) if section else self
            if not _fits(getattr(holder, key), typ):
                setattr(holder, key, None)
        return self

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    # -- summary.json ---------------------------------------------------------------------
    def to_summary(self, run_dir: Path) -> dict:
        """The record as summary.json holds it: flat keys, paths relative to `run_dir`."""
        out = {"status": self.status}
        for key, (section, _) in _FIELDS.items():
            if key == "status":
                continue
            value = getattr(getattr(self, section) if section else self, key)
            if value is None and not (self.completed and key in COMPLETED_KEYS):
                continue
            out[key] = _relative(value, run_dir, key)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out

    @classmethod
    def from_summary(cls, obj, run_dir: Path) -> RunRecord:
        """The record a summary.json holds; Malformed when a key does not have its type (or
        what a run always records is missing). Paths resolve against `run_dir`."""
        if not isinstance(obj, dict):
            raise Malformed("not a JSON object")
        if not isinstance(obj.get("identity"), str):
            raise Malformed("no identity")
        sections: dict[str | None, dict] = {"what": {}, "results": {}, None: {}}
        extra = {}
        for key, value in obj.items():
            if key not in _FIELDS:
                extra[key] = value
                continue
            section, typ = _FIELDS[key]
            if not _fits(value, typ):
                raise Malformed(f"{key!r} is {json.dumps(value)[:60]}, not {_describe(typ)}")
            sections[section][key] = _absolute(value, Path(run_dir), key, obj.get("output_dir"))
        if obj.get("status") not in STATUSES:
            raise Malformed(f"unknown status {obj.get('status')!r}")
        if obj["status"] == "completed" and obj.get("test_acc") is None:
            raise Malformed("status completed without a test accuracy")
        return cls(what=What(**sections["what"]), results=Results(**sections["results"]), extra=extra,
                   **sections[None])


# key -> (section attribute or None, its type), in the order summary.json lists them
_FIELDS: dict[str, tuple[str | None, Any]] = {}
for _section, _cls in (("what", What), (None, RunRecord), ("results", Results)):
    _hints = typing.get_type_hints(_cls)
    for _f in dataclasses.fields(_cls):
        if _f.name not in ("what", "results", "extra"):
            _FIELDS[_f.name] = (_section, _hints[_f.name])
# As NormLab has always listed them: what the run is, how it was set up, what it gave, how it ended.
_ORDER = ("status", "norm", "model", "data", "batch_size", "seed", "epochs", "run_name", "experiment", "tags", "identity",
          "output_dir", "started_at", "code", "config", "result", "debug", "resumed_from", "pack", "num_params",
          "activation_mib", "csv_log", "wandb", "lr", "base_lr", "per_device_batch_size", "torch_threads", "world_size",
          "optimization_batch_size", "normalization_batch_size", "accelerator", "precision", "cuda_graphs", "train_seconds",
          "epochs_completed", "best_val_acc", "best_epoch", "final_val_acc", "test_acc", "test_loss", "images_per_second",
          "history", "norm_diagnostics", "test_acc_batch_stats", "precise_bn_batches", "val_acc_precise_bn",
          "test_acc_precise_bn", "precise_bn_state", "example_weight", "val_acc_example_weight", "test_acc_example_weight",
          "error", "diverged_at_step", "finished_at", "wall_seconds")
assert set(_ORDER) == set(_FIELDS), set(_ORDER) ^ set(_FIELDS)
_FIELDS = {k: _FIELDS[k] for k in _ORDER}
_PATHS = {f.name for cls in (RunRecord, Results) for f in dataclasses.fields(cls) if f.metadata.get("path")}
_NESTED_PATHS = {"wandb": "dir", "resumed_from": "checkpoint"}


def _fits(value, typ) -> bool:
    if typing.get_origin(typ) is typing.Union:
        return any(_fits(value, t) for t in typing.get_args(typ))
    if typ is type(None):
        return value is None
    if typ is Any:
        return True
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is Path:
        return isinstance(value, str) and value != ""
    return isinstance(value, typ)


def _describe(typ) -> str:
    if typing.get_origin(typ) is typing.Union:
        return " or ".join(_describe(t) for t in typing.get_args(typ))
    return {type(None): "null", float: "a number", int: "an integer", str: "a string", bool: "true or false",
            Path: "a path", list: "a list", dict: "an object"}.get(typ, str(typ))


def _relative(value, run_dir: Path, key: str):
    if key in _PATHS and value is not None:
        return _rel(value, run_dir)
    if key in _NESTED_PATHS and isinstance(value, dict) and value.get(_NESTED_PATHS[key]):
        inner = _NESTED_PATHS[key]
        return {**value, inner: _rel(value[inner], run_dir)}
    return value


def _rel(path, run_dir: Path) -> str:
    path, run_dir = Path(path), Path(run_dir)
    if not path.is_absolute():
        return str(path)
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:  # outside the run directory (ckpt_path=/elsewhere/last.ckpt): as given
        return str(path)


def _absolute(value, run_dir: Path, key: str, written_in):
    if key in _PATHS and value is not None:
        return _abs(value, run_dir, written_in)
    if key in _NESTED_PATHS and isinstance(value, dict) and isinstance(value.get(_NESTED_PATHS[key]), str):
        inner = _NESTED_PATHS[key]
        return {**value, inner: _abs(value[inner], run_dir, written_in)}
    return value


def _abs(path: str, run_dir: Path, written_in) -> Path:
    """A recorded path on this machine: relative ones under the run directory; an absolute one
    that older NormLab wrote inside the run directory it trained in (its `output_dir`), under
    the directory the record was read from, so a moved sweep still finds its files."""
    p = Path(path)
    if not p.is_absolute():
        return run_dir / p
    if isinstance(written_in, str) and os.path.isabs(written_in):
        try:
            return run_dir / p.relative_to(written_in)
        except ValueError:
            pass
    return p
