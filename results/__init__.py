"""From run directories to conclusions: what report.py runs.

    runs.py      read each run's summary.json (or Hydra config) and the grid the sweep asked for
    cells.py     group runs into (series, batch size) cells of seeds
    stats.py     confidence intervals, differences and their tests, Holm's adjustment
    tables.py    the results and cost tables, results.csv
    figures.py   batch sensitivity and convergence figures
    html.py      index.html from template.html
    publish.py   the report's W&B run
    make.py      make_report: all of the above, in order
Reads run directories only: nothing here imports the training harness but its record format.
"""
from .make import make_report

__all__ = ["make_report"]
