"""The report's tables: as rows of text for results.md and index.html, and as CSV files.

results.csv   one row per cell: n, mean, std, 95% CI, best/tied markers, problems, the series keys
comparisons.csv  one row per comparison: difference, its CI, p, Holm-adjusted p, significant
runs.csv      one row per run: every varying key, status, seed, errors: the tidy table for pandas
"""
from __future__ import annotations

import csv
from pathlib import Path

from .analysis import Analysis, column_name
from .runs import Run, as_json
from .series import MISSING

BEST, TIED = "★", "≈"


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
    if s in a.best.get(c, ()):
        return BEST
    return TIED if a.tied(s, c) else ""


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


def comparison_rows(a: Analysis, cols_key: str) -> tuple[list[str], list[list[str]]]:
    head = ["at", "series", "against", "difference (points)", "95% CI", "p", "Holm p", "significant", "n"]
    body = []
    for r in [*a.comparisons, *a.effects]:
        res = r.result
        at = (f"{column_name(cols_key, r.column[0])} vs {r.column[1]}" if r.kind == "column effect"
              else column_name(cols_key, r.column))
        against = "itself" if r.kind == "column effect" else f"{r.b} ({r.kind})"
        body.append([at, r.a, against, f"{res.diff_mean:+.2f}",
                     f"[{res.ci_low:.2f}, {res.ci_high:.2f}]" if res.ci_low is not None else "—",
                     _fmt(res.p_value, 3) or "—", _fmt(r.p_holm, 3) or "—",
                     ("yes" if r.significant else "no") if r.p_holm is not None else "not testable",
                     f"{res.n_a}, {res.n_b}"])
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
                    "best_at_batch_size", "tied_with_best", "selected", "problems", *keys])
        for a in analyses:
            facet = dict(a.table.facet)
            for s in a.table.series:
                values = {**facet, **dict(s)}
                for c in a.table.columns:
                    cell, sm = a.table.cells[s, c], a.summaries[s, c]
                    w.writerow([a.table.title, a.table.labels[s], c, sm.n, _fmt(sm.mean, 3), _fmt(sm.std, 3),
                                _fmt(sm.ci_low, 3), _fmt(sm.ci_high, 3), len(cell.chosen), cell.expected_seeds,
                                _fmt(cell.mean_of("best_epoch"), 1), _fmt(cell.mean_of("images_per_second"), 1),
                                s in a.best.get(c, ()), a.tied(s, c),
                                ";".join(f"{v}={k}" for v, k in sorted(cell.selected.items())),
                                ";".join(f"{k}={v}" for k, v in cell.problems.items()),
                                *(as_json(values.get(k, MISSING)) for k in keys)])


def write_comparisons_csv(path: Path, analyses: list[Analysis]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["facet", "kind", "column", "a", "b", "n_a", "n_b", "diff_mean", "diff_ci_low", "diff_ci_high",
                    "p_value", "p_holm", "significant", "test"])
        for a in analyses:
            for r in [*a.comparisons, *a.effects]:
                res = r.result
                column = f"{r.column[0]}->{r.column[1]}" if r.kind == "column effect" else r.column
                w.writerow([a.table.title, r.kind, column, r.a, r.b, res.n_a, res.n_b, _fmt(res.diff_mean, 4),
                            _fmt(res.ci_low, 4), _fmt(res.ci_high, 4), _sig(res.p_value), _sig(r.p_holm),
                            r.significant, res.test])


def write_runs_csv(path: Path, runs: list[Run], keys: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*keys, "seed", "status", "test_error", "val_error", "best_epoch", "images_per_second", "path"])
        for r in runs:
            w.writerow([*(as_json(r.config.get(k, MISSING)) for k in keys), r.seed, r.status, _fmt(r.test_error, 4),
                        _fmt(r.val_error, 4), r.best_epoch if r.best_epoch is not None else "",
                        _fmt(r.images_per_second, 1), r.path])
