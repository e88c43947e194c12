"""From run directories to conclusions: what report.py runs.

    config.py    the report's options, typed
    runs.py      each run's record (record/) and the grid the sweep asked for
    series.py    series and columns from what varies; (series, column) cells of seeds
    stats.py     confidence intervals, differences and their tests, Holm's adjustment
    analysis.py  the comparisons of each table and the Findings they support
    tables.py    the results, comparisons and cost tables; results.csv, comparisons.csv, runs.csv
    figures.py   batch sensitivity and convergence figures
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
