"""Aggregates over a table's columns, as rliable recommends (Agarwal et al., "Deep RL at the Edge of
the Statistical Precipice", 2021), for a summary across batch sizes beside the per-column tests:

- per series: the interquartile mean (IQM) of test error over all its runs in the table, with a
  95% stratified-bootstrap interval, and how many runs failed (diverged, failed, never finished,
  malformed: counted, never silently dropped; the IQM is over the completed ones);
- per pair of series: the probability of improvement P(X < Y), the chance that a run of X has
  lower test error than a run of Y at the same column, averaged over the columns both have,
  with its stratified-bootstrap interval;
- per series: the performance profile, the fraction of runs with test error <= tau, averaged
  over columns, a failed run reaching no tau.

Computed with numpy and scipy, not the rliable package: rliable 1.2 pins `arch < 8` and brings
pandas, seaborn and absl-py for these few lines. The statistics are rliable's: IQM is
scipy.stats.trim_mean(x, 0.25) over the pooled runs (rliable's metrics.aggregate_iqm); the
stratified bootstrap resamples runs with replacement within each task, here each (series,
column) cell (rliable's StratifiedBootstrap); intervals are percentile intervals; the
probability of improvement is per column the Mann-Whitney U statistic over n_x * n_y (ties
count one half), averaged over columns (rliable's metrics.probability_of_improvement, with lower
error as better). Seeded: the same runs give the same intervals. tests/test_stats.py checks
the IQM, its interval and the probability of improvement against rliable 1.2.0's own output.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .analysis import Analysis

REPS = 10_000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Aggregate:
    series: str
    runs: int  # seeds run in the table's cells (with select=, one per seed: the tuned choice)
    failed: int  # of those, how many have no completed run
    iqm: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.runs if self.runs else None


@dataclass(frozen=True)
class Improvement:
    x: str
    y: str
    columns: tuple
    probability: float
    ci_low: float
    ci_high: float


def cells(a: Analysis, series) -> dict:
    """column -> (completed test errors, number of failed seeds) for one series."""
    out = {}
    for c in a.table.columns:
        cell = a.table.cells[series, c]
        failed = len({r.seed for r in cell.runs} - {r.seed for r in cell.chosen})
        if cell.errors or failed:
            out[c] = (np.asarray(cell.errors, dtype=float), failed)
    return out


def iqm(values, axis=None):
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean cuts 25% at each end)."""
    return stats.trim_mean(values, 0.25, axis=axis)


def resample(strata: list[np.ndarray], reps: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified bootstrap: per stratum, `reps` resamples of its values with replacement (reps x n)."""
    return [x[rng.integers(0, x.size, size=(reps, x.size))] for x in strata]


def _percentile(estimates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    low, high = np.percentile(estimates, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2], axis=0)
    return float(low), float(high)


def aggregates(a: Analysis, reps: int = REPS, seed: int = 0) -> list[Aggregate]:
    """Per series of the table: runs, failed runs and the IQM of test error with its interval."""
    out = []
    for s in a.table.series:
        by_column = cells(a, s)
        strata = [x for x, _ in by_column.values() if x.size]
        runs = sum(x.size + failed for x, failed in by_column.values())
        failed = sum(f for _, f in by_column.values())
        if not strata:
            out.append(Aggregate(a.table.labels[s], runs, failed, None, None, None))
            continue
        boot = iqm(np.concatenate(resample(strata, reps, np.random.default_rng(seed)), axis=1), axis=1)
        out.append(Aggregate(a.table.labels[s], runs, failed, float(iqm(np.concatenate(strata))), *_percentile(boot)))
    return out


def _lower_share(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X < Y) over all pairs of the last axes' values, ties one half (x: (..., n), y: (..., m))."""
    less = (x[..., :, None] < y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return less + 0.5 * ties


def improvements(a: Analysis, reps: int = REPS, seed: int = 0) -> list[Improvement]:
    """P(X has lower test error than Y) for every pair of series, over the columns where both
    have completed runs."""
    out = []
    for sx, sy in itertools.combinations(a.table.series, 2):
        cx, cy = cells(a, sx), cells(a, sy)
        shared = [c for c in a.table.columns if c in cx and c in cy and cx[c][0].size and cy[c][0].size]
        if not shared:
            continue
        rng = np.random.default_rng(seed)
        point = np.mean([_lower_share(cx[c][0], cy[c][0]) for c in shared])
        boot = np.mean([_lower_share(*resample([cx[c][0], cy[c][0]], reps, rng)) for c in shared], axis=0)
        out.append(Improvement(a.table.labels[sx], a.table.labels[sy], tuple(shared), float(point), *_percentile(boot)))
    return out


def profile(a: Analysis, taus: np.ndarray, reps: int = 2000, seed: int = 0) -> dict:
    """label -> (fraction of runs with test error <= tau, its 95% band) at each tau, averaged over
    the series' columns; a failed run counts as never reaching any tau."""
    out = {}
    for s in a.table.series:
        strata = [np.concatenate([x, np.full(failed, np.inf)]) for x, failed in cells(a, s).values()]
        if not strata or not any(np.isfinite(x).any() for x in strata):
            continue
        rng = np.random.default_rng(seed)
        point = np.mean([(x[:, None] <= taus).mean(axis=0) for x in strata], axis=0)
        boot = np.mean([(x[..., None] <= taus).mean(axis=1) for x in resample(strata, reps, rng)], axis=0)
        low, high = np.percentile(boot, [100 * (1 - CONFIDENCE) / 2, 100 * (1 + CONFIDENCE) / 2], axis=0)
        out[a.table.labels[s]] = (point, low, high)
    return out
