"""The report's figures: test error against the column key (batch size), convergence, and the
performance profile across columns.

Error bars and bands are 95% confidence intervals of the mean over seeds (Student t), never
± std; series at one batch size are dodged so their bars do not hide each other.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from . import stats  # noqa: E402
from .aggregate import profile  # noqa: E402
from .analysis import ERROR_BOUNDS, Analysis, column_name  # noqa: E402
from .runs import step_curve  # noqa: E402
from .series import is_numeric  # noqa: E402


def _colors(series: list) -> dict:
    return {s: f"C{i % 10}" for i, s in enumerate(series)}


def plot_sensitivity(path: Path, analyses: list[Analysis], cols_key: str, title: str) -> None:
    fig, axes = plt.subplots(1, len(analyses), figsize=(7.5 * len(analyses), 4.8), dpi=120, squeeze=False, sharey=True)
    for ax, a in zip(axes[0], analyses, strict=True):
        t = a.table
        numeric = is_numeric(t.columns)
        positions = {c: (c if numeric else i) for i, c in enumerate(t.columns)}
        k = len(t.series)
        for i, s in enumerate(t.series):
            pts = [(c, a.summaries[s, c]) for c in t.columns if a.summaries[s, c].mean is not None]
            if not pts:
                continue
            offset = (i - (k - 1) / 2) * 0.06  # dodge: a small shift per series, in octaves on a log axis
            xs = [positions[c] * 2**offset if numeric else positions[c] + offset for c, _ in pts]
            means = [sm.mean for _, sm in pts]
            low = [sm.mean - sm.ci_low if sm.ci_low is not None else 0.0 for _, sm in pts]
            high = [sm.ci_high - sm.mean if sm.ci_high is not None else 0.0 for _, sm in pts]
            ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=3, label=t.labels[s])
        if numeric:
            ax.set_xscale("log", base=2)
            ax.set_xticks(t.columns, [str(c) for c in t.columns])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.invert_xaxis()  # as in the GN paper: the batch shrinks to the right
            ax.set_xlabel(f"{'batch size per device' if cols_key == 'data.batch_size' else cols_key} "
                          "(log scale, inverted: smaller to the right)")
        else:
            ax.set_xticks(range(len(t.columns)), [str(c) for c in t.columns])
            ax.set_xlabel(cols_key)
        if t.title:
            ax.set_title(t.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(title="series", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    axes[0, 0].set_ylabel("test error (%), mean and 95% CI over seeds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _band(curves: list[list[tuple[float, float]]], bounds=None):
    """x, mean, CI low, CI high over the curves that have a value at each x (inside `bounds`)."""
    xs = sorted({x for c in curves for x, _ in c})
    by_x = [[v for c in curves for x2, v in c if x2 == x] for x in xs]
    summaries = [stats.summarize(v, bounds=bounds) for v in by_x]
    mean = [s.mean for s in summaries]
    low = [s.ci_low if s.ci_low is not None else s.mean for s in summaries]
    high = [s.ci_high if s.ci_high is not None else s.mean for s in summaries]
    return xs, mean, low, high


def _train_curve(run) -> list[tuple[float, float]]:
    """The training loss against epochs: every logged step when the CSV log is there, else per epoch."""
    steps = step_curve(run)
    epochs = len(run.history)
    if steps and epochs:
        per_epoch = (max(s for s, _ in steps) + 1) / epochs
        return [((s + 1) / per_epoch, v) for s, v in steps]
    return [(h["epoch"], h["train/loss"]) for h in run.history if h.get("train/loss") is not None]


def plot_convergence(path: Path, a: Analysis, cols_key: str) -> None:
    t = a.table
    columns = t.columns
    fig, axes = plt.subplots(2, len(columns), figsize=(3.4 * len(columns) + 1.5, 6), dpi=110, squeeze=False,
                             sharey="row")
    colors = _colors(t.series)
    max_epoch = 1
    for j, c in enumerate(columns):
        for s in t.series:
            runs = t.cells[s, c].chosen
            val = [[(h["epoch"], 100 * (1 - h["val/acc"])) for h in r.history if h.get("val/acc") is not None]
                   for r in runs]
            train = [_train_curve(r) for r in runs]
            for row, curves, marker, bounds in ((0, val, "o", ERROR_BOUNDS), (1, train, None, None)):
                curves = [cv for cv in curves if cv]
                if not curves:
                    continue
                xs, mean, low, high = _band(curves, bounds)
                max_epoch = max(max_epoch, math.ceil(max(xs)))
                axes[row, j].plot(xs, mean, marker=marker, markersize=3, color=colors[s], label=t.labels[s])
                if len(curves) > 1:
                    axes[row, j].fill_between(xs, low, high, color=colors[s], alpha=0.2, linewidth=0)
        axes[0, j].set_title(column_name(cols_key, c), fontsize=10)
        axes[1, j].set_xlabel("epoch")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.set_xlim(0, max_epoch + 0.1)
        ax.set_xticks(np.arange(0, max_epoch + 1, max(1, max_epoch // 6)))
    axes[0, 0].set_ylabel("validation error (%)")
    axes[1, 0].set_ylabel("training loss (every logged step)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", title="series", fontsize=8)
    seeds = max((len(cell.chosen) for cell in t.cells.values()), default=0)
    fig.suptitle(f"{t.title + ': ' if t.title else ''}mean over seeds" +
                 (" with 95% CI bands" if seeds > 1 else " (one seed: no band)"), fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_profile(path: Path, analyses: list[Analysis]) -> None:
    """Per series, the fraction of its runs with test error <= tau (averaged over columns; a failed
    run never counts), with a 95% stratified-bootstrap band: one panel per facet."""
    fig, axes = plt.subplots(1, len(analyses), figsize=(6.5 * len(analyses), 4.2), dpi=120, squeeze=False, sharey=True)
    for ax, a in zip(axes[0], analyses, strict=True):
        errors = [e for cell in a.table.cells.values() for e in cell.errors]
        if not errors:
            continue
        pad = max(0.5, 0.05 * (max(errors) - min(errors)))
        taus = np.linspace(max(0.0, min(errors) - pad), min(100.0, max(errors) + pad), 300)
        colors = _colors([a.table.labels[s] for s in a.table.series])
        for label, (fraction, low, high) in profile(a, taus).items():
            ax.step(taus, fraction, where="post", color=colors[label], label=label)
            ax.fill_between(taus, low, high, step="post", color=colors[label], alpha=0.15, linewidth=0)
        ax.set_xlabel("test error τ (%)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if a.table.title:
            ax.set_title(a.table.title, fontsize=10)
        ax.legend(title="series", fontsize=8, loc="lower right")
    axes[0, 0].set_ylabel("fraction of runs with test error ≤ τ")
    fig.suptitle("Performance profile over all columns\n(95% stratified-bootstrap bands; a failed run never reaches τ)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
