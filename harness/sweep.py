"""The end of a multirun: the list of its runs that failed, whatever launcher ran them.

A Hydra callback (conf/hydra/default.yaml), so it runs in the process that launched the sweep
even when the jobs ran elsewhere (joblib's worker processes, SLURM). It reads what the jobs
left: each run directory under the sweep directory whose summary.json was written since the
sweep started, through record.RunDir.
"""
from __future__ import annotations

import time
from pathlib import Path

from hydra.experimental.callback import Callback

from record import SUMMARY_FILE, Malformed, RunDir

FAILED: list[str] = []  # "run name: error" of the last multirun of this process
FAILURES = ("failed", "interrupted")  # a diverged run is a finding, not a failure


def failed_runs(sweep_dir: Path, since: float) -> list[str]:
    out = []
    for path in sorted(Path(sweep_dir).rglob(SUMMARY_FILE)):
        try:
            if path.stat().st_mtime < since:
                continue
            record = RunDir(path.parent).read()
        except (OSError, Malformed):
            continue
        if record is not None and record.status in FAILURES:
            out.append(f"{record.what.run_name or path.parent.name} ({path.parent}): {record.error}")
    return out


class FailedRuns(Callback):
    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config, **kwargs) -> None:
        self.started = time.time() - 1  # file times have coarse resolution on some file systems
        FAILED.clear()

    def on_multirun_end(self, config, **kwargs) -> None:
        FAILED[:] = failed_runs(Path(config.hydra.sweep.dir), self.started)
