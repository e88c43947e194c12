"""Uncertainty for the report's numbers: a test error without its uncertainty is a wrong result.

- `summarize`: one cell (runs that differ only by seed) -> n, mean, std and a confidence interval of the mean.
- `compare`: two cells at one batch size -> difference of means, Welch CI of it and a two-sided p-value.
- `holm`: adjust the p-values of the comparisons made together, so that testing many pairs does not
  manufacture "significant" differences.
- `significant`: the one decision rule the report applies to an adjusted p-value.

Undefined quantities are None, never nan, so that a table cannot show a number that is not one.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
CI_METHODS = ("t", "bootstrap")
TESTS = ("welch", "permutation")


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    method: str


@dataclass(frozen=True)
class Comparison:
    n_a: int
    n_b: int
    diff_mean: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str


def _number(x) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def summarize(values, ci: str = "t", confidence: float = CONFIDENCE, seed: int = 0) -> Summary:
    """Mean of one cell with a `confidence` interval: Student t, or a seeded (reproducible) percentile bootstrap."""
    if ci not in CI_METHODS:
        raise ValueError(f"unknown ci {ci!r}; valid: {', '.join(map(repr, CI_METHODS))}")
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        return Summary(0, None, None, None, None, ci)
    mean = float(x.mean())
    if n < 2:
        return Summary(n, mean, None, None, None, ci)
    constant = np.ptp(x) == 0.0
    # Rounding can leave a constant sample with a std of 1e-17 instead of the exact 0 it has.
    std = 0.0 if constant else float(x.std(ddof=1))
    if constant:
        # Identical runs: every resample (and the t interval with s = 0) is the mean itself, while scipy's
        # t interval at scale 0 is nan.
        low = high = mean
    elif ci == "t":
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    else:
        res = stats.bootstrap((x,), np.mean, method="percentile", confidence_level=confidence,
                              n_resamples=9999, rng=np.random.default_rng(seed))
        low, high = res.confidence_interval
    return Summary(n, mean, std, float(low), float(high), ci)


def _mean_difference(x, y, axis):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def compare(a, b, test: str = "welch", confidence: float = CONFIDENCE) -> Comparison:
    """Cell a minus cell b: Welch CI of the difference of means and a two-sided p-value.

    test="welch": Welch's t-test (no equal-variance assumption: norms differ in seed sensitivity).
    test="permutation": exact permutation test of the difference of means, every split of the pooled runs
    enumerated; free of the normality assumption but coarse with few seeds: the smallest two-sided p is
    2 / C(n_a + n_b, n_a), i.e. 0.1 for 3 vs 3 runs (20 splits) and 1/3 for 2 vs 2 (6 splits), so with
    3 seeds per cell no permutation comparison can reach p < 0.05. The CI stays Welch's.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; valid: {', '.join(map(repr, TESTS))}")
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError(f"compare needs at least one value per cell, got n_a={x.size}, n_b={y.size}")
    diff = float(x.mean() - y.mean())
    if x.size < 2 or y.size < 2:
        return Comparison(x.size, y.size, diff, None, None, None, test)
    if np.ptp(x) == 0.0 and np.ptp(y) == 0.0:
        # Welch's standard error is 0 and its df 0/0: the test is undefined. scipy still answers (p=0, or
        # 1e-46 from rounding, with a zero-width CI when means differ; p nan, CI (0, 0) when equal), which
        # would invent certainty from two constants.
        low = high = p = None
    else:
        with warnings.catch_warnings():
            if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
                # scipy warns of "precision loss" for a constant cell, whose variance 0 is exact.
                warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
            res = stats.ttest_ind(x, y, equal_var=False)
        interval = res.confidence_interval(confidence_level=confidence)
        low, high, p = interval.low, interval.high, res.pvalue
    if test == "permutation":
        p = stats.permutation_test((x, y), _mean_difference, permutation_type="independent",
                                   n_resamples=np.inf, vectorized=True, alternative="two-sided").pvalue
    return Comparison(x.size, y.size, diff, _number(low), _number(high), _number(p), test)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in input order; None (undefined) entries stay None
    and do not count in the number of tests m.

    Hand-written because scipy has no Holm: scipy.stats.false_discovery_control does only BH/BY, which
    control the false discovery rate, not the family-wise error rate Holm controls.
    """
    defined = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(defined)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(defined):
        # max() over smaller p-values keeps the adjusted values monotone in the raw ones (step-down).
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = float(running)
    return adjusted


# Rounded because 1 - 0.95 is 0.050000000000000044 in binary, which would call p = 0.05 significant.
def significant(p_adjusted: float | None, alpha: float = round(1 - CONFIDENCE, 12)) -> bool:
    """An undefined p-value is never significant."""
    return p_adjusted is not None and p_adjusted < alpha
