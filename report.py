"""Turn a sweep's run directories into the conclusions a paper would print.

    python report.py runs/quick                      # writes runs/quick/report/
    python report.py runs/norm_vs_batch out_dir=/tmp/report wandb.mode=disabled
    python report.py runs/sweep select=optim.lr baseline=bn rows=norm facet=model ci=bootstrap
    python report.py runs/quick_zoo contrasts="gn conv=ws@2 vs bn@32" equivalence_margin=1 plan=true

Reads only local files (each run's summary.json, or its .hydra/config.yaml when it never got
that far, and the sweep's multirun.yaml for the seeds asked for) and writes the Findings,
batch_sensitivity.png, convergence.png, performance_profile.png, results.md, results.csv,
comparisons.csv, runs.csv, aggregate.csv, improvement.csv (plan.csv with plan=true) and
index.html. Runs are averaged only when they differ in nothing but the seed; every number
carries its 95% confidence interval. results/ does the work (results/__init__.py).
"""
from __future__ import annotations

import sys
from dataclasses import fields

import hydra
from omegaconf import DictConfig

from record.cli import one_line_errors
from results import make_report
from results.config import ReportConfig, register

register()
REPORT_OPTIONS = tuple(f.name for f in fields(ReportConfig))
LIST_OPTIONS = ("rows", "cols", "facet", "select")  # comma-separated keys
CONTRASTS = "contrasts"  # comma-separated '<series>@<column> vs <series>@<column>', or a Hydra list


@hydra.main(version_base="1.3", config_path="conf", config_name="report")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        make_report(cfg)


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _cli(argv: list[str]) -> list[str]:
    """`report.py runs/quick` means `runs_dir=runs/quick`; `select=a,b` is one option with two
    keys (Hydra would read the comma as a sweep); `contrasts=gn@2 vs bn@32,ln@8 vs bn@8` is a
    list of two contrasts (spaces, `=` and `@` inside are the labels' own)."""
    out = list(argv[:1])
    for arg in argv[1:]:
        key, eq, value = arg.partition("=")
        name = key.lstrip("+~").split(".")[0]
        if key[:1] in "+~" and name not in REPORT_OPTIONS and name != "hydra":  # Hydra would add it, unread
            print(f"error: {arg}: report.py has no option {name!r}; valid: {', '.join(REPORT_OPTIONS)}", file=sys.stderr)
            sys.exit(2)
        if not eq and not arg.startswith("-") and not out[1:]:
            arg = f"runs_dir={arg}"
        elif eq and key in LIST_OPTIONS and "," in value and value[:1] not in "'\"[":
            arg = f"{key}='{value}'"
        elif eq and key == CONTRASTS and value.strip()[:1] != "[":
            arg = f"{key}=[{','.join(_quoted(c.strip()) for c in value.split(',') if c.strip())}]"
        out.append(arg)
    return out


if __name__ == "__main__":
    if len(sys.argv) == 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        sys.exit(2)
    sys.argv = _cli(sys.argv)
    main()
