"""What a run is and what it leaves behind, in a room that knows no torch and no Lightning.

    identity.py    a run's identity (a hash of what it trains) and RunSpec, computed once per run
    run.py         RunRecord: the typed record saved as summary.json
    rundir.py      RunDir: a run directory, its state (done, stale, partial, failed, foreign, to
                   run), its lock
    code.py        the commit and package versions a run records
    io.py          atomic JSON writes, setting aside a file that cannot be trusted
    secrets.py     keys and tokens never reach a file or the console
    wandb_mode.py  W&B online when possible, offline otherwise, never hanging
    cli.py         one line per user error, for every entry point

Training (harness/) writes records through here; the report (results/), eval.py and the dry
run read them through here.
"""
from .identity import RunSpec, identity
from .run import SUMMARY_FILE, Malformed, RunRecord
from .rundir import NotThisRun, RunDir, State

__all__ = ["Malformed", "NotThisRun", "RunDir", "RunRecord", "RunSpec", "SUMMARY_FILE", "State", "identity"]
