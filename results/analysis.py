"""What a table's numbers support: per cell a confidence interval, per column the best series
and each series' verdict against it (and against `baseline=`), pre-specified `contrasts=`
between any two cells, per series the effect of the column (the batch size) from its smallest
to its largest value.

Every comparison of a table is one Holm family, each pair of cells in it once; the column
effects are a second family. A verdict says exactly what the tests showed (`decide`):
higher or lower (Holm-adjusted Welch or permutation test), equivalent (Holm-adjusted TOST
within `equivalence_margin` points), not distinguishable (neither: not significant is not
equal), or untestable (a cell with fewer than two runs, or two constant cells).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import power, stats
from .series import Table, _value, is_numeric

ERROR_BOUNDS = (0.0, 100.0)  # a test error in percent
HIGHER, LOWER, EQUIVALENT, UNDECIDED, UNTESTABLE = "higher", "lower", "equivalent", "not distinguishable", "untestable"
VERDICTS = (HIGHER, LOWER, UNDECIDED, EQUIVALENT, UNTESTABLE)


@dataclass
class Row:
    """One comparison: `a` minus `b` at a column, between two cells (a contrast: `column_b` is b's
    column), or a series from one column to another (column effect: `column` is the pair)."""

    facet: str
    column: object
    a: str
    b: str
    kind: str  # "vs best", "vs baseline", "contrast" or "column effect"
    result: stats.Comparison
    values: tuple = ((), ())  # the two cells' test errors, for the permutation test's interval
    column_b: object = None
    p_holm: float | None = None
    ci_holm: tuple = (None, None)  # the interval the Holm decision used
    p_tost: float | None = None
    p_tost_holm: float | None = None
    ci_equivalence: tuple = (None, None)  # the interval the (Holm-adjusted) TOST decision used
    level: float | None = None  # Holm's threshold for this p: 0.05 / (m - rank), rank 0 the smallest p
    detectable: float | None = None  # the difference a Welch test at `level` detects with 80% power at this n
    verdict: str = UNTESTABLE

    @property
    def significant(self) -> bool:
        return stats.significant(self.p_holm)


@dataclass
class Analysis:
    table: Table
    summaries: dict  # (series, column) -> stats.Summary
    best: dict  # column -> set of best series (lowest mean)
    comparisons: list  # Row: vs best, vs baseline and contrasts: one Holm family, each pair of cells once
    effects: list  # Row: per series, the column effect (smallest vs largest column), Holm over them
    baseline: tuple | None
    contrasts: list = field(default_factory=list)  # (text, Row): each resolved contrast and its row
    margin: float = 1.0

    def _vs_best(self, series, column):
        return next((r for r in self.comparisons if r.kind == "vs best" and r.column == column
                     and r.a == self.table.labels[series]), None)

    def verdict(self, series, column) -> str | None:
        """"best", or the verdict of the series against the best at this column; None without a mean."""
        if series in self.best.get(column, ()):
            return "best"
        row = self._vs_best(series, column)
        return row.verdict if row is not None else None


def _clip(interval, bounds, unbounded=(None, None)) -> tuple:
    """An interval inside `bounds`; an end the test cannot bound becomes `unbounded`'s."""
    return tuple(end if v is None else min(max(v, bounds[0]), bounds[1]) for v, end in zip(interval, unbounded))


def decide(rows: list[Row], margin: float, alpha: float = stats.ALPHA) -> None:
    """Holm over the family's tests, Holm over its TOSTs, and each row's verdict with the
    intervals those decisions used (differences of two error rates lie in [-100, 100])."""
    ps = [r.result.p_value for r in rows]
    for row, p, level in zip(rows, stats.holm(ps), stats.holm_thresholds(ps, alpha), strict=True):
        row.p_holm, row.level = p, level
    tosts = [stats.tost(r.result, margin) for r in rows]
    for row, p, q in zip(rows, tosts, stats.holm(tosts), strict=True):
        row.p_tost, row.p_tost_holm = p, q
    span = (ERROR_BOUNDS[0] - ERROR_BOUNDS[1], ERROR_BOUNDS[1] - ERROR_BOUNDS[0])
    for row in rows:
        res = row.result
        if res.p_value is None:
            row.verdict = UNTESTABLE
            continue
        row.ci_holm = _clip(stats.holm_interval(res, row.p_holm, *row.values, alpha=alpha), span, span)
        row.ci_equivalence = _clip(stats.equivalence_interval(res, row.p_tost, row.p_tost_holm, alpha), span)
        row.detectable = power.detectable_difference(res.sd_a, res.sd_b, res.n_a, res.n_b, alpha=row.level)
        if stats.significant(row.p_holm, alpha):
            row.verdict = HIGHER if res.diff_mean > 0 else LOWER
        elif stats.significant(row.p_tost_holm, alpha):
            row.verdict = EQUIVALENT
        else:
            row.verdict = UNDECIDED


def _find(table: Table, name: str) -> list:
    by_label = [s for s in table.series if table.labels[s] == name]
    return by_label or [s for s in table.series if dict(s).get("norm.kind") == name]


def find_baseline(table: Table, baseline: str | None):
    """The series a `baseline=` names: by its label, or by its norm kind when only one series has it."""
    if not baseline:
        return None
    found = _find(table, baseline)
    if len(found) == 1:
        return found[0]
    raise ValueError(f"baseline={baseline}: no single series is named so"
                     f"{' in ' + table.title if table.title else ''}; series: {', '.join(table.labels.values())}")


CONTRAST_SYNTAX = "'<series>@<column> vs <series>@<column>', e.g. 'gn conv=ws@2 vs bn@32'"


def parse_contrast(text: str) -> tuple[str, str, str, str]:
    """'gn conv=ws@2 vs bn@32' -> ('gn conv=ws', '2', 'bn', '32')."""
    sides = str(text).split(" vs ")
    parts = [side.strip().rpartition("@") for side in sides]
    if len(sides) != 2 or any(not name.strip() or not at or not col.strip() for name, at, col in parts):
        raise ValueError(f"contrasts: {text!r} is not a contrast; write {CONTRAST_SYNTAX}")
    (a, _, ca), (b, _, cb) = parts
    return a.strip(), ca.strip(), b.strip(), cb.strip()


def resolve_contrast(table: Table, contrast: tuple[str, str, str, str]):
    """The two cells ((series, column), (series, column)) a parsed contrast names in this table, or None."""
    cells = []
    for name, col in (contrast[:2], contrast[2:]):
        series = _find(table, name)
        columns = [c for c in table.columns if col in (str(c), _value(c))]
        if len(series) != 1 or len(columns) != 1:
            return None
        cells.append((series[0], columns[0]))
    return tuple(cells)


def analyse(table: Table, ci: str = "t", test: str = "welch", baseline: str | None = None,
            contrasts: list[str] = (), margin: float = 1.0) -> Analysis:
    """Summaries, the table's family of comparisons (vs best, vs baseline, contrasts; each pair of
    cells once) and the column effects, each row decided (`decide`)."""
    summaries = {key: stats.summarize(cell.errors, ci=ci, bounds=ERROR_BOUNDS) for key, cell in table.cells.items()}
    base = find_baseline(table, baseline)
    best, comparisons, pairs = {}, [], {}

    def add(kind, a_cell, b_cell) -> Row | None:
        key = frozenset((a_cell, b_cell))
        if key not in pairs:  # one pair of cells, one test: the baseline may be the best
            a, b = table.cells[a_cell].errors, table.cells[b_cell].errors
            if not a or not b:
                return None
            pairs[key] = Row(table.title, a_cell[1], table.labels[a_cell[0]], table.labels[b_cell[0]], kind,
                             stats.compare(a, b, test=test), (a, b), b_cell[1] if b_cell[1] != a_cell[1] else None)
            comparisons.append(pairs[key])
        return pairs[key]

    for c in table.columns:
        means = {s: summaries[s, c].mean for s in table.series if summaries[s, c].mean is not None}
        if not means:
            continue
        lowest = min(means.values())
        best[c] = {s for s, m in means.items() if m == lowest}
        winner = sorted(best[c], key=table.series.index)[0]
        for s in table.series:  # every series against the best first: a baseline pair never takes its place
            if s in means and s != winner:
                add("vs best", (s, c), (winner, c))
        for s in table.series:
            if base is not None and s in means and s != base and base in means:
                add("vs baseline", (s, c), (base, c))
    resolved = []
    for text in contrasts:
        cells = resolve_contrast(table, parse_contrast(text))
        if cells and cells[0] == cells[1]:
            raise ValueError(f"contrasts: {text!r} compares a cell with itself; write {CONTRAST_SYNTAX}")
        row = add("contrast", *cells) if cells else None
        if row is not None:
            resolved.append((text, row))
    decide(comparisons, margin)
    effects = []
    if len(table.columns) >= 2 and is_numeric(table.columns):
        small, large = table.columns[0], table.columns[-1]
        for s in table.series:
            a, b = table.cells[s, small].errors, table.cells[s, large].errors
            if a and b:
                effects.append(Row(table.title, (small, large), table.labels[s], table.labels[s], "column effect",
                                   stats.compare(a, b, test=test), (a, b)))
        decide(effects, margin)
    return Analysis(table, summaries, best, comparisons, effects, base, resolved, margin)


def column_name(key: str, value) -> str:
    return f"batch {value}" if key == "data.batch_size" else f"{key}={value}"


def where(row: Row, cols_key: str) -> str:
    """Where a comparison is: 'batch 2', 'batch 2 vs 32' (column effect), 'batch 2 vs batch 32' (contrast)."""
    if row.kind == "column effect":
        return f"{column_name(cols_key, row.column[0])} vs {row.column[1]}"
    if row.column_b is not None:
        return f"{column_name(cols_key, row.column)} vs {column_name(cols_key, row.column_b)}"
    return column_name(cols_key, row.column)
