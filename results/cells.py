"""Group runs into the report's cells: one (series, batch size) cell holds the seeds of one
configuration."""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

import norms

from .runs import Run


@dataclass
class Cell:
    """One (series, batch size) cell of the table: a series is a norm, or model/norm."""

    series: str
    batch_size: int
    runs: list
    expected_seeds: int

    @property
    def completed(self):
        return [r for r in self.runs if r.status == "completed" and r.test_error is not None]

    @property
    def problems(self) -> dict:
        """{status: count} for runs that did not complete, plus seeds never run."""
        out = {}
        for r in self.runs:
            if r.status != "completed":
                out[r.status] = out.get(r.status, 0) + 1
        missing = self.expected_seeds - len(self.runs)
        if missing > 0:
            out["missing"] = missing
        return out

    def mean_std(self):
        errs = [r.test_error for r in self.completed]
        if not errs:
            return None, None
        return statistics.fmean(errs), statistics.stdev(errs) if len(errs) > 1 else None

    def mean_of(self, attr):
        values = [getattr(r, attr) for r in self.completed if getattr(r, attr) is not None]
        return statistics.fmean(values) if values else None


def build_cells(runs: list[Run], grid: dict) -> tuple[list[str], list[int], dict]:
    multi_model = len({r.model for r in runs}) > 1
    series_of = (lambda r: f"{r.model}/{r.label}") if multi_model else (lambda r: r.label)
    series = {series_of(r) for r in runs}
    if not multi_model:
        series |= set(grid.get("norm", []))
    batch_sizes = sorted({r.batch_size for r in runs} | set(grid.get("batch_size", [])))
    seeds = len(grid["seed"]) if "seed" in grid else max(
        (len({r.seed for r in runs if r.batch_size == b and series_of(r) == s}) for s in series for b in batch_sizes),
        default=1)
    def sort_key(s):
        model, _, label = s.rpartition("/")
        norm, _, variant = label.partition(" (")
        number = int("".join(filter(str.isdigit, variant)) or 0)  # ghost 2 before ghost 16
        return model, order_of(norm), variant.rstrip(")0123456789"), number, s

    order = sorted(series, key=sort_key)
    cells = {}
    for s, b in itertools.product(order, batch_sizes):
        cell_runs = [r for r in runs if series_of(r) == s and r.batch_size == b]
        cells[s, b] = Cell(s, b, cell_runs, max(seeds, len({r.seed for r in cell_runs})))
    return order, batch_sizes, cells


def order_of(kind: str) -> int:
    """Norms in the order the registry declares them; unknown kinds last."""
    kinds = norms.kinds()
    return kinds.index(kind) if kind in kinds else len(kinds)


def best_per_batch(order, batch_sizes, cells) -> dict[int, str]:
    best = {}
    for b in batch_sizes:
        means = [(cells[s, b].mean_std()[0], s) for s in order if cells[s, b].mean_std()[0] is not None]
        if means:
            best[b] = min(means)[1]
    return best
