"""The real CLI in subprocesses: it learns, and writes summary.json, the CSV log and the W&B run."""
import csv
import json
from pathlib import Path

import pytest
from conftest import WANDB, clean_env, run_train, wandb_environment, wandb_inspect

SUMMARY_KEYS = {"norm", "model", "data", "batch_size", "lr", "seed", "epochs", "best_val_acc", "final_val_acc",
                "test_acc", "train_seconds", "images_per_second", "num_params", "status", "config", "wandb"}
EPOCHS = 6  # in needs them on this data: 3 epochs gave 26-62 % over seeds 0-2, 6 epochs 94-98 %
NORMS = ("bn", "ln", "in", "gn", "none")
SYNTH = ["data=synthetic", f"trainer.max_epochs={EPOCHS}", "data.batch_size=32"]


def read_csv_epochs(path: Path) -> dict:
    """{epoch: val/acc} from the CSV log's epoch rows."""
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
    return {int(r["epoch"]): float(r["val/acc"]) for r in rows}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One real multirun over every norm on synthetic data."""
    sweep_dir = tmp_path_factory.mktemp("sweep")
    proc = run_train("-m", f"norm={','.join(NORMS)}", *SYNTH, f"hydra.sweep.dir={sweep_dir}")
    return sweep_dir, proc


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_learns_and_records_its_run(sweep, norm):
    sweep_dir, _ = sweep
    (run_dir,) = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.split("_", 1)[-1].startswith(f"{norm}-")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["status"] == "completed"
    assert (summary["norm"], summary["model"], summary["data"], summary["batch_size"]) == (norm, "resnet20", "synthetic", 32)
    assert summary["test_acc"] > 0.6, f"{norm} did not learn (4 classes, chance 0.25): {summary['test_acc']}"
    assert summary["epochs"] == summary["epochs_completed"] == EPOCHS
    assert summary["lr"] == pytest.approx(0.1 * 32 / 128)  # linear scaling from 0.1 at batch 128
    assert summary["optimization_batch_size"] == 32
    assert summary["normalization_batch_size"] == (32 if norm == "bn" else 1)
    assert summary["best_val_acc"] == max(h["val/acc"] for h in summary["history"])
    assert summary["config"]["norm"]["kind"] == norm

    # The CSV log holds every epoch's validation accuracy, matching the summary.
    csv_epochs = read_csv_epochs(run_dir / "metrics.csv")
    assert sorted(csv_epochs) == list(range(1, EPOCHS + 1))  # counted from 1, as the console and summary.json
    assert csv_epochs[EPOCHS] == pytest.approx(summary["final_val_acc"])

    # The W&B run (offline here: no key) is this job's own, not the previous job's.
    assert summary["wandb"]["mode"] == "offline"
    wandb_dir = run_dir / summary["wandb"]["dir"]  # recorded relative to the run directory
    assert wandb_dir.parent == run_dir / "wandb"
    record = wandb_inspect(wandb_dir)
    assert record["run_id"] == summary["wandb"]["id"]
    assert record["config"]["norm"] == norm and record["config"]["batch_size"] == 32
    # the whole resolved config as flat dotted keys, and the learning rate after scaling
    assert {k: v for k, v in record["config"].items() if k.startswith("norm.")} == \
        {f"norm.{k}": v for k, v in summary["config"]["norm"].items()}
    assert record["config"]["optim.lr"] == 0.1 and record["config"]["lr"] == pytest.approx(summary["lr"])
    assert record["config"]["data.batch_size"] == 32 and record["config"]["trainer.max_epochs"] == EPOCHS
    assert not any(isinstance(v, dict) for k, v in record["config"].items() if not k.startswith("_"))  # _wandb: W&B's
    assert record["name"] == f"{norm}-resnet20-bs32-s0-{summary['identity']}" == run_dir.name.split("_", 1)[-1]
    # one summary key per quantity: the curves' last values, not copies under other names
    assert not {"test_acc", "final_val_acc", "images_per_second"} & set(record["summary"])
    assert record["summary"]["train/images_per_second"] == pytest.approx(summary["images_per_second"])
    assert record["summary"]["epoch"] == EPOCHS
    # the sweep's W&B directory links every run, named like its directory, for `wandb leet <sweep>/wandb`
    link = sweep_dir / "wandb" / f"offline-run-{run_dir.name}"
    assert link.is_symlink() and link.resolve() == wandb_dir.resolve()
    assert wandb_inspect(link)["run_id"] == summary["wandb"]["id"]
    environment = wandb_environment(wandb_dir)
    assert sorted(environment["args"]) == sorted([f"norm={norm}", *SYNTH])  # the job's own overrides, not the sweep's
    assert f"norm:{norm}" in record["tags"]
    assert record["summary"]["test/acc"] == pytest.approx(summary["test_acc"])
    assert record["summary"]["val/acc"] == pytest.approx(summary["final_val_acc"])
    assert record["state"] == "finished"


@pytest.mark.slow  # drives W&B's terminal dashboard through a pseudo-terminal
def test_one_terminal_dashboard_lists_every_run_of_the_sweep(sweep):
    import os
    import pty
    import select
    import signal
    import time

    sweep_dir, _ = sweep
    pid, fd = pty.fork()
    if pid == 0:  # the child: W&B's dashboard on the sweep's W&B directory, in a 200x50 terminal
        os.environ.update(TERM="xterm-256color", COLUMNS="200", LINES="50")
        os.execv(WANDB, [WANDB, "leet", str(sweep_dir / "wandb")])
    screen, deadline = b"", time.time() + 20
    try:
        while time.time() < deadline and not all(f"offline-run-{n}-resnet20".encode() in screen for n in NORMS):
            if select.select([fd], [], [], 0.2)[0]:
                screen += os.read(fd, 1 << 16)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    listed = {n for n in NORMS if f"offline-run-{n}-resnet20-bs32-s0-".encode() in screen}
    assert listed == set(NORMS), screen[-3000:]


def test_the_workspace_plots_keys_the_runs_log(sweep):
    """Every key the norm-vs-batch workspace's panels and grouping read is one a real run logs
    (its W&B config, summary or history), so the workspace W&B would save shows data."""
    import re

    from results.workspace import norm_vs_batch_workspace, spec

    sweep_dir, _ = sweep
    text = json.dumps(spec(norm_vs_batch_workspace("someone", "normlab", "default")))
    config_keys = set(re.findall(r'config:([^"]+?)\.value', text)) | {"norm", "batch_size", "experiment"}
    summary_keys = set(re.findall(r'summary:([^"]+)', text))
    history_keys = {m for panel in re.findall(r'"metrics": \[([^]]*)\]', text) for m in re.findall(r'"([^"]+)"', panel)}
    assert {"batch_size", "normalization_batch_size"} <= config_keys and "test/acc" in summary_keys
    path = next(sweep_dir.glob("gn-*/summary.json"))
    summary = json.loads(path.read_text())
    record = wandb_inspect(path.parent / summary["wandb"]["dir"])
    assert config_keys <= set(record["config"]), config_keys - set(record["config"])
    assert summary_keys | history_keys <= set(record["summary"]), (summary_keys | history_keys) - set(record["summary"])
    assert record["config"]["experiment"] == "default"  # the filter's value for runs without a recipe


def test_multirun_prints_one_result_line_per_job(sweep):
    _, proc = sweep
    lines = [line for line in proc.stdout.splitlines() if "test accuracy" in line]
    assert [line.split(":")[0] for line in lines] == [f"{n}-resnet20-bs32-s0" for n in ("bn", "ln", "in", "gn", "none")]


def test_vit_with_trainer_override_and_unreachable_wandb(tmp_path):
    """A user with a W&B key but no network: the run goes offline at once and still completes.
    Any Trainer argument passes through (here limit_train_batches)."""
    env = clean_env(WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    run_train("model=vit", "optim=adamw", "norm=ln", "data=synthetic", "trainer.max_epochs=2",
              "model.hidden_dim=48", "model.num_layers=2", "model.num_heads=3", "model.mlp_dim=96",
              "++trainer.limit_train_batches=5", f"hydra.run.dir={tmp_path}", env=env, timeout=300)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["model"] == "vit"
    assert summary["wandb"]["mode"] == "offline"
    with open(tmp_path / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/lr")]
    assert max(steps) == 2 * 5 - 1  # 5 batches per epoch, not the 32 the data set has
    record = wandb_inspect(tmp_path / summary["wandb"]["dir"])
    assert record["config"]["model.arch"] == "vit" and record["config"]["norm"] == "ln"


def test_a_failing_run_says_failed_in_its_summary(tmp_path):
    proc = run_train("norm=gn", "norm.num_groups=5", "data=synthetic", f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "num_groups=5" in summary["error"]


@pytest.mark.slow  # torch.compile on CPU takes about a minute
def test_speed_options_do_not_change_the_result(tmp_path):
    """perf.channels_last and perf.compile change how steps run, not what is trained: the same
    run with and without them reaches the same accuracy (and has the same identity)."""
    results = {}
    for name, extra in (("plain", []), ("fast", ["perf.channels_last=true", "perf.compile=true"])):
        run_train("data=synthetic", "model.width=8", "trainer.max_epochs=1", "logger=csv", *extra,
                  f"hydra.run.dir={tmp_path / name}")
        results[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert results["fast"]["identity"] == results["plain"]["identity"]
    assert results["fast"]["test_acc"] == pytest.approx(results["plain"]["test_acc"], abs=1 / 256)
