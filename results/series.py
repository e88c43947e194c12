"""Group runs into the report's tables without ever averaging two configurations.

Every config key whose value differs among the reported runs (the seed aside) defines the
layout: one key gives the columns (default: the per-device batch size), optional keys split the
report into facets (one table each), keys named in `select` are tuned per cell and seed on the
validation error, and every other varying key is part of the row, the *series*. A cell holds
the runs of one series at one column: runs that differ in nothing but the seed.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import norms

from .runs import Run

# A config group's identifying key: other keys of the group that it determines are not named.
GROUP_IDS = {"norm": "norm.kind", "model": "model.name", "data": "data.name", "optim": "optim.optimizer._target_"}
ALIASES = {**GROUP_IDS, "batch_size": "data.batch_size", "lr": "optim.lr"}  # what users may type for a key
MISSING = "—"  # a key a run's config does not have (bn has no num_groups)

Series = tuple[tuple[str, Any], ...]  # ((key, value), ...) over the row keys: data, not a string


def _sortable(value):
    if isinstance(value, bool) or value is None or value == MISSING:
        return (2, str(value))
    if isinstance(value, (int, float)):
        return (0, value)
    return (1, str(value))


def varying_keys(runs: list[Run]) -> list[str]:
    keys = sorted({k for r in runs for k in r.config})
    varying = [k for k in keys if len({repr(r.config.get(k, MISSING)) for r in runs}) > 1]
    order = list(GROUP_IDS)
    return sorted(varying, key=lambda k: (order.index(k.split(".")[0]) if k.split(".")[0] in order else len(order),
                                          k != GROUP_IDS.get(k.split(".")[0]), k))


@dataclass(frozen=True)
class Layout:
    cols: str
    rows: tuple[str, ...]
    facets: tuple[str, ...] = ()
    select: tuple[str, ...] = ()


def _keys(value) -> list[str]:
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [ALIASES.get(str(v).strip(), str(v).strip()) for v in items if str(v).strip()]


def make_layout(runs: list[Run], cols=None, rows=None, facet=None, select=None) -> Layout:
    """The layout a user asked for (keys or aliases such as `norm`, `model`, `batch_size`); rows
    also hold every varying key not placed elsewhere, so no two configurations share a cell."""
    varying = varying_keys(runs)
    present = sorted({k for r in runs for k in r.config})
    for option, value in (("cols", cols), ("rows", rows), ("facet", facet), ("select", select)):
        for key in _keys(value):
            if key not in present:
                raise ValueError(f"{option}={key}: no run has this config key; keys that vary among these runs: "
                                 f"{', '.join(varying) or 'none'}")
            if key not in varying:
                raise ValueError(f"{option}={key}: every run has the same value ({runs[0].config.get(key)!r}); "
                                 f"keys that vary among these runs: {', '.join(varying) or 'none'}")
    col = (_keys(cols) or ["data.batch_size"])[0]
    facets, chosen = tuple(_keys(facet)), tuple(_keys(select))
    taken = {col, *facets, *chosen}
    first = [k for k in _keys(rows) if k not in taken]
    # a key the columns, facets or tuned keys determine (facet=model: model.depth) splits no row
    rest = [k for k in varying if k not in taken and k not in first and not _explained(k, sorted(taken), runs)]
    return Layout(cols=col, rows=tuple(first + rest), facets=facets, select=chosen)


# ---------------------------------------------------------------------------------------
# Labels: name what differs, briefly
# ---------------------------------------------------------------------------------------
def _explained(key: str, by, runs: list[Run]) -> bool:
    """Whether the values of the key(s) `by` determine `key`'s among these runs (model.name
    determines model.depth)."""
    by = (by,) if isinstance(by, str) else tuple(by)
    seen = {}
    for r in runs:
        value = repr(r.config.get(key, MISSING))
        if seen.setdefault(repr([r.config.get(k, MISSING) for k in by]), value) != value:
            return False
    return True


def named_keys(row_keys: tuple[str, ...], runs: list[Run]) -> list[str]:
    """The row keys a label names: those no varying group id determines."""
    named = []
    for key in row_keys:
        group_id = GROUP_IDS.get(key.split(".")[0])
        if group_id and group_id != key and group_id in row_keys and _explained(key, group_id, runs):
            continue
        named.append(key)
    return named


def _short(key: str, keys: list[str]) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return leaf if sum(k.rsplit(".", 1)[-1] == leaf for k in keys) == 1 else key


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def label(run: Run, named: list[str]) -> str:
    """'gn (G=1) lr=0.01', 'bn (ghost 4)', 'resnet56/gn': the norm in its own notation, the model
    when it varies, then every other named key."""
    norm_options = [k.removeprefix("norm.") for k in named if k.startswith("norm.") and k != "norm.kind"]
    try:
        variants = norms.get(run.config["norm.kind"]).variant_options
        text = norms.label(run.norm_config, options=[*variants, *(o for o in norm_options if o not in variants)])
    except (KeyError, ValueError):
        text = str(run.config.get("norm.kind"))
    if "model.name" in named:
        text = f"{run.config.get('model.name')}/{text}"
    others = [k for k in named if not k.startswith("norm.") and k != "model.name"]
    for key in others:
        value = run.config.get(key, MISSING)
        if key == "optim.optimizer._target_":
            text += f" {str(value).rsplit('.', 1)[-1]}"
        elif key == "data.name":
            text += f" on {value}"
        else:
            text += f" {_short(key, others)}={_value(value)}"
    return text


# ---------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (series, column) cell: the runs of one configuration, over seeds."""

    series: Series
    column: Any
    runs: list  # every run of the cell (with `select`, every candidate)
    chosen: list  # the run counted per seed: the only one, or the best on validation
    expected_seeds: int
    selected: Counter = field(default_factory=Counter)  # select values that won, e.g. {"lr=0.1": 2}

    @property
    def errors(self) -> list[float]:
        return [r.test_error for r in self.chosen]

    @property
    def problems(self) -> dict:
        """{status: count} for runs that did not complete, plus seeds never run."""
        out = Counter(r.status for r in self.runs if r.status != "completed")
        missing = self.expected_seeds - len({r.seed for r in self.runs})
        if missing > 0:
            out["missing"] = missing
        return dict(out)

    def mean_of(self, attr):
        values = [getattr(r, attr) for r in self.chosen if getattr(r, attr) is not None]
        return sum(values) / len(values) if values else None


@dataclass
class Table:
    """One facet: its series in order, their labels, its columns and cells."""

    facet: Series
    series: list
    labels: dict
    columns: list
    cells: dict  # (series, column) -> Cell

    @property
    def title(self) -> str:
        return ", ".join(f"{k}={_value(v)}" for k, v in self.facet)


def _choose(runs: list[Run], select: tuple[str, ...]) -> tuple[list[Run], Counter]:
    """Per seed, the completed run with the lowest validation error (never the test error)."""
    done = [r for r in runs if r.status == "completed" and r.test_error is not None]
    if not select:
        return done, Counter()
    chosen, won = [], Counter()
    for seed in sorted({r.seed for r in done}, key=_sortable):
        candidates = [r for r in done if r.seed == seed and r.val_error is not None]
        if candidates:
            best = min(candidates, key=lambda r: (r.val_error, [_sortable(r.config.get(k)) for k in select]))
            chosen.append(best)
            won[" ".join(f"{_short(k, list(select))}={_value(best.config.get(k))}" for k in select)] += 1
    return chosen, won


def tables(runs: list[Run], layout: Layout, seeds: list | None = None) -> list[Table]:
    """The report's tables, one per facet value."""
    named = named_keys(layout.rows, runs)
    kinds = norms.kinds()

    def series_of(r: Run) -> Series:
        return tuple((k, r.config.get(k, MISSING)) for k in layout.rows)

    def order(s: Series):
        values = dict(s)
        kind = values.get("norm.kind")
        return [kinds.index(kind) if kind in kinds else len(kinds)] + [_sortable(v) for _, v in s]

    expected_default = len(seeds) if seeds else None
    out = []
    facet_values = sorted({tuple((k, r.config.get(k, MISSING)) for k in layout.facets) for r in runs},
                          key=lambda f: [_sortable(v) for _, v in f])
    for facet in facet_values:
        members = [r for r in runs if tuple((k, r.config.get(k, MISSING)) for k in layout.facets) == facet]
        series = sorted({series_of(r) for r in members}, key=order)
        columns = sorted({r.config.get(layout.cols, MISSING) for r in members}, key=_sortable)
        groups: dict = {}
        for r in members:
            groups.setdefault((series_of(r), r.config.get(layout.cols, MISSING)), []).append(r)
        expected = expected_default or max((len({r.seed for r in g}) for g in groups.values()), default=1)
        cells = {}
        for s in series:
            for c in columns:
                cell_runs = groups.get((s, c), [])
                chosen, won = _choose(cell_runs, layout.select)
                cells[s, c] = Cell(s, c, cell_runs, chosen, max(expected, len({r.seed for r in cell_runs})), won)
        labels = {s: label(next(r for r in members if series_of(r) == s), named) for s in series}
        if len(set(labels.values())) < len(labels):  # never two series under one name
            labels = {s: " ".join(f"{k}={_value(v)}" for k, v in s) or "all" for s in series}
        out.append(Table(facet, series, labels, columns, cells))
    return out


def is_numeric(columns: list) -> bool:
    return all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in columns)
