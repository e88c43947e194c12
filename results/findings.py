"""The Findings: sentences written from a table's decided comparisons (results/analysis.py).

Each claim carries the interval its decision used and says exactly what the test showed:
"higher" and "lower" with the Holm-adjusted 95% interval, "equivalent within ±m points" with
the Holm-adjusted 90% interval of the TOST, "not distinguishable with n = 3 and 3" with what
the comparison could have detected, "untestable" with why.
"""
from __future__ import annotations

from .analysis import EQUIVALENT, HIGHER, LOWER, UNDECIDED, Analysis, Row, column_name
from .stats import Summary


def _ci(low, high, what: str = "95% CI") -> str:
    return f"{what} {low:.1f} to {high:.1f}"


def _p(p) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def cell(summary: Summary) -> str:
    """A cell's mean with its interval and n."""
    if summary.ci_low is None:
        return f"{summary.mean:.1f} % (n = {summary.n})"
    return f"{summary.mean:.1f} % ({_ci(summary.ci_low, summary.ci_high)}, n = {summary.n})"


def points(margin: float) -> str:
    return f"±{margin:g} point{'' if margin == 1 else 's'}"


def evidence(row: Row, margin: float) -> str:
    """What the comparison showed, with the interval and the adjusted p its verdict rests on."""
    r, n = row.result, f"n = {row.result.n_a} and {row.result.n_b}"
    if row.verdict in (HIGHER, LOWER):
        return f"{row.verdict}: {_ci(*row.ci_holm, 'Holm-adjusted 95% CI')}, Holm {_p(row.p_holm)}, {n}"
    if row.verdict == EQUIVALENT:
        return (f"equivalent within {points(margin)}: {_ci(*row.ci_equivalence, 'Holm-adjusted 90% CI')}, "
                f"TOST Holm {_p(row.p_tost_holm)}, {n}")
    if row.verdict == UNDECIDED:
        power = (f"this comparison detects about {row.detectable:.1f} points with 80 % power"
                 if row.detectable is not None else "both cells constant: no power to compute")
        return f"not distinguishable with {n} ({power}; {_ci(*row.ci_holm, 'Holm-adjusted 95% CI')}, Holm {_p(row.p_holm)})"
    why = "a cell needs two runs" if min(r.n_a, r.n_b) < 2 else "both cells constant"
    return f"untestable with {n} ({why})"


def _signed(x: float) -> str:
    return f"{'+' if x >= 0 else '−'}{abs(x):.1f}"


def _difference(row: Row, margin: float) -> str:
    return f"{row.a} {_signed(row.result.diff_mean)} points ({evidence(row, margin)})"


def findings(analysis: Analysis, cols_key: str) -> list[str]:
    """One sentence per column (the best, then every series against it), one per contrast, then
    one per series on the column effect."""
    t, m, out = analysis.table, analysis.margin, []
    for c in t.columns:
        if c not in analysis.best:
            out.append(f"{column_name(cols_key, c)}: no completed runs.")
            continue
        winners = sorted(analysis.best[c], key=t.series.index)
        lead = " and ".join(t.labels[s] for s in winners)
        text = (f"{column_name(cols_key, c)}: {lead} {'has' if len(winners) == 1 else 'have'} the lowest mean test "
                f"error, {cell(analysis.summaries[winners[0], c])}.")
        leaders = {t.labels[s] for s in winners}
        rows = [r for r in analysis.comparisons if r.kind == "vs best" and r.column == c and r.a not in leaders]
        if rows:
            text += " Against it: " + "; ".join(_difference(r, m) for r in rows) + "."
        out.append(text)
    for text, r in analysis.contrasts:
        out.append(f"Contrast {text}: {r.a} {column_name(cols_key, r.column)} minus {r.b} "
                   f"{column_name(cols_key, r.column if r.column_b is None else r.column_b)} = "
                   f"{_signed(r.result.diff_mean)} points ({evidence(r, m)}).")
    for r in analysis.effects:
        small, large = r.column
        out.append(f"{r.a}: {column_name(cols_key, small)} vs {column_name(cols_key, large)}: "
                   f"{_signed(r.result.diff_mean)} points of test error at {column_name(cols_key, small)} "
                   f"({evidence(r, m)}).")
    return out
