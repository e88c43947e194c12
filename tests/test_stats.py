"""results.stats, results.power and results.aggregate against values computed here from the textbook formulas
(or a fixed-seed simulation), and against reference values from statsmodels and rliable, not from the code under
test."""
import dataclasses
import itertools
import math
import warnings

import numpy as np
import pytest
from scipy.stats import t as student_t

from results.power import detectable_difference, seeds_needed, welch_power
from results.stats import (CONFIDENCE, Comparison, Summary, compare, equivalence_interval, holm, holm_interval,
                           holm_thresholds, permutation_interval, significant, summarize, tost)

CELL = [23.1, 24.0, 22.7, 23.8, 24.4]          # test errors (%) of one cell, 5 seeds
A = [21.3, 21.9, 22.4, 21.6]                   # two cells with different n and spread: Welch != Student
B = [23.0, 25.8, 22.1, 24.9, 26.3, 23.7]


def mean_sd(xs):
    n = len(xs)
    m = sum(xs) / n
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))


def welch_by_formula(a, b, confidence=0.95):
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))   # Welch-Satterthwaite
    se = math.sqrt(va + vb)
    diff = ma - mb
    half = student_t.ppf((1 + confidence) / 2, df) * se
    p = 2 * student_t.sf(abs(diff / se), df)
    return diff, diff - half, diff + half, p


def exact_permutation_p(a, b):
    """Two-sided: the share of all splits of the pooled runs whose |difference of means| reaches the observed."""
    pooled, k = list(a) + list(b), len(a)
    observed = abs(np.mean(a) - np.mean(b))
    diffs = []
    for idx in itertools.combinations(range(len(pooled)), k):
        left = [pooled[i] for i in idx]
        right = [pooled[i] for i in range(len(pooled)) if i not in idx]
        diffs.append(abs(np.mean(left) - np.mean(right)))
    return sum(d >= observed - 1e-9 for d in diffs) / len(diffs)


def assert_no_nan(result):
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        assert not (isinstance(value, float) and math.isnan(value)), f"{field.name} is nan"


# --- summarize -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_t_interval_matches_formula(confidence):
    m, s = mean_sd(CELL)
    half = student_t.ppf((1 + confidence) / 2, len(CELL) - 1) * s / math.sqrt(len(CELL))
    got = summarize(CELL, confidence=confidence)
    assert got == Summary(5, pytest.approx(m), pytest.approx(s), pytest.approx(m - half),
                          pytest.approx(m + half), "t")
    assert all(type(v) is float for v in (got.mean, got.std, got.ci_low, got.ci_high))
    assert type(got.n) is int


def test_summary_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        summarize(CELL).mean = 0.0


@pytest.mark.parametrize("ci", ["t", "bootstrap"])
def test_one_run_has_no_interval_and_no_runs_no_mean(ci):
    assert summarize([23.5], ci=ci) == Summary(1, 23.5, None, None, None, ci)
    assert summarize([], ci=ci) == Summary(0, None, None, None, None, ci)


def test_bootstrap_is_seeded_and_plausible():
    values = [23.1, 24.0, 22.7, 23.8, 24.4, 25.2]
    first = summarize(values, ci="bootstrap", seed=3)
    assert first == summarize(values, ci="bootstrap", seed=3)
    assert (first.ci_low, first.ci_high) != (summarize(values, ci="bootstrap", seed=4).ci_low,
                                             summarize(values, ci="bootstrap", seed=4).ci_high)
    assert first.method == "bootstrap"
    assert first.mean == pytest.approx(np.mean(values))
    assert first.std == pytest.approx(np.std(values, ddof=1))
    assert min(values) < first.ci_low < first.mean < first.ci_high < max(values)
    # The interval is of the mean, not of the runs: much narrower than their range.
    assert first.ci_high - first.ci_low < 0.75 * (max(values) - min(values))


@pytest.mark.parametrize("ci", ["t", "bootstrap"])
def test_constant_cell_has_zero_width_interval_not_nan(ci):
    got = summarize([0.1, 0.1, 0.1], ci=ci)   # numpy's std of these is 1.7e-17, not 0: rounding must not leak
    assert_no_nan(got)
    assert got.std == 0.0
    assert got.ci_low == got.ci_high == got.mean == pytest.approx(0.1)


def test_unknown_ci_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"'bca'.*'t'.*'bootstrap'"):
        summarize(CELL, ci="bca")


# --- compare -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_welch_matches_formula(confidence):
    diff, low, high, p = welch_by_formula(A, B, confidence)
    got = compare(A, B, confidence=confidence)
    assert got == Comparison(4, 6, pytest.approx(diff), pytest.approx(low), pytest.approx(high),
                             pytest.approx(p), "welch")
    assert all(type(v) is float for v in (got.diff_mean, got.ci_low, got.ci_high, got.p_value))


def test_welch_is_not_students_pooled_test():
    # The pooled-variance p for the same data: Welch must differ from it on these unequal cells.
    (ma, sa), (mb, sb) = mean_sd(A), mean_sd(B)
    na, nb = len(A), len(B)
    sp = math.sqrt(((na - 1) * sa**2 + (nb - 1) * sb**2) / (na + nb - 2))
    p_pooled = 2 * student_t.sf(abs(ma - mb) / (sp * math.sqrt(1 / na + 1 / nb)), na + nb - 2)
    assert compare(A, B).p_value != pytest.approx(p_pooled, rel=1e-3)


def test_welch_with_one_constant_cell_is_defined_and_quiet():
    a, b = [0.1, 0.1, 0.1], [22.0, 23.5, 21.8, 24.1]
    diff, low, high, p = welch_by_formula(a, b)   # df reduces to n_b - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a constant cell is ordinary (e.g. a diverged config), not a precision issue
        got = compare(a, b)
    assert got == Comparison(3, 4, pytest.approx(diff), pytest.approx(low), pytest.approx(high),
                                       pytest.approx(p), "welch")


@pytest.mark.parametrize("a, b", [([10, 11, 12], [20, 21, 22]), ([10.2, 12.9, 11.4], [11.8, 13.1, 10.7]),
                                  ([21.3, 21.9, 22.4, 21.6], [23.0, 22.1, 24.9, 21.7]),
                                  # 12870 splits, more than scipy's default 9999 resamples: still exact
                                  ([21.3, 21.9, 22.4, 21.6, 22.8, 21.1, 22.0, 23.1],
                                   [23.0, 22.1, 24.9, 21.7, 22.6, 23.4, 22.9, 24.2])])
def test_permutation_p_matches_enumeration(a, b):
    got = compare(a, b, test="permutation")
    assert got.p_value == pytest.approx(exact_permutation_p(a, b))
    assert got.test == "permutation"
    welch = compare(a, b)
    assert (got.ci_low, got.ci_high, got.diff_mean) == (welch.ci_low, welch.ci_high, welch.diff_mean)


def test_permutation_floor():
    assert compare([10, 11, 12], [20, 21, 22], test="permutation").p_value == pytest.approx(0.1)
    assert compare([20, 21, 22], [10, 11, 12], test="permutation").p_value == pytest.approx(0.1)
    assert compare([10, 11], [20, 21], test="permutation").p_value == pytest.approx(1 / 3)


@pytest.mark.parametrize("test", ["welch", "permutation"])
def test_fewer_than_two_runs_gives_no_ci_or_p(test):
    assert compare([21.0], [22.0, 23.0, 24.0], test=test) == Comparison(1, 3, -2.0, None, None, None, test)
    assert compare([22.0, 23.0, 24.0], [21.0], test=test) == Comparison(3, 1, 2.0, None, None, None, test)


def test_empty_cell_is_an_error():
    with pytest.raises(ValueError, match="n_a=0"):
        compare([], [1.0, 2.0])


def test_two_constant_cells_welch_is_undefined_not_certain():
    for b, perm_p in (([0.2, 0.2, 0.2], 0.1), ([0.1, 0.1, 0.1], 1.0)):
        welch = compare([0.1, 0.1, 0.1], b)
        assert_no_nan(welch)
        assert (welch.ci_low, welch.ci_high, welch.p_value) == (None, None, None)
        assert welch.diff_mean == pytest.approx(0.1 - b[0])
        perm = compare([0.1, 0.1, 0.1], b, test="permutation")
        assert_no_nan(perm)
        assert (perm.ci_low, perm.ci_high) == (None, None)
        assert perm.p_value == pytest.approx(perm_p)


def test_unknown_test_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"'mannwhitney'.*'welch'.*'permutation'"):
        compare(A, B, test="mannwhitney")


# --- holm and significant ------------------------------------------------------------------------------

def test_holm_hand_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_passes_none_through_and_does_not_count_it():
    got = holm([None, 0.01, None, 0.04, 0.03, 0.005])
    assert got[0] is None and got[2] is None
    assert got[1:2] + got[3:] == pytest.approx([0.03, 0.06, 0.06, 0.02])   # m = 4, not 6


def test_holm_thresholds_are_the_step_down_levels():
    # The k-th smallest of m p-values (0-based) is compared with alpha / (m - k); None is not a test.
    assert holm_thresholds([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.05 / 3, 0.05, None, 0.05 / 2, 0.05 / 4])
    assert holm_thresholds([0.2], alpha=0.1) == [0.1] and holm_thresholds([]) == []


def test_holm_caps_at_one_and_handles_empty():
    assert holm([0.3, 0.8, 0.9]) == pytest.approx([0.9, 1.0, 1.0])
    assert holm([]) == []
    assert holm([None]) == [None]


def test_holm_rejects_what_the_step_down_procedure_rejects():
    # Textbook Holm: sort p ascending, reject H_(k) while p_(k) <= alpha / (m - k + 1), stop at the first failure.
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, size=int(rng.integers(1, 8))))
        for alpha in (0.01, 0.05):
            rejected = set()
            for k, i in enumerate(np.argsort(p)):
                if p[i] > alpha / (len(p) - k):
                    break
                rejected.add(int(i))
            assert {i for i, q in enumerate(holm(p)) if q <= alpha} == rejected


def test_significant():
    assert significant(0.049) and not significant(0.05) and not significant(0.2)
    assert not significant(None)
    assert significant(0.009, alpha=0.01) and not significant(0.02, alpha=0.01)
    assert significant(holm([0.025, 0.5])[0] - 1e-12) and not significant(holm([0.025, 0.5])[0])   # exactly 0.05
    assert 1 - CONFIDENCE == pytest.approx(0.05)


# --- bounded intervals ---------------------------------------------------------------------------------

def test_t_interval_of_an_error_rate_is_truncated_to_its_range_with_the_mean_inside():
    for values in ([0.5, 1.0, 60.0], [99.0, 99.5, 40.0]):   # a diverged seed: the plain t interval leaves [0, 100]
        m, s = mean_sd(values)
        half = student_t.ppf(0.975, 2) * s / math.sqrt(3)
        assert m - half < 0 or m + half > 100
        got = summarize(values, bounds=(0.0, 100.0))
        assert (got.ci_low, got.ci_high) == (pytest.approx(max(m - half, 0.0)), pytest.approx(min(m + half, 100.0)))
        assert 0.0 <= got.ci_low <= got.mean <= got.ci_high <= 100.0
    assert summarize(CELL, bounds=(0.0, 100.0)) == summarize(CELL)   # inside the range: unchanged


# --- intervals the decisions used: Holm-adjusted, TOST, permutation ------------------------------------

def welch_parts(a, b):
    (ma, sa), (mb, sb) = mean_sd(a), mean_sd(b)
    va, vb = sa**2 / len(a), sb**2 / len(b)
    return ma - mb, math.sqrt(va + vb), (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))


def test_holm_interval_is_welchs_at_the_adjusted_level_and_excludes_zero_exactly_when_holm_rejects():
    rng = np.random.default_rng(1)
    decided = set()
    for _ in range(60):
        cells = [list(rng.normal(20 + shift, 1.0, size=3)) for shift in rng.uniform(0, 6, size=4)]
        best = cells[0]
        results = [compare(c, best) for c in cells[1:]]
        adjusted = holm([r.p_value for r in results])
        for cell, r, q in zip(cells[1:], results, adjusted):
            diff, se, df = welch_parts(cell, best)
            level = 0.05 * r.p_value / q   # the level Holm's step-down held this p to
            half = student_t.ppf(1 - level / 2, df) * se
            low, high = holm_interval(r, q)
            assert (low, high) == (pytest.approx(diff - half), pytest.approx(diff + half))
            excludes_zero = low > 0 or high < 0
            assert excludes_zero == (q < 0.05)
            decided.add(excludes_zero)
    assert decided == {True, False}   # both kinds of decision were exercised


def test_tost_matches_two_one_sided_tests_by_formula():
    a, b = [10.02, 10.12, 9.92, 10.07, 9.97], [10.0, 10.1, 9.9, 10.05, 9.95]
    diff, se, df = welch_parts(a, b)
    for margin in (1.0, 0.2, 0.01):
        p_lower = student_t.sf((diff + margin) / se, df)    # H0: diff <= -margin
        p_upper = student_t.cdf((diff - margin) / se, df)   # H0: diff >= +margin
        got = tost(compare(a, b), margin)
        assert got == pytest.approx(max(p_lower, p_upper))
        half = student_t.ppf(0.95, df) * se   # TOST at 0.05 is the 90% interval inside +-margin
        low, high = equivalence_interval(compare(a, b), got, got)
        assert (low, high) == (pytest.approx(diff - half), pytest.approx(diff + half))
        assert (got < 0.05) == (-margin < low and high < margin)
    assert tost(compare([1.0, 1.0], [2.0, 2.0]), 1.0) is None   # undefined, not certain


def test_permutation_interval_is_the_set_of_shifts_the_test_does_not_reject():
    a, b = [21.3, 21.9, 22.4, 21.6, 23.0], [23.0, 25.8, 22.1, 24.9, 26.3]
    low, high = permutation_interval(a, b, 0.05)
    # By brute force: every shift on a fine grid, tested by full enumeration of the 252 splits.
    splits = np.array(list(itertools.combinations(range(10), 5)))

    def p_shifted(d):
        pooled = np.array([x - d for x in a] + b)
        left = pooled[splits].mean(axis=1)
        diffs = np.abs(left - (pooled.sum() - 5 * left) / 5)
        return (diffs >= diffs[0] - 1e-9).mean()   # splits[0] is the observed one (a first)

    grid = np.arange(-8.0, 4.0, 0.01)
    kept = [d for d in grid if p_shifted(d) >= 0.05]
    assert low == pytest.approx(min(kept), abs=0.011) and high == pytest.approx(max(kept), abs=0.011)
    # 3 vs 3: no p below 0.1, so at 0.05 no shift is ever rejected: nothing bounds the difference
    assert permutation_interval([10, 11, 12], [20, 21, 22], 0.05) == (None, None)


# --- power and the seeds a comparison needs ------------------------------------------------------------

def power_by_integral(diff, sa, sb, na, nb, alpha=0.05):
    """Welch's power from the definition of the noncentral t: T = (Z + d) / sqrt(V / df), V ~ chi2(df)."""
    from scipy.integrate import quad
    from scipy.stats import chi2, norm
    va, vb = sa**2 / na, sb**2 / nb
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    c, d = student_t.ppf(1 - alpha / 2, df), abs(diff) / math.sqrt(va + vb)
    return quad(lambda v: (norm.cdf(d - c * math.sqrt(v / df)) + norm.cdf(-d - c * math.sqrt(v / df)))
                * chi2.pdf(v, df), chi2.ppf(1e-12, df), chi2.isf(1e-12, df), limit=200)[0]


@pytest.mark.parametrize("diff,sa,sb,na,nb", [(1.5, 1.0, 1.0, 3, 3), (2.0, 0.6, 1.4, 3, 5), (0.4, 0.8, 0.5, 10, 10)])
def test_welch_power_matches_the_noncentral_t_by_integration(diff, sa, sb, na, nb):
    assert welch_power(diff, sa, sb, na, nb) == pytest.approx(power_by_integral(diff, sa, sb, na, nb), abs=1e-6)


def test_detectable_difference_has_80_percent_power():
    for sa, sb, n in ((1.0, 1.0, 3), (0.6, 1.4, 5), (2.0, 0.5, 8)):
        d = detectable_difference(sa, sb, n, n)
        assert power_by_integral(d, sa, sb, n, n) == pytest.approx(0.8, abs=1e-5)
    assert detectable_difference(0.0, 0.0, 3, 3) is None and detectable_difference(None, 1.0, 3, 3) is None


def test_seeds_needed_is_the_first_n_with_80_percent_power_and_a_simulation_agrees():
    diff, sa, sb = 1.2, 1.0, 1.3
    n = seeds_needed(diff, sa, sb)
    assert power_by_integral(diff, sa, sb, n, n) >= 0.8 > power_by_integral(diff, sa, sb, n - 1, n - 1)
    # Welch tests on simulated cells of that size reject about 80% of the time (fixed seed).
    rng = np.random.default_rng(7)
    x, y = rng.normal(diff, sa, size=(20000, n)), rng.normal(0.0, sb, size=(20000, n))
    from scipy.stats import ttest_ind
    rejected = (ttest_ind(x, y, axis=1, equal_var=False).pvalue < 0.05).mean()
    assert rejected == pytest.approx(power_by_integral(diff, sa, sb, n, n), abs=0.015)
    assert all(welch_power(diff, sa, sb, m, m) == pytest.approx(1.0) for m in (250, 300, 375))  # scipy's nct: nan
    assert seeds_needed(0.001, 1.0, 1.0) is None   # beyond MOST_SEEDS: not worth chasing
    assert seeds_needed(1.0, 0.0, 0.0) is None


# With equal spreads and equal n, Welch's test is Student's (df = 2n - 2, the same standard error), so
# statsmodels' TTestIndPower states the same power. Reference values from statsmodels 0.15.0:
#   TTestIndPower().solve_power(effect_size=es, alpha=0.05, power=0.8, ratio=1.0)   -> n per side
#   TTestIndPower().solve_power(nobs1=n, alpha=alpha, power=0.8, ratio=1.0)        -> detectable effect size
#   TTestIndPower().power(effect_size=1.2, nobs1=6, alpha=0.05, ratio=1.0)
STATSMODELS_N = {0.5: 63.76561058891169, 1.0: 16.714722446954024, 1.5: 8.060294283896704, 2.5: 3.7618131422306145}
STATSMODELS_DETECTABLE = {(3, 0.05): 3.070892269599019, (5, 0.05): 2.024440145655355, (10, 0.05): 1.324947368330822,
                          (3, 0.025): 3.742784113957512, (4, 0.05 / 3): 3.0376271412391436}


def test_power_and_seeds_agree_with_statsmodels_ttestindpower():
    for es, n in STATSMODELS_N.items():
        assert seeds_needed(2.0 * es, 2.0, 2.0) == math.ceil(n)   # difference 2 es at sd 2: effect size es
    for (n, alpha), es in STATSMODELS_DETECTABLE.items():
        # statsmodels' root finder stops within about 4e-7 (relative) of the root; ours within 1e-10
        assert detectable_difference(1.5, 1.5, n, n, alpha=alpha) == pytest.approx(1.5 * es, rel=1e-6)
    assert welch_power(1.2, 1.0, 1.0, 6, 6) == pytest.approx(0.46752301142226294, rel=1e-9)


# --- aggregates across columns: rliable's statistics -----------------------------------------------------

# Test errors (%), runs x columns (batch 2, 8, 32), of two series. Reference values from rliable 1.2.0
# (with arch 7.2.0), lower error taken as better by negating the scores:
#   metrics.aggregate_iqm(X), metrics.probability_of_improvement(-X, -Y)
#   library.get_interval_estimates({"X": X, "Y": Y}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=50000)
#   library.get_interval_estimates({"XY": (-X, -Y)}, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
#                                  reps=50000)
RL_X = [[20.1, 18.3, 19.0], [21.4, 19.0, 18.2], [19.8, 18.8, 19.9], [22.0, 19.6, 18.7], [20.6, 18.8, 19.4]]
RL_Y = [[21.0, 19.0, 18.9], [22.5, 20.1, 19.5], [20.6, 18.8, 20.3], [23.9, 21.2, 19.4], [21.8, 19.9, 21.0]]
RLIABLE_IQM = {"X": (19.37777777777778, 19.1, 19.72222222222222), "Y": (20.333333333333332, 19.83333333333333, 20.86666666666667)}
RLIABLE_IMPROVEMENT = (0.7933333333333333, 0.6133333333333333, 0.9333333333333333)


def _analysis_of(series: dict, columns, failed=None):
    """The slice of an Analysis that results.aggregate reads: per (series, column) its runs, the
    completed ones (`chosen`) and their errors; `failed`: {(series, column): seeds that did not complete}."""
    from types import SimpleNamespace as NS
    cells = {}
    for name, matrix in series.items():
        for j, c in enumerate(columns):
            done = [NS(seed=i, test_error=row[j]) for i, row in enumerate(matrix)]
            lost = [NS(seed=len(done) + i, test_error=None) for i in range((failed or {}).get((name, c), 0))]
            cells[name, c] = NS(runs=done + lost, chosen=done, errors=[r.test_error for r in done])
    return NS(table=NS(series=list(series), columns=list(columns), cells=cells, labels={s: s for s in series}))


def test_iqm_its_stratified_bootstrap_and_the_probability_of_improvement_agree_with_rliable():
    from results.aggregate import aggregates, improvements
    a = _analysis_of({"X": RL_X, "Y": RL_Y}, (2, 8, 32))
    for g in aggregates(a):
        iqm, low, high = RLIABLE_IQM[g.series]
        assert (g.runs, g.failed, g.iqm) == (15, 0, pytest.approx(iqm, rel=1e-12))
        # Bootstrap intervals: 10,000 and 50,000 resamples agree to well under the 0.1-0.3 points by which an
        # unstratified (pooled) or a whole-run bootstrap would differ here.
        assert (g.ci_low, g.ci_high) == (pytest.approx(low, abs=0.04), pytest.approx(high, abs=0.04))
    (imp,) = improvements(a)
    assert (imp.x, imp.y, imp.columns) == ("X", "Y", (2, 8, 32))
    assert imp.probability == pytest.approx(RLIABLE_IMPROVEMENT[0], rel=1e-12)
    assert (imp.ci_low, imp.ci_high) == (pytest.approx(RLIABLE_IMPROVEMENT[1], abs=0.02),
                                         pytest.approx(RLIABLE_IMPROVEMENT[2], abs=0.02))


def test_failed_runs_are_counted_and_never_reach_the_profile():
    from results.aggregate import aggregates, profile
    a = _analysis_of({"X": RL_X, "Y": RL_Y}, (2, 8, 32), failed={("Y", 32): 2})
    by = {g.series: g for g in aggregates(a)}
    assert (by["Y"].runs, by["Y"].failed, by["Y"].failure_rate) == (17, 2, pytest.approx(2 / 17))
    assert by["Y"].iqm == pytest.approx(RLIABLE_IQM["Y"][0])   # over the completed runs
    # rliable's performance profile (fraction of runs above tau, per task, averaged), with error <= tau as
    # success and a failed run never succeeding: at batch 32, Y has 7 runs of which 5 completed.
    fractions = profile(a, np.array([19.0, 100.0]))
    y_by_column = [np.mean(np.array(RL_Y)[:, 0] <= 19.0), np.mean(np.array(RL_Y)[:, 1] <= 19.0),
                   np.sum(np.array(RL_Y)[:, 2] <= 19.0) / 7]
    assert fractions["Y"][0][0] == pytest.approx(np.mean(y_by_column))
    assert fractions["Y"][0][1] == pytest.approx((1 + 1 + 5 / 7) / 3) and fractions["X"][0][1] == 1.0


def test_the_seeds_a_study_needs_come_from_a_sweeps_spread(tmp_path, capsys):
    """`python -m results.seeds`: cells of known spread; the seeds per side for 1 point at 80 %
    power equal the smallest n at which the noncentral t (equal n and sd: df 2n - 2, noncentrality
    1 / (sd * sqrt(2 / n))) rejects a two-sided test at 0.05 with probability 0.8 (scipy)."""
    from scipy import stats as st

    from results import seeds

    rows = ["norm.kind,data.batch_size,seed,status,test_error,val_error,best_epoch,images_per_second,path"]
    for kind, errors in (("bn", (20.0, 20.5, 21.0)), ("gn", (22.0, 23.0, 24.0))):  # sd 0.5 and 1.0
        rows += [f"{kind},2,{s},completed,{e},0,1,1,x" for s, e in enumerate(errors)]
    rows.append("in,2,0,failed,,,,,x")
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    assert seeds.main([str(tmp_path / "runs.csv")]) == 0
    out = capsys.readouterr().out

    def independent(sd):
        def power(n):
            df, nc = 2 * n - 2, 1.0 / (sd * (2 / n) ** 0.5)
            t = st.t.ppf(0.975, df)
            return st.nct.sf(t, df, nc) + st.nct.cdf(-t, df, nc)
        return next(n for n in range(2, 1000) if power(n) >= 0.8)

    assert "2 cells with 2+ seeds: seed-to-seed sd of test error 0.50 to 1.00 points, median 0.75" in out
    assert f"at the widest sd (1.00): {independent(1.0)} seeds per side" in out
    assert f"at the median sd (0.75): {independent(0.75)} seeds per side" in out
