"""The report's tables: as rows of text for results.md and index.html, and as CSV files.

results.csv   one row per cell: n, mean, std, 95% CI, best marker, verdict against the best, problems, the series keys
comparisons.csv  one row per comparison: difference, its CIs (unadjusted, Holm-adjusted, TOST's), p, Holm p, verdict
runs.csv      one row per run: every varying key, status, seed, errors: the tidy table for pandas
aggregate.csv, improvement.csv  across columns: IQM and failures per series, P(X < Y) per pair
"""
from __future__ import annotations

import csv
from pathlib import Path

from .analysis import EQUIVALENT, UNDECIDED, UNTESTABLE, Analysis, column_name, where
from .runs import Run, as_json
from .series import MISSING

BEST, EQUIVALENT_MARK, UNDECIDED_MARK = "★", "≈", "?"
MARKS = {"best": BEST, EQUIVALENT: EQUIVALENT_MARK, UNDECIDED: UNDECIDED_MARK, UNTESTABLE: UNTESTABLE}
LEGEND = ("★ lowest mean at the column; ≈ equivalent to it within ±{margin:g} (points of test error; Holm-adjusted "
          "TOST); ? not distinguishable from it with these seeds (neither higher nor shown equivalent); untestable: a cell "
          "with fewer than two runs; no mark: higher than it (Holm-adjusted)")


def _fmt(value, digits=2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _sig(value) -> str:
    """A p-value with its significant digits (a small one is not rounded to zero)."""
    return "" if value is None else f"{value:.6g}"


def _epoch(value) -> str:
    if value is None:
        return "—"
    return str(round(value)) if abs(value - round(value)) < 1e-9 else f"{value:.1f}"


def _spread(values: list, write) -> str:
    """Mean and min–max over a cell's runs ('—' when none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = write(sum(values) / len(values))
    return mean if min(values) == max(values) else f"{mean} ({write(min(values))}–{write(max(values))})"


def marker(a: Analysis, s, c) -> str:
    """★, ≈, ?, "untestable" or nothing (higher than the best), from the verdict against the best."""
    return MARKS.get(a.verdict(s, c), "")


def cell_text(a: Analysis, s, c) -> str:
    cell, summary = a.table.cells[s, c], a.summaries[s, c]
    parts = []
    if summary.mean is not None:
        if summary.ci_low is None:
            parts.append(f"{summary.mean:.2f} (n=1, no CI)")
        else:
            parts.append(f"{summary.mean:.2f} [{summary.ci_low:.2f}, {summary.ci_high:.2f}] (n={summary.n})")
    if cell.selected:
        parts.append("chosen: " + ", ".join(f"{v} ×{k}" for v, k in sorted(cell.selected.items())))
    parts += [f"{status} {n}/{cell.expected_seeds}" for status, n in cell.problems.items()]
    return "; ".join(parts) or "—"


def results_rows(a: Analysis, cols_key: str) -> tuple[list[str], list[list[str]]]:
    head = ["series", *(column_name(cols_key, c) for c in a.table.columns)]
    body = []
    for s in a.table.series:
        body.append([a.table.labels[s], *(f"{cell_text(a, s, c)} {marker(a, s, c)}".strip() for c in a.table.columns)])
    return head, body


def _interval(low, high) -> str:
    return "—" if low is None or high is None else f"[{low:.2f}, {high:.2f}]"


def comparison_rows(a: Analysis, cols_key: str) -> tuple[list[str], list[list[str]]]:
    """Every comparison with the intervals its decisions used: the Holm-adjusted 95% CI for
    higher/lower, the Holm-adjusted 90% CI for the TOST; the unadjusted 95% CI beside, labelled."""
    head = ["at", "series", "against", "difference (points)", "95% CI, unadjusted", "p, unadjusted",
            "95% CI, Holm-adjusted", "Holm p", f"90% CI, Holm-adjusted (TOST ±{a.margin:g})", "TOST Holm p", "verdict", "n",
            "detects (80 % power)"]
    body = []
    for r in [*a.comparisons, *a.effects]:
        res = r.result
        against = "itself" if r.kind == "column effect" else f"{r.b} ({r.kind})"
        body.append([where(r, cols_key), r.a, against, f"{res.diff_mean:+.2f}", _interval(res.ci_low, res.ci_high),
                     _fmt(res.p_value, 3) or "—", _interval(*r.ci_holm), _fmt(r.p_holm, 3) or "—",
                     _interval(*r.ci_equivalence), _fmt(r.p_tost_holm, 3) or "—",
                     r.verdict, f"{res.n_a}, {res.n_b}", _fmt(r.detectable, 1) or "—"])
    return head, body


def cost_rows(a: Analysis, cols_key: str, timing: dict | None) -> tuple[list[str], list[list[str]]]:
    """Accuracy beside what it costs. The runs' own images/s is wall-clock throughput measured
    whenever each run trained, on whatever else the machine did then: not a fair ratio. The
    interleaved timing (when asked for) times every cell's configuration in one process, in turns."""
    head = ["series", "batch" if cols_key == "data.batch_size" else cols_key, "test error (%) [95% CI]",
            "images/s during the run (min–max)", "activation MiB", "best epoch (min–max)", "seeds", "not completed"]
    if timing is not None:
        head[4:4] = ["ms/step, interleaved (min–max)", "× first series (min–max)"]
    body = []
    for c in a.table.columns:
        first = next((timing.get((s, c)) for s in a.table.series if timing and timing.get((s, c))), None)
        for s in a.table.series:
            cell, summary = a.table.cells[s, c], a.summaries[s, c]
            error = _fmt(summary.mean) or "—"
            if summary.ci_low is not None:
                error += f" [{summary.ci_low:.2f}, {summary.ci_high:.2f}]"
            row = [a.table.labels[s], str(c), error, _spread([r.images_per_second for r in cell.chosen], lambda v: f"{v:.0f}"),
                   _fmt(cell.mean_of("activation_mib"), 1) or "—", _spread([r.best_epoch for r in cell.chosen], _epoch),
                   f"{len(cell.chosen)}/{cell.expected_seeds}",
                   ", ".join(f"{k} {v}" for k, v in cell.problems.items()) or "—"]
            if timing is not None:
                t = timing.get((s, c))
                row[4:4] = [f"{t['median_ms']:.1f} ({t['min_ms']:.1f}–{t['max_ms']:.1f})" if t else "—",
                            f"{t['median_ms'] / first['median_ms']:.2f} ({t['min_ms'] / first['max_ms']:.2f}–"
                            f"{t['max_ms'] / first['min_ms']:.2f})" if t and first else "—"]
            body.append(row)
    return head, body


def markdown(head: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|---" * len(head) + "|",
                      *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body)])


# ---------------------------------------------------------------------------------------
# CSV files
# ---------------------------------------------------------------------------------------
def write_results_csv(path: Path, analyses: list[Analysis], layout) -> None:
    keys = [*layout.facets, *layout.rows]
    col = "batch_size" if layout.cols == "data.batch_size" else layout.cols
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["facet", "series", col, "n", "test_error_mean", "test_error_std", "test_error_ci_low",
                    "test_error_ci_high", "seeds_completed", "seeds_expected", "best_epoch_mean", "images_per_second_mean",
                    "best_at_batch_size", "verdict_vs_best", "selected", "problems", *keys])
        for a in analyses:
            facet = dict(a.table.facet)
            for s in a.table.series:
                values = {**facet, **dict(s)}
                for c in a.table.columns:
                    cell, sm = a.table.cells[s, c], a.summaries[s, c]
                    w.writerow([a.table.title, a.table.labels[s], c, sm.n, _fmt(sm.mean, 3), _fmt(sm.std, 3),
                                _fmt(sm.ci_low, 3), _fmt(sm.ci_high, 3), len(cell.chosen), cell.expected_seeds,
                                _fmt(cell.mean_of("best_epoch"), 1), _fmt(cell.mean_of("images_per_second"), 1),
                                s in a.best.get(c, ()), a.verdict(s, c) or "",
                                ";".join(f"{v}={k}" for v, k in sorted(cell.selected.items())),
                                ";".join(f"{k}={v}" for k, v in cell.problems.items()),
                                *(as_json(values.get(k, MISSING)) for k in keys)])


def write_comparisons_csv(path: Path, analyses: list[Analysis]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["facet", "kind", "column", "a", "b", "n_a", "n_b", "diff_mean", "diff_ci_low", "diff_ci_high",
                    "p_value", "p_holm", "significant", "test", "verdict", "diff_ci_holm_low", "diff_ci_holm_high",
                    "p_tost", "p_tost_holm", "equivalence_ci_low", "equivalence_ci_high", "equivalence_margin",
                    "detectable_difference", "holm_threshold"])
        for a in analyses:
            for r in [*a.comparisons, *a.effects]:
                res = r.result
                column = (f"{r.column[0]}->{r.column[1]}" if r.kind == "column effect"
                          else f"{r.column} vs {r.column_b}" if r.column_b is not None else r.column)
                w.writerow([a.table.title, r.kind, column, r.a, r.b, res.n_a, res.n_b, _fmt(res.diff_mean, 4),
                            _fmt(res.ci_low, 4), _fmt(res.ci_high, 4), _sig(res.p_value), _sig(r.p_holm),
                            r.significant, res.test, r.verdict, _fmt(r.ci_holm[0], 4), _fmt(r.ci_holm[1], 4),
                            _sig(r.p_tost), _sig(r.p_tost_holm), _fmt(r.ci_equivalence[0], 4),
                            _fmt(r.ci_equivalence[1], 4), f"{a.margin:g}", _fmt(r.detectable, 4), _sig(r.level)])


def write_runs_csv(path: Path, runs: list[Run], keys: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "seed", "status", "test_error", "val_error", "best_epoch", "images_per_second", "path"])
        for r in runs:
            w.writerow([*(as_json(r.config.get(k, MISSING)) for k in keys), r.seed, r.status, _fmt(r.test_error, 4),
                        _fmt(r.val_error, 4), r.best_epoch if r.best_epoch is not None else "",
                        _fmt(r.images_per_second, 1), r.path])


# ---------------------------------------------------------------------------------------
# Across columns (results/aggregate.py)
# ---------------------------------------------------------------------------------------
def aggregate_rows(aggs: list) -> tuple[list[str], list[list[str]]]:
    head = ["series", "IQM test error (%) [95% CI]", "runs", "did not complete"]
    body = [[g.series, f"{g.iqm:.2f} [{g.ci_low:.2f}, {g.ci_high:.2f}]" if g.iqm is not None else "—", str(g.runs),
             f"{g.failed} ({100 * g.failure_rate:.0f} %)" if g.runs else "—"] for g in aggs]
    return head, body


def improvement_rows(imps: list) -> tuple[list[str], list[list[str]]]:
    head = ["series X", "series Y", "P(X has lower test error than Y) [95% CI]", "columns"]
    body = [[i.x, i.y, f"{i.probability:.2f} [{i.ci_low:.2f}, {i.ci_high:.2f}]", ", ".join(map(str, i.columns))]
            for i in imps]
    return head, body


def write_aggregate_csv(path: Path, summed: list) -> None:
    """aggregate.csv: per series of each table, its runs, failures and IQM with its interval."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["series", "runs", "failed", "iqm", "iqm_ci_low", "iqm_ci_high", "failure_rate", "facet"])
        for a, aggs, _ in summed:
            for g in aggs:
                w.writerow([g.series, g.runs, g.failed, _fmt(g.iqm, 4), _fmt(g.ci_low, 4), _fmt(g.ci_high, 4),
                            _fmt(g.failure_rate, 4), a.table.title])


def write_improvement_csv(path: Path, summed: list) -> None:
    """improvement.csv: per pair of series of each table, P(X < Y) with its interval."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["facet", "series", "against", "columns", "probability", "ci_low", "ci_high"])
        for a, _, imps in summed:
            for i in imps:
                w.writerow([a.table.title, i.x, i.y, ";".join(map(str, i.columns)), _fmt(i.probability, 4),
                            _fmt(i.ci_low, 4), _fmt(i.ci_high, 4)])
