import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import launch, schema

REPO = Path(__file__).resolve().parents[1]
WANDB = str(Path(sys.executable).with_name("wandb"))

launch.prepare_process()  # as train.py: the ${identity:} resolver, the same warning filters
schema.register()  # as train.py: the schemas, and conf/config.yaml's open_trainer node


def clean_env(**extra) -> dict:
    """The environment of a user with no W&B login: no key, no mode forced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update({"PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1", **extra})
    return env


def run_train(*args, cwd=REPO, env=None, timeout=900, check=True) -> subprocess.CompletedProcess:
    """Run the real CLI, `python train.py ...`, in a subprocess."""
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"train.py {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The one line a CLI prints for a user's error (exit status 2, no traceback)."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def wandb_environment(run_dir: Path) -> dict:
    """The environment W&B recorded for an offline run (command-line arguments, program, ...),
    from its transaction log (`wandb leet inspect --json`)."""
    import json

    proc = subprocess.run([WANDB, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                          timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return next(r["environment"] for r in records if r.get("type") == "environment" and "args" in r["environment"])


def wandb_inspect(run_dir: Path) -> dict:
    """Read an offline W&B run back the honest way: `wandb leet inspect --summary --json`."""
    import json

    proc = subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(run_dir)],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
