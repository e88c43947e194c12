"""How many seeds a study needs, sized before it runs from a finished sweep's seed-to-seed
spread (studies/ use it on the quick study): `python -m results.seeds runs/quick/report/runs.csv`."""
from __future__ import annotations

import argparse
import csv
import statistics

from .power import MOST_SEEDS, POWER, detectable_difference, seeds_needed
from .stats import ALPHA


def main(argv: list[str] | None = None) -> int:
    """`python -m results.seeds <report>/runs.csv --difference 1`: from a finished sweep's
    seed-to-seed spread (test error, per cell of its varying keys but the seed), the seeds per
    side a Welch test needs to detect `difference` points with 80 % power, at the median
    cell's spread and at the widest; how a study is sized before it runs."""
    p = argparse.ArgumentParser(prog="python -m results.seeds", description=main.__doc__.split("\n\n")[0])
    p.add_argument("runs_csv", help="a report's runs.csv (python report.py <sweep> writes <sweep>/report/runs.csv)")
    p.add_argument("--difference", type=float, default=1.0, help="points of test error to detect (default 1)")
    args = p.parse_args(argv)
    with open(args.runs_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "completed"]
    fixed = ("seed", "status", "test_error", "val_error", "best_epoch", "images_per_second", "path")
    cells: dict = {}
    for r in rows:
        cells.setdefault(tuple((k, v) for k, v in r.items() if k not in fixed), []).append(float(r["test_error"]))
    sds = sorted(statistics.stdev(v) for v in cells.values() if len(v) > 1)
    if not sds:
        print("error: no cell has two completed seeds", flush=True)
        return 2
    print(f"{len(sds)} cells with 2+ seeds: seed-to-seed sd of test error {sds[0]:.2f} to {sds[-1]:.2f} points, "
          f"median {statistics.median(sds):.2f}")
    for label, sd in (("median", statistics.median(sds)), ("widest", sds[-1])):
        n = seeds_needed(args.difference, sd, sd)
        seen = detectable_difference(sd, sd, 5, 5)
        print(f"at the {label} sd ({sd:.2f}): {n if n else f'more than {MOST_SEEDS}'} seeds per side to detect "
              f"{args.difference:g} point(s) with {POWER:.0%} power (two-sided Welch, alpha {ALPHA}); "
              f"5 seeds per side detect about {seen:.1f} points")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
