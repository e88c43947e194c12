"""How many seeds would settle the undecided comparisons (`plan=true`): plan.csv, and the one
command that adds them to the sweep.

For every comparison the report could not decide (not distinguishable: neither a difference nor
equivalence shown), the seeds per side a two-sided Welch test needs for 80% power at the observed
difference and spreads, at Holm's threshold for that comparison in this report (0.05 / (m - rank),
the `alpha` column; results/power.py). The command is
the sweep's own (multirun.yaml) with its `seed=` list extended to the largest such number:
relaunching skips the runs that exist, so only the new seeds train, in every cell of the sweep.
"""
from __future__ import annotations

import csv
import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from .analysis import UNDECIDED, Analysis, where
from .power import MOST_SEEDS, seeds_needed


@dataclass(frozen=True)
class Need:
    facet: str
    at: str
    series: str
    against: str
    n_now: int  # the smaller of the two cells' run counts
    n_needed: int | None  # per side; None: more than MOST_SEEDS
    difference: float
    sd: float  # the two cells' spreads combined: sqrt((sd_a^2 + sd_b^2) / 2)
    alpha: float  # Holm's threshold for the comparison: 0.05 / (m - rank)


def needs(analyses: list[Analysis], cols_key: str) -> list[Need]:
    """One Need per undecided comparison of every family (vs best, vs baseline, contrasts, column effects)."""
    out = []
    for a in analyses:
        for r in [*a.comparisons, *a.effects]:
            if r.verdict != UNDECIDED:
                continue
            res = r.result
            against = "itself" if r.kind == "column effect" else f"{r.b} ({r.kind})"
            out.append(Need(a.table.title, where(r, cols_key), r.a, against, min(res.n_a, res.n_b),
                            seeds_needed(res.diff_mean, res.sd_a, res.sd_b, alpha=r.level), res.diff_mean,
                            math.sqrt((res.sd_a**2 + res.sd_b**2) / 2), r.level))
    return out


def write_plan_csv(path: Path, rows: list[Need]) -> None:
    """The issue's columns first (at, series, against, n_now, n_needed, difference, sd), then the level
    Holm held each comparison to and the facet (the table's title; empty with one table)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["at", "series", "against", "n_now", "n_needed", "difference", "sd", "alpha", "facet"])
        for n in rows:
            w.writerow([n.at, n.series, n.against, n.n_now, "" if n.n_needed is None else n.n_needed,
                        f"{n.difference:.4f}", f"{n.sd:.4f}", f"{n.alpha:.6g}", n.facet])


def extended_seeds(seeds: list[int], count: int) -> list[int]:
    """`seeds` followed by the next unused integers, `count` in all (never fewer than there are)."""
    out, candidate = list(seeds), 0
    while len(out) < count:
        if candidate not in out:
            out.append(candidate)
        candidate += 1
    return out


def sweep_command(runs_dir: Path, seeds: list[int]) -> str | None:
    """The command that launched the sweep in `runs_dir` (multirun.yaml), with `seed=` set to
    `seeds` and its sweep directory pinned to `runs_dir`; None without multirun.yaml."""
    path = runs_dir / "multirun.yaml"
    if not path.is_file():
        return None
    hcfg = OmegaConf.load(path).hydra
    overrides = hcfg.get("overrides") or {}
    keep = [o for o in overrides.get("task") or [] if o.split("=", 1)[0].lstrip("+~") != "seed"]
    keep += [o for o in overrides.get("hydra") or [] if o.split("=", 1)[0] not in ("hydra.mode", "hydra.sweep.dir")]
    args = [*keep, f"seed={','.join(str(s) for s in seeds)}", f"hydra.sweep.dir={runs_dir}"]
    return "python train.py -m " + " ".join(shlex.quote(a) for a in args)


def advice(rows: list[Need], runs_dir: Path, seeds: list[int], cells: int) -> str:
    """What plan=true prints: the command that adds the seeds the undecided comparisons need to
    every one of the sweep's `cells` configurations."""
    if not rows:
        return "Plan: every testable comparison is decided; no seeds to add."
    known = [n.n_needed for n in rows if n.n_needed is not None]
    beyond = len(rows) - len(known)
    tail = (f" {beyond} undecided comparison(s) would need more than {MOST_SEEDS} seeds per side (differences too "
            "small for seeds to settle; see plan.csv)." if beyond else "")
    if not known:
        return "Plan:" + tail
    count = max(known)
    most = next(n for n in rows if n.n_needed == count)
    new_seeds = extended_seeds(seeds, count)
    what = (f"Plan: {len(known)} undecided comparison(s) need up to {count} seeds per side for 80% power at their "
            f"observed differences (two-sided Welch at Holm's threshold for each; plan.csv), the most for "
            f"{most.series} against {most.against} at {most.at} ({most.difference:+.2f} points, sd {most.sd:.2f}); "
            f"that is "
            f"{len(new_seeds) - len(seeds)} more seed(s) for each of the {cells} configurations, "
            f"{(len(new_seeds) - len(seeds)) * cells} runs.")
    held = sum(1 for n in rows if n.n_needed is not None and n.n_needed <= n.n_now)
    if held:  # its own p met its threshold (Welch): an earlier step did not reject; or test=permutation
        what += (f" {held} of them already have that many seeds for a Welch test: what holds them back is an "
                 "earlier step of Holm's procedure that did not reject (or, with test=permutation, its coarse "
                 "p-values: the smallest with n and n runs is 2 / C(2n, n)).")
    command = sweep_command(runs_dir, new_seeds)
    if command is None:
        return (f"{what}{tail} No multirun.yaml in {runs_dir}: relaunch the sweep's command with "
                f"seed={','.join(map(str, new_seeds))}.")
    return f"{what}{tail} Relaunching skips the runs that exist:\n\n    {command}\n"
