"""Uncertainty for the report's numbers: a test error without its uncertainty is a wrong result.

- `summarize`: one cell (runs that differ only by seed) -> n, mean, std and a confidence interval of the mean.
- `compare`: two cells at one batch size -> difference of means, Welch CI of it and a two-sided p-value.
- `holm`: adjust the p-values of the comparisons made together, so that testing many pairs does not
  manufacture "significant" differences.
- `significant`: the one decision rule the report applies to an adjusted p-value.
- `holm_interval`: the interval of a difference at the level its Holm decision used, so that it
  excludes zero exactly when the adjusted p is significant; `holm_thresholds`: the level each p
  meets in Holm's step-down (alpha / (m - rank)), to plan power at.
- `tost` and `equivalence_interval`: two one-sided Welch tests against a margin: the only test
  that can say "equal within a point" (not significant is not equal).

Undefined quantities are None, never nan, so that a table cannot show a number that is not one.
"""
from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
CI_METHODS = ("t", "bootstrap")
TESTS = ("welch", "permutation")
# Rounded because 1 - 0.95 is 0.050000000000000044 in binary, which would call p = 0.05 significant.
ALPHA = round(1 - CONFIDENCE, 12)


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
    # The cells' standard deviations, for intervals at other levels, TOST and power (not compared:
    # two comparisons are equal when what they report is).
    sd_a: float | None = field(default=None, compare=False)
    sd_b: float | None = field(default=None, compare=False)

    @property
    def se(self) -> float | None:
        """Welch's standard error of the difference; None when undefined or zero."""
        if self.sd_a is None or self.sd_b is None:
            return None
        se = math.sqrt(self.sd_a**2 / self.n_a + self.sd_b**2 / self.n_b)
        return se if se > 0 else None

    @property
    def df(self) -> float | None:
        """Welch-Satterthwaite degrees of freedom."""
        if self.se is None:
            return None
        va, vb = self.sd_a**2 / self.n_a, self.sd_b**2 / self.n_b
        return (va + vb) ** 2 / (va**2 / (self.n_a - 1) + vb**2 / (self.n_b - 1))


def _number(x) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def summarize(values, ci: str = "t", confidence: float = CONFIDENCE, seed: int = 0, bounds=None) -> Summary:
    """Mean of one cell with a `confidence` interval: Student t, or a seeded (reproducible) percentile bootstrap.

    `bounds` (low, high): the range the quantity can take (an error rate: 0 to 100). A t interval is
    truncated to it: the true mean lies in the range, so the truncated interval covers it exactly
    when the untruncated one does (same coverage, no impossible values). The percentile bootstrap
    stays inside the values' range by construction."""
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
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
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
    sds = tuple(0.0 if np.ptp(v) == 0.0 else float(v.std(ddof=1)) for v in (x, y))
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
    return Comparison(x.size, y.size, diff, _number(low), _number(high), _number(p), test, *sds)


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


def holm_thresholds(p_values: Sequence[float | None], alpha: float = ALPHA) -> list[float | None]:
    """The threshold Holm's step-down compares each p with: alpha / (m - rank) for the rank-th smallest
    of the m defined p-values (0-based; ties in input order, as `holm` sorts them); None stays None. The
    level to plan a comparison's power at: the family is the same, only the comparison's n would grow."""
    defined = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    for rank, (_, i) in enumerate(defined):
        out[i] = alpha / (len(defined) - rank)
    return out


def significant(p_adjusted: float | None, alpha: float = ALPHA) -> bool:
    """An undefined p-value is never significant."""
    return p_adjusted is not None and p_adjusted < alpha


def welch_interval(c: Comparison, confidence: float) -> tuple[float | None, float | None]:
    """Welch's interval of the difference at any `confidence`."""
    if c.se is None:
        return None, None
    half = float(stats.t.ppf((1 + confidence) / 2, c.df)) * c.se
    return c.diff_mean - half, c.diff_mean + half


def adjusted_level(p: float | None, p_adjusted: float | None, alpha: float = ALPHA) -> float | None:
    """The level a p-value is held to after adjustment: alpha * p / p_adjusted. A test's p is below
    it exactly when the adjusted p is below alpha (for Holm: alpha / (m - rank) at its step, less
    where the step-down's running maximum applies)."""
    if p is None or p_adjusted is None:
        return None
    return alpha if p_adjusted == 0 else alpha * p / p_adjusted


def holm_interval(c: Comparison, p_adjusted: float | None, a=None, b=None,
                  alpha: float = ALPHA) -> tuple[float | None, float | None]:
    """The interval of a - b that the Holm decision used: the test's own interval at the adjusted
    level (`adjusted_level`), so it excludes zero exactly when the Holm-adjusted p is below alpha.
    Welch: the Welch interval at that level. Permutation (`a`, `b`: the cells' values): the shifts
    the permutation test does not reject at that level (`permutation_interval`)."""
    level = adjusted_level(c.p_value, p_adjusted, alpha)
    if level is None:
        return None, None
    if c.test == "permutation":
        return permutation_interval(a, b, level)
    return welch_interval(c, 1 - level)


def permutation_interval(a, b, level: float) -> tuple[float | None, float | None]:
    """The shifts d for which the exact permutation test of (a - d) against b has p >= `level`
    (test inversion), found by bisection on each side of the observed difference. None on a side
    the test cannot bound: with 3 vs 3 runs no p is below 0.1, so no shift is ever rejected at 0.05.

    Every split of the pooled runs is enumerated once; under a shift d each split's difference of
    means moves linearly in d, so p(d) costs one pass over the splits."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled, n_a, n_b = np.concatenate([x, y]), x.size, y.size
    groups = np.array(list(itertools.combinations(range(pooled.size), n_a)))
    in_a = np.zeros((len(groups), pooled.size), dtype=bool)
    in_a[np.arange(len(groups))[:, None], groups] = True
    base = pooled @ in_a.T / n_a - pooled @ (~in_a).T / n_b
    from_x = in_a[:, :n_a].sum(axis=1)
    slope = from_x / n_a - (n_a - from_x) / n_b  # d(split difference)/d(shift), 1 for the observed split
    diff = float(x.mean() - y.mean())
    scale = max(float(np.ptp(pooled)), abs(diff), 1e-9)

    def p_at(d):  # scipy's two-sided p: twice the smaller one-sided share, at most 1
        shifted, observed, tol = base - d * slope, diff - d, 1e-9 * scale
        return min(1.0, 2 * min(np.mean(shifted >= observed - tol), np.mean(shifted <= observed + tol)))

    ends = []
    for sign in (-1, 1):
        far = scale
        while p_at(diff + sign * far) >= level:
            far *= 2
            if far > 1e6 * scale:
                ends.append(None)
                break
        else:
            near = 0.0
            for _ in range(80):
                mid = (near + far) / 2
                near, far = (mid, far) if p_at(diff + sign * mid) >= level else (near, mid)
            ends.append(diff + sign * near)
    return ends[0], ends[1]


def tost(c: Comparison, margin: float) -> float | None:
    """Two one-sided Welch tests of |a - b| < margin: the larger of the two one-sided p-values.
    Below alpha, the difference is within +-margin (equivalence); None when undefined."""
    if c.se is None:
        return None
    lower = stats.t.sf((c.diff_mean + margin) / c.se, c.df)  # H0: diff <= -margin
    upper = stats.t.cdf((c.diff_mean - margin) / c.se, c.df)  # H0: diff >= +margin
    return float(max(lower, upper))


def equivalence_interval(c: Comparison, p_tost: float | None, p_tost_adjusted: float | None,
                         alpha: float = ALPHA) -> tuple[float | None, float | None]:
    """The interval TOST decides by: Welch's at 1 - 2 * (adjusted level) (90% unadjusted), which
    lies inside +-margin exactly when the adjusted TOST p is below alpha."""
    level = adjusted_level(p_tost, p_tost_adjusted, alpha)
    return (None, None) if level is None else welch_interval(c, 1 - 2 * level)
