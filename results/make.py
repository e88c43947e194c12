"""make_report: a sweep's run directories in, the report's files out."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from . import stats
from .aggregate import aggregates, improvements
from .analysis import analyse, parse_contrast, resolve_contrast
from .figures import plot_convergence, plot_profile, plot_sensitivity
from .findings import findings, points
from .html import results_classes, table_html, write_html
from .plan import advice, needs, write_plan_csv
from .publish import log_to_wandb
from .runs import read_runs, requested_seeds
from .series import make_layout, tables, varying_keys
from .tables import (LEGEND, aggregate_rows, comparison_rows, cost_rows, improvement_rows, markdown, results_rows,
                     write_aggregate_csv, write_comparisons_csv, write_improvement_csv, write_results_csv, write_runs_csv)
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


AGGREGATE_NOTE = ("Across the columns, per series (rliable's recommendations, computed with numpy/scipy): the "
                  "interquartile mean (IQM) of test error over the completed runs with a 95% stratified-bootstrap "
                  "interval (runs resampled within each cell), and the runs that did not complete, counted; the "
                  "probability that a run of one series has lower test error than a run of the other at the same "
                  "column (averaged over columns, 95% stratified-bootstrap interval); performance_profile.png: the "
                  "fraction of runs at or below each test error, a failed run counting as never. A summary across "
                  "batch sizes, beside the per-column tests, not instead of them. With 3 runs per cell, a probability "
                  "interval of [1.00, 1.00] means every run of X beat every run of Y at every column: complete "
                  "separation in these runs, which the bootstrap cannot see past, not certainty.")


def _check_choice(name: str, value: str, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name}={value}: valid values are {', '.join(valid)}")


def _contrasts(cfg: DictConfig) -> list[str]:
    """The contrasts typed, each parsed once here so that a malformed one fails before any work."""
    contrasts = [str(c) for c in (cfg.contrasts or [])]
    for text in contrasts:
        parse_contrast(text)
    return contrasts


def _method(cfg: DictConfig, runs: int) -> str:
    interval = ("Student t, truncated to [0, 100], the range of an error rate (truncation keeps the coverage: the "
                "true mean is inside)" if cfg.ci == "t" else "percentile bootstrap (inside the runs' range)")
    test = "Welch t-test" if cfg.test == "welch" else "exact permutation test"
    held = "Welch's" if cfg.test == "welch" else "the permutation test's, inverted"
    return (f"{runs} runs; a cell holds runs that differ only by seed. Cell intervals: 95% {interval}, of the mean. "
            f"Each comparison: {test}, Holm-adjusted over the table's family (every series against the best and the "
            f"baseline at each column, and the contrasts; each pair of cells once) and, separately, over the column "
            f"effects; its interval is {held} at the Holm-adjusted level (0.05 × p / Holm p), which excludes 0 "
            f"exactly when Holm p < 0.05. Equivalent: two one-sided Welch tests (TOST) within "
            f"{points(cfg.equivalence_margin)}, Holm-adjusted: the Holm-adjusted 90% CI lies inside the margin. "
            "Not distinguishable: neither shown; not the same as equal. \"Detects about X points\": the difference "
            "a two-sided Welch test finds with 80% power at the cells' n and spreads, at Holm's threshold for that "
            "comparison (0.05 / (m − rank), rank 0 the smallest of the family's m p-values).")


def make_report(cfg: DictConfig) -> Path:
    _check_choice("ci", cfg.ci, stats.CI_METHODS)
    _check_choice("test", cfg.test, stats.TESTS)
    if not cfg.equivalence_margin > 0:
        raise ValueError(f"equivalence_margin={cfg.equivalence_margin:g}: must be a positive number of points of test "
                         "error, e.g. equivalence_margin=1")
    contrasts = _contrasts(cfg)
    runs_dir = Path(cfg.runs_dir).expanduser().resolve()
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory {runs_dir} does not exist")
    out_dir = Path(cfg.out_dir).expanduser().resolve() if cfg.out_dir else runs_dir / "report"
    runs = read_runs(runs_dir, skip=out_dir, include_debug=cfg.include_debug)
    if not runs:
        raise FileNotFoundError(f"no runs (summary.json or .hydra/config.yaml) found under {runs_dir}")
    layout = make_layout(runs, cols=cfg.cols, rows=cfg.rows, facet=cfg.facet, select=cfg.select)
    seeds = requested_seeds(runs_dir)
    all_tables = tables(runs, layout, seeds)
    for text in contrasts:
        if not any(resolve_contrast(t, parse_contrast(text)) for t in all_tables):
            t = all_tables[0]
            raise ValueError(f"contrasts: {text!r}: no table has both cells; series: {', '.join(t.labels.values())}; "
                             f"columns: {', '.join(map(str, t.columns))}")
    analyses = [analyse(t, ci=cfg.ci, test=cfg.test, baseline=cfg.baseline, contrasts=contrasts,
                        margin=cfg.equivalence_margin) for t in all_tables]
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
    method = _method(cfg, len(runs))
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
    summed = [(a, aggregates(a), improvements(a)) for a in analyses]
    write_aggregate_csv(out_dir / "aggregate.csv", summed)
    write_improvement_csv(out_dir / "improvement.csv", summed)
    plot_profile(out_dir / "performance_profile.png", analyses)
    plan = ""
    (out_dir / "plan.csv").unlink(missing_ok=True)  # never an earlier report's plan beside this one
    if cfg.plan:
        undecided = needs(analyses, layout.cols)
        write_plan_csv(out_dir / "plan.csv", undecided)
        plan = advice(undecided, runs_dir, seeds or sorted({r.seed for r in runs if r.seed is not None}),
                      sum(len(a.table.cells) for a in analyses))

    md, html_results, html_comparisons, html_costs, md_aggregate, html_aggregate = [], [], [], [], [], []
    for a, agg, imp in summed:
        heading = f"### {a.table.title}\n\n" if a.table.title else ""
        md_aggregate.append(f"{heading}{markdown(*aggregate_rows(agg))}\n\n{markdown(*improvement_rows(imp))}\n")
        html_aggregate.append((f"<h3>{a.table.title}</h3>" if a.table.title else "") + table_html(
            *aggregate_rows(agg), "aggregate") + table_html(*improvement_rows(imp), "improvement"))
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
    interval = "Student t truncated to [0, 100]" if cfg.ci == "t" else "percentile bootstrap"
    legend = (f"Test error (%): mean [95% CI, {interval}] (n = completed seeds); "
              + LEGEND.format(margin=cfg.equivalence_margin) + ".")
    (out_dir / "results.md").write_text(
        f"# {title}\n\n## Findings\n\n" + "\n".join(f"- {f}" for f in found) + f"\n\n{method}\n\n"
        + (f"## Plan\n\n{plan}\n\n" if plan else "") + f"## Results\n\n{legend}\n\n" + "\n".join(md)
        + f"\n{cost_note}\n\n## Across columns\n\n{AGGREGATE_NOTE}\n\n" + "\n".join(md_aggregate)
        + "\n![performance profile](performance_profile.png)\n\n![batch sensitivity](batch_sensitivity.png)\n\n"
        + "".join(f"![convergence]({c})\n\n" for c in convergence)
        + (f"## Why\n\n{WHY_NOTE}\n\n" + "\n".join(why_md) + "\n" + "".join(f"![why]({f})\n\n" for f in why_figures)
           if why_md or why_figures else ""))
    write_html(out_dir / "index.html", title, found, method, html_results, "".join(html_comparisons), cost_note,
               "".join(html_costs), convergence, runs, why="".join(why_html), why_figures=why_figures,
               why_note=WHY_NOTE if why_md or why_figures else "", legend=legend, plan=plan,
               aggregate_note=AGGREGATE_NOTE, aggregate="".join(html_aggregate))

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
    if plan:
        print(f"\n{plan}")
    log_to_wandb(cfg, out_dir, title, experiment, found)
    print(f"\nreport: {out_dir / 'index.html'}")
    return out_dir

