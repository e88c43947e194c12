"""The end of a multirun: the list of its runs that failed, whatever launcher ran them.

A Hydra callback (conf/hydra/default.yaml), so it runs in the process that launched the sweep
even when the jobs ran elsewhere (joblib's worker processes, SLURM). It reads what the jobs
left: each job's summary.json written since the sweep started, under the sweep directory.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from .record import SUMMARY_FILE

FAILED: list[str] = []  # "run name: error" of the last multirun of this process
FAILURES = ("failed", "interrupted")  # a diverged run is a finding, not a failure


def failed_runs(sweep_dir: Path, since: float) -> list[str]:
    out = []
    for path in sorted(Path(sweep_dir).rglob(SUMMARY_FILE)):
        try:
            if path.stat().st_mtime < since:
                continue
            summary = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and summary.get("status") in FAILURES:
            out.append(f"{summary.get('run_name', path.parent.name)} ({path.parent}): {summary.get('error')}")
    return out


class FailedRuns(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config, **kwargs) -> None:
        self.started = time.time() - 1  # file times have coarse resolution on some file systems
        FAILED.clear()

    def on_multirun_end(self, config, **kwargs) -> None:
        FAILED[:] = failed_runs(Path(config.hydra.sweep.dir), self.started)
