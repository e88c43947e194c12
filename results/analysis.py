"""What a table's numbers support: per cell a confidence interval, per column the best series
and which series are statistically tied with it, per series the effect of the column (the
batch size) from its smallest to its largest value, and the Findings written from them.

Every comparison of a table is corrected together (Holm), so a ranking is only claimed where
the data support it; with one run per cell nothing can be tested, and the Findings say so.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import stats
from .series import Table, is_numeric


@dataclass
class Row:
    """One comparison: `a` minus `b` at a column, or a series from one column to another."""

    facet: str
    column: object
    a: str
    b: str
    kind: str  # "vs best", "vs baseline" or "column effect"
    result: stats.Comparison
    p_holm: float | None = None

    @property
    def significant(self) -> bool:
        return stats.significant(self.p_holm)


@dataclass
class Analysis:
    table: Table
    summaries: dict  # (series, column) -> stats.Summary
    best: dict  # column -> set of best series (lowest mean)
    comparisons: list  # Row: vs best and vs baseline, Holm over all of them
    effects: list  # Row: per series, the column effect (smallest vs largest column), Holm over them
    baseline: tuple | None

    def tied(self, series, column) -> bool:
        """Not significantly different from the best at this column (or not testable)."""
        if series in self.best.get(column, ()):
            return False
        row = next((r for r in self.comparisons if r.kind == "vs best" and r.column == column
                    and r.a == self.table.labels[series]), None)
        return row is not None and not row.significant


def _holm(rows: list[Row]) -> None:
    for row, p in zip(rows, stats.holm([r.result.p_value for r in rows]), strict=True):
        row.p_holm = p


def find_baseline(table: Table, baseline: str | None):
    """The series a `baseline=` names: by its label, or by its norm kind when only one series has it."""
    if not baseline:
        return None
    by_label = [s for s in table.series if table.labels[s] == baseline]
    by_kind = [s for s in table.series if dict(s).get("norm.kind") == baseline]
    if len(by_label) == 1:
        return by_label[0]
    if len(by_kind) == 1:
        return by_kind[0]
    raise ValueError(f"baseline={baseline}: no single series is named so"
                     f"{' in ' + table.title if table.title else ''}; series: {', '.join(table.labels.values())}")


def analyse(table: Table, ci: str = "t", test: str = "welch", baseline: str | None = None) -> Analysis:
    summaries = {key: stats.summarize(cell.errors, ci=ci) for key, cell in table.cells.items()}
    base = find_baseline(table, baseline)
    best, comparisons = {}, []
    for c in table.columns:
        means = {s: summaries[s, c].mean for s in table.series if summaries[s, c].mean is not None}
        if not means:
            continue
        lowest = min(means.values())
        best[c] = {s for s, m in means.items() if m == lowest}
        winner = sorted(best[c], key=table.series.index)[0]
        for s in table.series:
            if s in means and s != winner:
                comparisons.append(Row(table.title, c, table.labels[s], table.labels[winner], "vs best",
                                       stats.compare(table.cells[s, c].errors, table.cells[winner, c].errors, test=test)))
            if base is not None and s in means and s != base and base in means:
                comparisons.append(Row(table.title, c, table.labels[s], table.labels[base], "vs baseline",
                                       stats.compare(table.cells[s, c].errors, table.cells[base, c].errors, test=test)))
    _holm(comparisons)
    effects = []
    if len(table.columns) >= 2 and is_numeric(table.columns):
        small, large = table.columns[0], table.columns[-1]
        for s in table.series:
            a, b = table.cells[s, small].errors, table.cells[s, large].errors
            if a and b:
                effects.append(Row(table.title, (small, large), table.labels[s], table.labels[s], "column effect",
                                   stats.compare(a, b, test=test)))
        _holm(effects)
    return Analysis(table, summaries, best, comparisons, effects, base)


# ---------------------------------------------------------------------------------------
# Findings: sentences written from the numbers
# ---------------------------------------------------------------------------------------
def _ci(low, high) -> str:
    return f"95% CI {low:.1f} to {high:.1f}"


def _p(p) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _cell(summary: stats.Summary) -> str:
    if summary.ci_low is None:
        return f"{summary.mean:.1f} % (n = {summary.n})"
    return f"{summary.mean:.1f} % ({_ci(summary.ci_low, summary.ci_high)}, n = {summary.n})"


def _difference(row: Row) -> str:
    r = row.result
    if r.p_value is None:
        return f"{row.a} by {abs(r.diff_mean):.1f} points (not testable: n = {r.n_a} and {r.n_b})"
    ci = f"{_ci(r.ci_low, r.ci_high)}" if r.ci_low is not None else "CI undefined"
    return f"{row.a} by {abs(r.diff_mean):.1f} points ({ci}, Holm {_p(row.p_holm)}, n = {r.n_a} and {r.n_b})"


def column_name(key: str, value) -> str:
    return f"batch {value}" if key == "data.batch_size" else f"{key}={value}"


def findings(analysis: Analysis, cols_key: str) -> list[str]:
    """One sentence per column (who is best, what is significantly worse, what is tied), then
    one per series on the column effect."""
    t, out = analysis.table, []
    for c in t.columns:
        if c not in analysis.best:
            out.append(f"{column_name(cols_key, c)}: no completed runs.")
            continue
        winners = sorted(analysis.best[c], key=t.series.index)
        lead = " and ".join(t.labels[s] for s in winners)
        text = (f"{column_name(cols_key, c)}: {lead} {'has' if len(winners) == 1 else 'have'} the lowest mean test "
                f"error, {_cell(analysis.summaries[winners[0], c])}.")
        leaders = {t.labels[s] for s in winners}
        rows = [r for r in analysis.comparisons if r.kind == "vs best" and r.column == c and r.a not in leaders]
        worse = [r for r in rows if r.significant]
        tied = [r for r in rows if not r.significant]
        if worse:
            text += " Significantly higher: " + "; ".join(_difference(r) for r in worse) + "."
        if tied and all(r.result.p_value is None for r in tied):
            n = max((r.result.n_a for r in tied), default=1)
            text += f" With n = {n} per cell no difference from {', '.join(r.a for r in tied)} can be tested."
        elif tied:
            text += " Not significantly different (a tie, not a ranking): " + "; ".join(
                _difference(r) for r in tied) + "."
        out.append(text)
    for r in analysis.effects:
        small, large = r.column
        res = r.result
        verdict = ("significant" if r.significant else "not significant") if res.p_value is not None else "not testable"
        detail = (f", {_ci(res.ci_low, res.ci_high)}, Holm {_p(r.p_holm)}" if res.p_value is not None and res.ci_low is not None
                  else (f", Holm {_p(r.p_holm)}" if res.p_value is not None else ""))
        out.append(f"{r.a}: {column_name(cols_key, small)} vs {column_name(cols_key, large)}: "
                   f"{'+' if res.diff_mean >= 0 else '−'}{abs(res.diff_mean):.1f} points of test error at "
                   f"{column_name(cols_key, small)} ({verdict}{detail}; n = {res.n_a} and {res.n_b}).")
    return out

