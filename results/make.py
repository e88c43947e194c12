"""make_report: a sweep's run directories in, the report's files out."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from . import stats
from .analysis import analyse, findings
from .figures import plot_convergence, plot_sensitivity
from .html import results_classes, table_html, write_html
from .publish import log_to_wandb
from .runs import read_runs, requested_seeds
from .series import make_layout, tables, varying_keys
from .tables import comparison_rows, cost_rows, markdown, results_rows, write_comparisons_csv, write_results_csv, write_runs_csv
from .timing import interleaved
from .why import plot_drift, plot_noise, why_findings, why_rows

RUNS_COST = ("images/s during the run is each run's own wall-clock throughput, measured while it trained "
             "beside whatever else the machine ran: not comparable between runs.")
TIMED_COST = ("ms/step, interleaved: every cell's configuration timed in turns in one process when this report "
              "was built (median over rounds, min–max), relative to the first series at the same column.")


WHY_NOTE = ("For norms with batch statistics: test error with the running statistics training left (EMA, the "
            "number above), with PreciseBN's (recomputed after training from training batches, equal weights) and "
            "with each test batch normalized by its own statistics at the training batch size; mean [95% CI] over "
            "seeds. The figures show how noisy the batch statistics were in the last epoch, by depth, and how far "
            "each norm's layer inputs moved between measurements during training.")


def _check_choice(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value}: valid values are {', '.join(valid)}")


def make_report(cfg: DictConfig) -> Path:
    _check_choice("ci", cfg.ci, stats.CI_METHODS)
    _check_choice("test", cfg.test, stats.TESTS)
    runs_dir = Path(cfg.runs_dir).expanduser().resolve()
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory {runs_dir} does not exist")
    out_dir = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else runs_dir / "report"
    runs = read_runs(runs_dir, skip=out_dir, include_debug=cfg.include_debug)
    if not runs:
        raise FileNotFoundError(f"no runs (summary.json or .hydra/config.yaml) found under {runs_dir}")
    layout = make_layout(runs, cols=cfg.cols, rows=cfg.rows, facet=cfg.facet, select=cfg.select)
    all_tables = tables(runs, layout, requested_seeds(runs_dir))
    analyses = [analyse(t, ci=cfg.ci, test=cfg.test, baseline=cfg.baseline) for t in all_tables]
    out_dir.mkdir(parents=True, exist_ok=True)

    experiment = runs_dir.name
    models_ = ", ".join(sorted({str(r.config.get("model.name")) for r in runs}))
    datas = ", ".join(sorted({str(r.config.get("data.name")) for r in runs}))
    title = f"{experiment}: {models_} on {datas}"
    facet_of = {id(a): (a.table.title + ": " if a.table.title else "") for a in analyses}
    found = [facet_of[id(a)] + f for a in analyses for f in findings(a, layout.cols)]
    mixed = [f"{facet_of[id(a)]}{a.table.labels[s]} at {c}" for a in analyses for (s, c), cell in a.table.cells.items()
             if len({r.commit for r in cell.chosen if r.commit}) > 1]
    if mixed:  # same config, other code: not runs that differ only by seed
        found.insert(0, f"Caution: {len(mixed)} cell(s) pool runs trained by different commits of NormLab "
                        f"({', '.join(mixed[:4])}{', ...' if len(mixed) > 4 else ''}); relaunch the sweep with "
                        "rerun=stale to retrain the older ones.")
    method = (f"{len(runs)} runs; a cell holds runs that differ only by seed. Intervals: 95% "
              f"{'Student t' if cfg.ci == 't' else 'percentile bootstrap'} of the mean; tests: "
              f"{'Welch t-test' if cfg.test == 'welch' else 'exact permutation test'}, Holm-adjusted per table "
              f"(the intervals of differences are not adjusted).")
    if layout.select:
        method += (f" Tuned per cell and seed on validation error (test error never used to choose): "
                   f"{', '.join(layout.select)}.")

    found += [facet_of[id(a)] + f for a in analyses for f in why_findings(a, layout.cols, cfg.ci)]
    plot_sensitivity(out_dir / "batch_sensitivity.png", analyses, layout.cols, title)
    why_figures = ["batch_noise.png"] if plot_noise(out_dir / "batch_noise.png", analyses, layout.cols) else []
    for i, a in enumerate(analyses):
        name = "input_drift.png" if i == 0 else f"input_drift_{i + 1}.png"
        if plot_drift(out_dir / name, a, layout.cols):
            why_figures.append(name)
    why_md, why_html = [], []
    for a in analyses:
        rows = why_rows(a, layout.cols, cfg.ci)
        if rows:
            why_md.append((f"### {a.table.title}\n\n" if a.table.title else "") + markdown(*rows) + "\n")
            why_html.append((f"<h3>{a.table.title}</h3>" if a.table.title else "") + table_html(*rows, "why"))
    convergence = []
    for i, a in enumerate(analyses):
        name = "convergence.png" if i == 0 else f"convergence_{i + 1}.png"
        plot_convergence(out_dir / name, a, layout.cols)
        convergence.append(name)
    write_results_csv(out_dir / "results.csv", analyses, layout)
    write_comparisons_csv(out_dir / "comparisons.csv", analyses)
    write_runs_csv(out_dir / "runs.csv", runs, varying_keys(runs))

    md, html_results, html_comparisons, html_costs = [], [], [], []
    for a in analyses:
        timing = None
        if cfg.timing:
            cells = {key: cell.runs[0] for key, cell in a.table.cells.items() if cell.runs}
            timing = interleaved(cells, rounds=cfg.timing_rounds)
        heading = f"### {a.table.title}\n\n" if a.table.title else ""
        results, comparisons, cost = (results_rows(a, layout.cols), comparison_rows(a, layout.cols),
                                      cost_rows(a, layout.cols, timing))
        md.append(f"{heading}{markdown(*results)}\n\n#### Comparisons\n\n{markdown(*comparisons)}\n\n"
                  f"#### Cost\n\n{markdown(*cost)}\n")
        html_results.append((f"<h3>{a.table.title}</h3>" if a.table.title else "") +
                            table_html(*results, "results", results_classes(a)))
        html_comparisons.append(table_html(*comparisons, "comparisons"))
        html_costs.append(table_html(*cost, "cost"))
    cost_note = RUNS_COST + (" " + TIMED_COST if cfg.timing else " Run report.py with timing=true to time them fairly.")
    (out_dir / "results.md").write_text(
        f"# {title}\n\n## Findings\n\n" + "\n".join(f"- {f}" for f in found) + f"\n\n{method}\n\n"
        "Test error (%): mean [95% CI] (n = completed seeds); ★ lowest mean at the column; ≈ not significantly "
        "different from it.\n\n## Results\n\n" + "\n".join(md) + f"\n{cost_note}\n\n"
        "![batch sensitivity](batch_sensitivity.png)\n\n" + "".join(f"![convergence]({c})\n\n" for c in convergence)
        + (f"## Why\n\n{WHY_NOTE}\n\n" + "\n".join(why_md) + "\n" + "".join(f"![why]({f})\n\n" for f in why_figures)
           if why_md or why_figures else ""))
    write_html(out_dir / "index.html", title, found, method, html_results, "".join(html_comparisons), cost_note,
               "".join(html_costs), convergence, runs, why="".join(why_html), why_figures=why_figures,
               why_note=WHY_NOTE if why_md or why_figures else "")

    print(f"\n{title}\n\nFindings:")
    for f in found:
        print(f"  - {f}")
    for a in analyses:
        print(f"\n{a.table.title}" if a.table.title else "")
        print(markdown(*results_rows(a, layout.cols)))
    problems = sum(1 for r in runs if r.status != "completed") + sum(
        cell.problems.get("missing", 0) for a in analyses for cell in a.table.cells.values())
    if problems:
        print(f"\n{problems} run(s) did not complete or are missing; see the table and {out_dir / 'index.html'}")
    log_to_wandb(cfg, out_dir, title, experiment, found)
    print(f"\nreport: {out_dir / 'index.html'}")
    return out_dir

