"""The report's "Why" section: how much of a batch-statistics norm's loss is its evaluation
statistics, how noisy its batch statistics are, and how far each norm's layer inputs drift.

From what each run recorded (harness/evaluation.py, harness/diagnostics.py):
- test error with the running (EMA) statistics, with PreciseBN's and with each test batch's
  own statistics, per series and column, with 95% CIs over seeds; the findings give the paired
  difference PreciseBN - EMA (the same runs, so a paired interval) next to the series' gap
  between its smallest and largest column;
- batch_noise.png: the noise of the batch mean against the column (batch size), for the
  first, middle and last statistics layer, mean and 95% CI over seeds, with a 1/sqrt(batch)
  reference;
- input_drift.png: input drift per epoch (mean over layers; mean and 95% band over seeds), one
  panel per column, one line per series (the `none` control included). Every figure and number
  is per cell: runs that differ only by seed.
"""
from __future__ import annotations

import math
from pathlib import Path

from matplotlib.ticker import MaxNLocator

from . import stats
from .analysis import ERROR_BOUNDS, Analysis, column_name
from .figures import _colors, plt
from .series import is_numeric

# (run attribute, row label); the example-weighing row only for norms that have it (bn, bgn)
EVALUATIONS = (("test_error", "{}: running statistics (EMA)"), ("precise_error", "{}: PreciseBN"),
               ("batch_stats_error", "{}: batch statistics"),
               ("example_weight_error", "{} with example weighing (α chosen on validation)"))


def _with_statistics(a: Analysis) -> list:
    """The series of a table whose runs recorded PreciseBN (norms with batch statistics)."""
    return [s for s in a.table.series
            if any(r.precise_error is not None for c in a.table.columns for r in a.table.cells[s, c].chosen)]


def _cell(values, ci: str) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    sm = stats.summarize(values, ci=ci, bounds=ERROR_BOUNDS)
    if sm.ci_low is None:
        return f"{sm.mean:.2f} (n={sm.n})"
    return f"{sm.mean:.2f} [{sm.ci_low:.2f}, {sm.ci_high:.2f}] (n={sm.n})"


def why_rows(a: Analysis, cols_key: str, ci: str = "t") -> tuple[list[str], list[list[str]]] | None:
    series = _with_statistics(a)
    if not series:
        return None
    t = a.table
    head = ["test error (%) with", *[column_name(cols_key, c) for c in t.columns]]
    body = []
    for s in series:
        for attr, what in EVALUATIONS:
            if attr == "example_weight_error" and not any(getattr(r, attr) is not None for c in t.columns
                                                          for r in t.cells[s, c].chosen):
                continue  # a norm whose evaluation cannot weigh examples (brn, sn, evonorm_b0)
            body.append([what.format(t.labels[s]),
                         *[_cell([getattr(r, attr) for r in t.cells[s, c].chosen], ci) for c in t.columns]])
    return head, body


def _paired(cell, a_attr: str, b_attr: str, ci: str) -> stats.Summary | None:
    diffs = [getattr(r, a_attr) - getattr(r, b_attr) for r in cell.chosen
             if getattr(r, a_attr) is not None and getattr(r, b_attr) is not None]
    return stats.summarize(diffs, ci=ci) if diffs else None


def _points(sm: stats.Summary) -> str:
    ci = f", 95% CI {sm.ci_low:+.1f} to {sm.ci_high:+.1f}" if sm.ci_low is not None else ""
    return f"{sm.mean:+.1f} points{ci}, n = {sm.n}"


def why_findings(a: Analysis, cols_key: str, ci: str = "t") -> list[str]:
    """Per series with batch statistics, at its smallest column: what PreciseBN and batch
    statistics at evaluation change, beside the series' loss from its largest column."""
    t, out = a.table, []
    if len(t.columns) < 1:
        return out
    small, large = t.columns[0], t.columns[-1]
    for s in _with_statistics(a):
        cell = t.cells[s, small]
        precise = _paired(cell, "precise_error", "test_error", ci)
        batch = _paired(cell, "batch_stats_error", "test_error", ci)
        if precise is None:
            continue
        gap = ""
        if large != small and a.summaries[s, small].mean is not None and a.summaries[s, large].mean is not None:
            gap_points = a.summaries[s, small].mean - a.summaries[s, large].mean
            gap = f" of its {gap_points:+.1f}-point gap to {column_name(cols_key, large)}"
        text = (f"Why, {t.labels[s]} at {column_name(cols_key, small)}: evaluating with PreciseBN's statistics instead "
                f"of the running ones changes test error by {_points(precise)} (paired by run){gap}")
        if batch is not None:
            text += f"; normalizing each test batch by its own statistics changes it by {_points(batch)}"
        out.append(text + ".")
    return out


def _statistics_layers(runs) -> list[str]:
    for r in runs:
        names = [n for n, row in (r.diagnostics or {}).items() if "batch_mean_noise" in row]
        if names:
            return names
    return []


def plot_noise(path: Path, analyses: list[Analysis], cols_key: str) -> bool:
    """Batch-mean noise against the column, by depth; False (nothing drawn) without such runs."""
    panels = [(a, s) for a in analyses for s in _with_statistics(a)]
    panels = [(a, s) for a, s in panels if is_numeric(a.table.columns)
              and _statistics_layers([r for c in a.table.columns for r in a.table.cells[s, c].chosen])]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), dpi=120, squeeze=False)
    for ax, (a, s) in zip(axes[0], panels):
        t = a.table
        names = _statistics_layers([r for c in t.columns for r in t.cells[s, c].chosen])
        depth = {names[0]: "first", names[len(names) // 2]: "middle", names[-1]: "last"}
        for i, (name, where) in enumerate(depth.items()):
            xs, ys, low, high = [], [], [], []
            for c in t.columns:
                values = [r.diagnostics[name]["batch_mean_noise"] for r in t.cells[s, c].chosen
                          if r.diagnostics and "batch_mean_noise" in r.diagnostics.get(name, {})]
                if values:
                    sm = stats.summarize(values)  # 95% t interval over seeds (none for one seed)
                    xs.append(c)
                    ys.append(sm.mean)
                    low.append(sm.mean - sm.ci_low if sm.ci_low is not None else 0.0)
                    high.append(sm.ci_high - sm.mean if sm.ci_high is not None else 0.0)
            if ys:
                ax.errorbar(xs, ys, yerr=[low, high], marker="o", capsize=3, color=f"C{i}", label=f"{where} ({name})")
                if i == 0:
                    ref = [ys[-1] * math.sqrt(xs[-1] / x) for x in xs]
                    ax.plot(xs, ref, ls="--", color="grey", label="∝ 1/√batch")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(t.columns, [str(c) for c in t.columns])
        ax.invert_xaxis()
        ax.set_xlabel(f"{'batch size per device' if cols_key == 'data.batch_size' else cols_key} (smaller to the right)")
        ax.set_ylabel("|batch mean − running mean| / running std")
        ax.set_title(f"{t.labels[s]}{': ' + t.title if t.title else ''}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Noise of the batch statistics, last epoch (mean and 95% CI over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _drift_curve(run) -> dict[int, float]:
    out = {}
    for row in run.history or []:
        layers = [v["input_drift"] for v in (row.get("norm_diagnostics") or {}).values() if "input_drift" in v]
        if layers:
            out[row["epoch"]] = sum(layers) / len(layers)
    return out


def plot_drift(path: Path, a: Analysis, cols_key: str) -> bool:
    t = a.table
    if not any(_drift_curve(r) for c in t.columns for s in t.series for r in t.cells[s, c].chosen):
        return False
    colors = _colors(t.series)
    fig, axes = plt.subplots(1, len(t.columns), figsize=(4.2 * len(t.columns), 3.8), dpi=120, squeeze=False,
                             sharey=True)
    for ax, c in zip(axes[0], t.columns):
        for s in t.series:
            curves = [_drift_curve(r) for r in t.cells[s, c].chosen]
            epochs = sorted({e for curve in curves for e in curve})
            if not epochs:
                continue
            summaries = [stats.summarize([cv[e] for cv in curves if e in cv]) for e in epochs]
            ax.plot(epochs, [sm.mean for sm in summaries], marker="o", color=colors[s], label=t.labels[s])
            banded = [(e, sm) for e, sm in zip(epochs, summaries) if sm.ci_low is not None]
            if banded:  # 95% t interval over seeds
                ax.fill_between([e for e, _ in banded], [sm.ci_low for _, sm in banded],
                                [sm.ci_high for _, sm in banded], color=colors[s], alpha=0.15)
        ax.set_title(column_name(cols_key, c), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("input drift between measurements\n(mean over layers, in input stds; 95% CI over seeds)")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"Internal covariate shift, measured{': ' + t.title if t.title else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
