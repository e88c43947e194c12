"""How much a comparison can see, and how many seeds would settle it.

The power of the two-sided Welch t-test at level alpha for a true difference `diff`, with cells of
standard deviations sd_a, sd_b and n_a, n_b runs: the test statistic follows a noncentral t with
Welch-Satterthwaite degrees of freedom and noncentrality diff / se (the usual approximation, as in
G*Power). From it:

- `detectable_difference`: the smallest difference the comparison detects with 80% power at its
  current n ("this comparison detects about X points");
- `seeds_needed`: the seeds per side (the same n for both cells) a comparison needs for 80% power
  at the observed difference and spreads.

The report evaluates both at the threshold Holm's step-down compares the comparison's p with,
0.05 / (m - rank) (0.05 in a family of one, 0.05 / m for the smallest of m p-values;
stats.holm_thresholds): what a comparison detects in the family it is in.
"""
from __future__ import annotations

import math

from scipy import optimize, stats

from .stats import ALPHA

POWER = 0.8
MOST_SEEDS = 1000  # beyond this a difference is not worth chasing with seeds: reported as blank


def welch_power(diff: float, sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float = ALPHA) -> float | None:
    """Probability that a two-sided Welch test at `alpha` rejects when the true difference is `diff`."""
    va, vb = sd_a**2 / n_a, sd_b**2 / n_b
    if va + vb == 0 or n_a < 2 or n_b < 2:
        return None
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    critical = stats.t.ppf(1 - alpha / 2, df)
    ncp = abs(diff) / math.sqrt(va + vb)
    power = stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp)
    if not math.isfinite(power):  # scipy's nct is nan far out (ncp >> critical, large df): the normal limit there
        power = stats.norm.sf(critical - ncp) + stats.norm.cdf(-critical - ncp)
    return float(power)


def detectable_difference(sd_a: float | None, sd_b: float | None, n_a: int, n_b: int, power: float = POWER,
                          alpha: float = ALPHA) -> float | None:
    """The difference (points) a Welch test with these cells detects with probability `power`."""
    if sd_a is None or sd_b is None or welch_power(1.0, sd_a, sd_b, n_a, n_b, alpha) is None:
        return None
    se = math.sqrt(sd_a**2 / n_a + sd_b**2 / n_b)
    high = se
    while welch_power(high, sd_a, sd_b, n_a, n_b, alpha) < power:
        high *= 2
    return float(optimize.brentq(lambda d: welch_power(d, sd_a, sd_b, n_a, n_b, alpha) - power, 0.0, high,
                                 xtol=1e-10))


def seeds_needed(diff: float, sd_a: float | None, sd_b: float | None, power: float = POWER, alpha: float = ALPHA,
                 most: int = MOST_SEEDS) -> int | None:
    """The smallest n (per side, both cells) at which a Welch test reaches `power` for `diff` with
    these spreads; None when even `most` seeds do not (or the spread is zero or undefined)."""
    if sd_a is None or sd_b is None or sd_a == sd_b == 0:
        return None

    def enough(n):
        return welch_power(diff, sd_a, sd_b, n, n, alpha) >= power

    if not enough(most):
        return None
    low, high = 1, most  # power grows with n: bisect for the first n that is enough
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return max(high, 2)

