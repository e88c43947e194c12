"""A real sweep through the CLI: identities, skip on relaunch, resume after kill -9, the report."""
import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, clean_env, run_train, wandb_inspect
from PIL import Image

GRID = ["-m", "norm=bn,gn", "data.batch_size=4,16", "data=synthetic", "data.train_size=512",
        "trainer.max_epochs=3", "experiment_name=e2e"]


def summaries(sweep_dir: Path) -> dict:
    out = {}
    for path in sweep_dir.glob("*/summary.json"):
        s = json.loads(path.read_text())
        out[(s["norm"], s["batch_size"])] = s
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Launch the 2x2 sweep, kill -9 it while the third run is part-way, relaunch it."""
    sweep_dir = tmp_path_factory.mktemp("e2e")
    args = [*GRID, f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    interrupted = None
    while time.time() < deadline and proc.poll() is None:
        done = [p.parent for p in sweep_dir.glob("*/summary.json")]
        partial = [p.parent.parent for p in sweep_dir.glob("*/checkpoints/last.ckpt") if p.parent.parent not in done]
        if len(done) == 2 and partial:
            interrupted = partial[0]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert interrupted is not None, f"the sweep was not interrupted as planned:\n{proc.stdout.read()[-3000:]}"
    before = summaries(sweep_dir)
    relaunch = run_train(*args)
    return sweep_dir, interrupted, before, relaunch


def test_every_run_has_a_readable_identity(sweep):
    sweep_dir, *_ = sweep
    runs = summaries(sweep_dir)
    assert set(runs) == {("bn", 4), ("bn", 16), ("gn", 4), ("gn", 16)}
    identities = set()
    for (norm, bs), s in runs.items():
        assert s["status"] == "completed"
        run_dir = Path(s["output_dir"])
        assert run_dir.parent == sweep_dir
        assert run_dir.name == f"{norm}-resnet20-bs{bs}-s0-{s['identity']}"
        assert len(s["identity"]) == 8
        identities.add(s["identity"])
        record = wandb_inspect(run_dir / s["wandb"]["dir"])
        assert record["run_id"] == s["wandb"]["id"]
        assert record["config"]["experiment"] == "e2e" and record["config"]["identity"] == s["identity"]
        assert record["config"]["norm"] == norm and record["config"]["batch_size"] == bs
    assert len(identities) == 4


def test_relaunch_skips_completed_runs(sweep):
    sweep_dir, interrupted, before, relaunch = sweep
    after = summaries(sweep_dir)
    assert len(before) == 2
    for key, s in before.items():
        assert after[key]["finished_at"] == s["finished_at"] and after[key]["test_acc"] == s["test_acc"]
        run_dir = Path(s["output_dir"])
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # no second W&B run either
    skipped = [line for line in relaunch.stdout.splitlines() if "already completed" in line]
    assert len(skipped) == 2


def test_interrupted_run_resumes_from_its_checkpoint(sweep):
    sweep_dir, interrupted, _, relaunch = sweep
    s = json.loads((interrupted / "summary.json").read_text())
    assert s["status"] == "completed"
    assert s["resumed_from"]["global_step"] > 0
    assert "resuming" in relaunch.stdout
    assert [h["epoch"] for h in s["history"]] == [1, 2, 3]
    with open(interrupted / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val_epochs = [int(r["epoch"]) for r in rows if r.get("val/acc")]
    assert val_epochs == [1, 2, 3]  # every epoch exactly once, across the kill
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == sorted(set(steps))  # no step logged twice
    # W&B: the same run id resumed (offline: a second offline-run directory with that id).
    attempts = sorted((interrupted / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(p.name.endswith(s["wandb"]["id"]) for p in attempts)


@pytest.fixture(scope="module")
def report(sweep):
    sweep_dir, *_ = sweep
    # A deliberately failed run of the sweep's configuration but for the norm: ln has no 'token'
    # scope on CNN maps.
    failed = run_train("norm=ln", "norm.scope=token", "data=synthetic", "data.batch_size=4", "data.train_size=512",
                       "trainer.max_epochs=3", "experiment_name=e2e", f"hydra.run.dir={sweep_dir}/failed-ln", check=False)
    assert failed.returncode != 0
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(sweep_dir)], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return sweep_dir / "report", proc


def test_report_figures_decode_at_a_sensible_size(report):
    out, _ = report
    for name in ("batch_sensitivity.png", "convergence.png"):
        with Image.open(out / name) as img:
            img.load()
            assert img.width >= 600 and img.height >= 400, (name, img.size)


def test_report_table_has_every_cell_and_marks_failures(report, sweep):
    out, proc = report
    sweep_dir, *_ = sweep
    with open(out / "results.csv") as f:
        rows = {(r["series"], int(r["batch_size"])): r for r in csv.DictReader(f)}
    assert set(rows) == {(n, b) for n in ("bn", "ln", "gn") for b in (4, 16)}
    runs = summaries(sweep_dir)
    for norm in ("bn", "gn"):
        for bs in (4, 16):
            r = rows[norm, bs]
            assert (int(r["seeds_completed"]), int(r["seeds_expected"])) == (1, 1)
            assert float(r["test_error_mean"]) == pytest.approx(100 * (1 - runs[norm, bs]["test_acc"]), abs=1e-3)
            assert r["problems"] == ""
    assert rows["ln", 4]["problems"] == "failed=1" and rows["ln", 4]["seeds_completed"] == "0"
    assert rows["ln", 16]["problems"] == "missing=1"
    for bs in (4, 16):
        marked = [n for n in ("bn", "gn", "ln") if rows[n, bs]["best_at_batch_size"] == "True"]
        expected = min(("bn", "gn"), key=lambda n: float(rows[n, bs]["test_error_mean"]))
        assert marked == [expected]
    md = (out / "results.md").read_text()
    assert "failed 1/1" in md and "missing 1/1" in md and "★" in md
    html = (out / "index.html").read_text()
    assert 'src="batch_sensitivity.png"' in html and 'src="convergence.png"' in html and 'id="results"' in html
    assert "failed" in proc.stdout and "report:" in proc.stdout


def test_report_is_logged_to_a_wandb_report_run(report):
    out, _ = report
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    record = wandb_inspect(run_dir)
    assert record["name"] == f"report-{out.parent.name}"
    assert {"batch_sensitivity", "convergence", "results"} <= set(record["summary"])
