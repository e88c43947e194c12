"""From run directories to conclusions: what report.py runs.

    config.py    the report's options, typed
    runs.py      each run's record (record/) and the grid the sweep asked for
    series.py    series and columns from what varies; (series, column) cells of seeds
    stats.py     confidence intervals, differences and their tests, Holm's adjustment, TOST
    power.py     what a comparison can detect, and the seeds it would need
    analysis.py  the comparisons of each table, one Holm family, and their verdicts
    findings.py  the Findings: sentences from the verdicts
    aggregate.py across columns: IQM, probability of improvement, performance profile, failures
    plan.py      plan=true: plan.csv and the command that adds the seeds
    tables.py    the results, comparisons, cost and aggregate tables; their CSV files
    figures.py   batch sensitivity, convergence and performance-profile figures
    why.py       the Why section: evaluation statistics, batch noise, input drift
    timing.py    every cell's configuration timed in turns (timing=true)
    html.py      index.html from template.html
    publish.py   the report's W&B run
    workspace.py the norm-vs-batch W&B workspace as code (python -m results.workspace)
    make.py      make_report: all of the above, in order
Reads run directories only, through record/: nothing here imports the training harness.
"""
from .make import make_report

__all__ = ["make_report"]
