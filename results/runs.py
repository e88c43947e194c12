"""Read a sweep's run directories through record/ (each run's typed record; the Hydra config
of a run from before records were written at its start), and the seeds the sweep asked for
(multirun.yaml).

A run's `key` is its resolved config flattened to dotted keys, as the run identity sees it:
keys that do not change what is trained are left out (record/identity.py), and so are the seed
and the run name (which holds the seed). Two runs with the same key differ only by seed.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

import norms
import resolvers
from record import SUMMARY_FILE, Malformed, RunDir
from record.identity import NEUTRAL_WHEN_ABSENT, flatten, identity_source

NOT_SERIES = ("seed", "run_name")


@dataclass
class Run:
    path: Path
    status: str
    seed: int
    config: dict  # flattened: {"norm.kind": "gn", "data.batch_size": 8, ...}, seed and run name left out
    resolved: dict = field(default_factory=dict)  # the run's resolved config, as it trained
    commit: str | None = None  # the code that trained it (summary.json "code")
    test_error: float | None = None  # percent
    val_error: float | None = None  # percent, of the final model (the one tested)
    best_epoch: int | None = None
    images_per_second: float | None = None
    activation_mib: float | None = None
    history: list = field(default_factory=list)
    precise_error: float | None = None  # percent, with PreciseBN's statistics (norms with batch statistics)
    batch_stats_error: float | None = None  # percent, each test batch normalized by its own statistics
    example_weight_error: float | None = None  # percent, with inference example weighing (alpha chosen on val)
    diagnostics: dict | None = None  # the last epoch's norm_diagnostics (harness/diagnostics.py)
    csv_log: Path | None = None
    error: str | None = None

    def get(self, key: str):
        return self.config.get(key)

    @property
    def norm_config(self) -> dict:
        return {k.removeprefix("norm."): v for k, v in self.config.items() if k.startswith("norm.")}

    @property
    def label(self) -> str:
        """The norm as a report names it: "bn", "bn (ghost 4)" (norms.label)."""
        try:
            return norms.label(self.norm_config)
        except ValueError:  # a kind this code no longer has: its name
            return str(self.config.get("norm.kind"))


def config_key(resolved: dict) -> dict:
    """The flattened identity source of a resolved config, less the seed and run name. A key
    the identity leaves out at its neutral value (NEUTRAL_WHEN_ABSENT) has that value
    here, so a run from before the key existed, one that sets it to that value and one that
    sets it otherwise are compared under the value itself (model.conv=plain against ws)."""
    flat = flatten(identity_source(OmegaConf.create(resolved)))
    for key, neutral in NEUTRAL_WHEN_ABSENT.items():
        flat.setdefault(key, tuple(neutral) if isinstance(neutral, list) else neutral)
    return {k: v for k, v in flat.items() if k not in NOT_SERIES}


def read_run(run_dir: Path, include_debug: bool = False) -> Run | None:
    """A run as its directory records it. A summary that does not read or does not fit the
    record's types makes the run "malformed" (shown as such, with its Hydra config when there is
    one); a run whose record says it is still running is "incomplete" (it is, or it was killed)."""
    try:
        rec, malformed = RunDir(run_dir).read(), None
    except Malformed as err:
        rec, malformed = None, str(err)
    if rec is not None and not isinstance(rec.what.config, dict):
        rec, malformed = None, "no config"
    if rec is not None:
        if rec.result is False and not include_debug:  # a debug run (fast_dev_run, limit_*_batches)
            print(f"report: {run_dir} is a debug run ({rec.debug}): left out (include_debug=true to show it)", flush=True)
            return None
        res = rec.results
        run = Run(path=run_dir, status="incomplete" if rec.status == "running" else rec.status, seed=rec.what.seed,
                  config=config_key(rec.what.config), resolved=rec.what.config, commit=(rec.what.code or {}).get("commit"),
                  history=res.history or [], error=rec.error, best_epoch=res.best_epoch,
                  images_per_second=res.images_per_second, activation_mib=res.activation_mib,
                  diagnostics=res.norm_diagnostics, csv_log=rec.csv_log)
        for attr, value in (("test_error", res.test_acc), ("val_error", res.final_val_acc),
                            ("precise_error", res.test_acc_precise_bn), ("batch_stats_error", res.test_acc_batch_stats),
                            ("example_weight_error", res.test_acc_example_weight)):
            if value is not None:
                setattr(run, attr, 100 * (1 - value))
        return run
    config_file = run_dir / ".hydra" / "config.yaml"
    if not config_file.is_file():
        if malformed:
            print(f"report: {run_dir / SUMMARY_FILE} does not read ({malformed}) and there is no .hydra/config.yaml "
                  "beside it: left out", flush=True)
        return None
    resolvers.register()  # conf/'s ${norm_default:...} and the like
    try:  # started, never wrote its record (killed, or a crash before its end)
        resolved = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    except Exception as err:  # noqa: BLE001 - a config this code cannot resolve
        print(f"report: {config_file} does not resolve ({type(err).__name__}): left out", flush=True)
        return None
    return Run(path=run_dir, status="malformed" if malformed else "incomplete", seed=resolved.get("seed"),
               config=config_key(resolved), resolved=resolved,
               error=f"summary.json does not read: {malformed}" if malformed else None)


def read_runs(runs_dir: Path, skip: Path | None = None, include_debug: bool = False) -> list[Run]:
    candidates = {p.parent for p in runs_dir.rglob(SUMMARY_FILE)}
    candidates |= {p.parent.parent for p in runs_dir.rglob(".hydra/config.yaml")}
    runs = []
    for run_dir in sorted(candidates):
        if skip is not None and (skip == run_dir or skip in run_dir.parents):
            continue
        run = read_run(run_dir, include_debug)
        if run is not None:
            runs.append(run)
    return runs


def requested_seeds(runs_dir: Path) -> list[int] | None:
    """The seeds the sweep asked for (multirun.yaml; the command line wins over the recipe), or
    None when the sweep did not sweep the seed."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = runs_dir / "multirun.yaml"
    if not path.is_file():
        return None
    hcfg = OmegaConf.load(path).hydra
    overrides = [f"{k}={v}" for k, v in (hcfg.sweeper.get("params") or {}).items()]
    overrides += list(hcfg.overrides.task)
    seeds = None
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.get_key_element() == "seed":
            seeds = [int(v) for v in override.sweep_iterator()] if override.is_sweep_override() else [int(override.value())]
    return seeds


def step_curve(run: Run) -> list[tuple[int, float]]:
    """(global step, training loss) as the run logged it to its CSV file every few steps."""
    if run.csv_log is None or not run.csv_log.is_file():
        return []
    with open(run.csv_log, newline="") as f:
        return [(int(row["step"]), float(row["train/loss_step"])) for row in csv.DictReader(f)
                if row.get("train/loss_step") and row.get("step")]


def as_json(value) -> str:
    """A config value as one CSV cell."""
    return value if isinstance(value, str) else json.dumps(value)
