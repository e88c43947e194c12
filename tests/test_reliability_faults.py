"""Faults lose nothing already computed: kills, signals, full disks, divergence, concurrent launchers, failing sweeps."""
import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, WANDB, clean_env, one_line_error, run_train
from hydra import initialize_config_dir

CONF = REPO / "conf"


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield



# ---------------------------------------------------------------------------------------
# Faults: nothing already computed is lost
# ---------------------------------------------------------------------------------------
RUN = ["data=synthetic", "data.batch_size=8", "trainer.max_epochs=3"]


def _launch(run_dir, *extra):
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), *RUN, *extra, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended before the fault was injected:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    pytest.fail("timed out waiting to inject the fault")


def _wandb_epochs(run_dir: Path) -> list[int]:
    """Epochs with a val/acc record in the W&B history, over every attempt of the run."""
    epochs = []
    for attempt in sorted((run_dir / "wandb").glob("offline-run-*")):
        out = subprocess.run([WANDB, "leet", "inspect", "--json", str(attempt)], capture_output=True, text=True,
                             timeout=120, env=clean_env()).stdout
        for line in out.splitlines():
            record = json.loads(line)
            if record.get("type") == "history" and "val/acc" in record["history"]["item"]:
                epochs.append(int(record["history"]["item"]["epoch"]))
    return epochs


def _assert_logged_once(run_dir: Path):
    with open(run_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows if r.get("val/acc")] == [1, 2, 3]  # counted from 1, as the console
    steps = [int(r["step"]) for r in rows if r.get("train/loss_step")]
    assert steps == list(range(9, 3 * 128, 10))  # every 10th step of 3 epochs of 128, each once
    assert sorted(_wandb_epochs(run_dir)) == [1, 2, 3]


@pytest.mark.slow  # ~40 s; SIGTERM + relaunch (in make test) covers resuming too
def test_kill_9_mid_epoch_then_relaunch_resumes_and_logs_each_epoch_once(tmp_path):
    run_dir = tmp_path / "run"
    proc = _launch(run_dir, "checkpoint.every_n_steps=20")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(lambda: ckpt.is_file() and ckpt.stat().st_size > 0, proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < step < 128, "the checkpoint should be a mid-epoch one"
    relaunch = run_train(*RUN, "checkpoint.every_n_steps=20", f"hydra.run.dir={run_dir}")
    assert f"(step {step})" in relaunch.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    _assert_logged_once(run_dir)


# Real Fashion-MNIST with its random crops and flips (torch's global generator) and shuffling:
# 32 steps per epoch, a checkpoint every 3 steps.
AUGMENTED = ["data=fashion_mnist", "data.train_subset=1024", "data.val_size=256", "data.batch_size=32",
             "model=resnet8", "model.width=8", "trainer.max_epochs=2", "checkpoint.every_n_steps=3", "logger=csv"]


@pytest.mark.slow  # ~30 s, two trainings; the order's resumption is in make test (test_a_resumed_epoch_...)
def test_a_run_killed_mid_epoch_and_resumed_ends_bit_exact_with_one_that_never_stopped(tmp_path):
    whole = tmp_path / "whole"
    run_train(*AUGMENTED, f"hydra.run.dir={whole}")
    run_dir = tmp_path / "resumed"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *AUGMENTED, f"hydra.run.dir={run_dir}"],
                            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(lambda: ckpt.is_file() and ckpt.stat().st_size > 0, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
    assert step % 32, f"the checkpoint at step {step} should be a mid-epoch one"
    relaunch = run_train(*AUGMENTED, f"hydra.run.dir={run_dir}")
    assert f"(step {step})" in relaunch.stdout
    a = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    b = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 64
    different = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert different == [], f"weights differ after resuming at step {step}: {different[:5]}"
    for key in ("test_acc", "best_val_acc", "final_val_acc"):
        assert json.loads((whole / "summary.json").read_text())[key] == json.loads((run_dir / "summary.json").read_text())[key]


def test_a_step_limit_stops_a_run_resumably_and_the_resumed_epoch_counts_every_step(tmp_path):
    """trainer.max_steps under an epoch budget is a limit: the run stops at step 40 (mid epoch
    2) as `stopped`, not `completed`; relaunched without the limit (the same run: a limit is not
    part of its identity) it ends as the run that never stopped: the same weights, and epoch 2's
    training loss and accuracy over all of its steps, not only those after the resume."""
    whole, run_dir = tmp_path / "whole", tmp_path / "stopped"
    run_train(*AUGMENTED, f"hydra.run.dir={whole}")
    stopped = run_train(*AUGMENTED, "++trainer.max_steps=40", f"hydra.run.dir={run_dir}")
    assert "stopped by trainer.max_steps=40 at step 40, before its budget of 2 epochs" in stopped.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary.get("test_acc") is None
    assert summary["identity"] == json.loads((whole / "summary.json").read_text())["identity"]
    relaunch = run_train(*AUGMENTED, f"hydra.run.dir={run_dir}")
    assert "(step 40)" in relaunch.stdout
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, run_dir))
    assert b["status"] == "completed" and a["test_acc"] == b["test_acc"]
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [h[key] for h in a["history"]] == [h[key] for h in b["history"]], key
    assert [h["norm_diagnostics"] for h in a["history"]] == [h["norm_diagnostics"] for h in b["history"]]
    with open(whole / "metrics.csv") as f, open(run_dir / "metrics.csv") as g:
        header_a, header_b = next(csv.reader(f)), next(csv.reader(g))
    assert header_a == header_b  # every column (input_drift too: its last measurement is in the checkpoint)


def test_a_time_limit_stops_a_run_as_stopped_never_completed(tmp_path):
    proc = run_train(*RUN, "trainer.max_epochs=50", "++trainer.max_time=00:00:00:01", "logger=csv",
                     f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "stopped" and "trainer.max_time=0:00:01" in summary["error"], summary
    assert summary.get("test_acc") is None and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A file system of its own (tmpfs) that the test can fill: needs the right to mount."""
    disk = tmp_path / "disk"
    disk.mkdir()

    def mount(size_bytes: int, *options: str) -> Path:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size_bytes}", *options]), "tmpfs",
                               str(disk)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {proc.stderr.strip()}")
        return disk

    yield mount
    subprocess.run(["umount", str(disk)], capture_output=True)


@pytest.mark.slow  # ~17 s on a small tmpfs
def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_keeps_the_last_checkpoint(tmp_path, small_disk):
    first = tmp_path / "first"
    proc = _launch(first, "checkpoint.every_n_steps=20", "logger=csv")
    ckpt = first / "checkpoints" / "last.ckpt"
    _wait_for(lambda: ckpt.is_file() and ckpt.stat().st_size > 0, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = ckpt.read_bytes()
    used = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    # the run's directory on a disk with room for what it holds and not for another checkpoint
    disk = small_disk(used + len(before) // 2 + 64 * 1024)
    run_dir = disk / "run"
    shutil.copytree(first, run_dir)
    relaunch = run_train(*RUN, "checkpoint.every_n_steps=20", "logger=csv", f"hydra.run.dir={run_dir}",
                         env=clean_env(HYDRA_FULL_ERROR="0"), check=False)
    line = one_line_error(relaunch)
    assert line.startswith("error: [Errno 28] cannot write a checkpoint in") and "No space left on device" in line
    assert f"the last checkpoint, {run_dir / 'checkpoints' / 'last.ckpt'}, is intact" in line
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before  # the last good checkpoint, untouched
    left = sorted(p.name for p in run_dir.rglob("*") if p.is_file())
    assert not [n for n in left if "tmp" in n], left  # no temporary file fills the disk
    assert "Traceback" not in relaunch.stdout + relaunch.stderr  # not hundreds of traceback lines
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]


def test_the_training_order_and_augmentation_do_not_depend_on_num_workers(hydra_conf):
    import data as datasets

    def first_batches(num_workers, pipeline):
        torch.manual_seed(3)
        dm = datasets.build({"name": "fashion_mnist", "batch_size": 16, "val_size": 256, "train_subset": 256,
                             "num_workers": num_workers, "pipeline": pipeline})
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return [dm.preprocess(batch, train=True) if pipeline == "memory" else batch for _, batch in zip(range(3), loader)]

    # memory: augmented in this process from the global generator, which no loader draws from;
    # dataloader: augmented in the workers, each image from its own (seed, epoch, position) generator
    for pipeline in ("memory", "dataloader"):
        zero, two = first_batches(0, pipeline), first_batches(2, pipeline)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(zero, two)), pipeline


def test_a_resumed_epoch_continues_the_order_where_it_stopped():
    from data.order import EpochSampler

    full = list(EpochSampler(100, seed=7).__iter__())
    resumed = EpochSampler(100, seed=7)
    resumed.resume(epoch=0, samples=40)
    assert list(resumed) == full[40:] and list(resumed) == full  # only the interrupted epoch is cut
    later = EpochSampler(100, seed=7)
    later.set_epoch(1)
    assert sorted(later) == list(range(100)) and list(later) != full  # a new permutation each epoch
    assert list(EpochSampler(100, seed=8)) != full


def test_sigterm_saves_a_checkpoint_then_relaunch_resumes(tmp_path):
    run_dir = tmp_path / "run"
    proc = _launch(run_dir, "checkpoint.every_n_steps=null")
    _wait_for(lambda: (run_dir / "metrics.csv").is_file(), proc)  # part-way through epoch 1
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    step = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert f"checkpoint saved at step {step}" in out and 0 < step < 128
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    run_train(*RUN, "checkpoint.every_n_steps=null", f"hydra.run.dir={run_dir}")
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    _assert_logged_once(run_dir)


@pytest.mark.slow  # ~24 s of real runs
def test_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", "norm=none", "optim.lr=1000,0.1", "data=synthetic", "trainer.max_epochs=2",
                     f"hydra.sweep.dir={sweep}")
    by_lr = {json.loads(p.read_text())["base_lr"]: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert by_lr[1000]["status"] == "diverged" and by_lr[1000]["diverged_at_step"] >= 0
    assert "nan" in by_lr[1000]["error"] or "inf" in by_lr[1000]["error"]
    assert by_lr[0.1]["status"] == "completed"  # the next run of the sweep still ran
    assert "diverged" in proc.stdout
    report = subprocess.run([sys.executable, str(REPO / "report.py"), str(sweep), "wandb.mode=disabled"], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "diverged 1/" in (sweep / "report" / "results.md").read_text()


@pytest.mark.slow  # ~20 s of two concurrent sweeps
def test_two_launchers_never_train_the_same_run_twice(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "norm=bn,gn", "data=synthetic", "data.train_size=256", "trainer.max_epochs=2", f"hydra.sweep.dir={sweep}"]
    procs = [subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=clean_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    runs = [p.parent for p in sweep.glob("*/summary.json")]
    assert len(runs) == 2
    for run_dir in runs:
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # trained once, by one launcher
    trained = sum(out.count("test accuracy") - out.count("already completed") for out in outs)
    assert trained == 2
    assert any("being trained by another process" in o or "already completed" in o for o in outs)



# ---------------------------------------------------------------------------------------
# Sweeps: what a multirun says at its end, and a recipe run without -m
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("launcher", [[], pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                                           marks=pytest.mark.slow)], ids=["basic", "joblib"])
def test_a_sweep_with_failing_runs_ends_with_their_list(tmp_path, launcher):
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    proc = run_train("-m", *launcher, "data=synthetic", "data.train_size=128", "data.val_size=32",
                     "trainer.max_epochs=1", "logger=csv", "data.batch_size=1,16", "seed=0,1.5",
                     f"hydra.sweep.dir={tmp_path}", env=env, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    tail = proc.stderr[proc.stderr.index("3 run(s) of the sweep failed:"):].splitlines()
    assert len(tail) == 4 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    failed = "\n".join(tail)
    assert "bn-resnet20-bs1-s0" in failed and "norm=bn with data.batch_size=1" in failed
    assert "seed must be an integer, got 1.5" in failed
    assert "bn-resnet20-bs16-s0 " not in failed  # the one good run trained
    done = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert sorted(d["status"] for d in done) == ["completed", "failed", "failed", "failed"]


def test_a_recipe_without_multirun_says_it_trains_one_configuration_of_its_grid(tmp_path):
    proc = run_train("experiment=quick", "data.batch_size=1", f"hydra.run.dir={tmp_path}", check=False,
                     env=clean_env(HYDRA_FULL_ERROR="0"))
    first = proc.stdout.strip().splitlines()[0]
    assert first.startswith("note: this config defines a sweep (norm=bn,ln,in,gn, data.batch_size=2,8,32, seed=0,1,2); "
                            "without -m it trains one configuration (bn-resnet8-bs1-s0); add -m to run the sweep"), first


@pytest.mark.slow  # ~35 s of real runs
def test_paths_the_file_system_refuses_are_one_line(tmp_path, small_disk):
    env = clean_env(HYDRA_FULL_ERROR="0")
    read_only = small_disk(1 << 20, "ro")
    cases = [  # (overrides, the line's start)
        (["data=fashion_mnist", "data.root=/etc/passwd"],
         "error: [Errno 20] data.root=/etc/passwd cannot hold the data set: Not a directory"),
        (["data=fashion_mnist", f"data.root={read_only}/data"],
         f"error: [Errno 30] data.root={read_only}/data cannot hold the data set: Read-only file system"),
        (["data=synthetic", "run_name=" + "r" * 300],
         "error: run_name must be a non-empty name without '/', at most 200 bytes (it names a directory)"),
    ]
    for i, (overrides, start) in enumerate(cases):
        proc = run_train(*overrides, "logger=csv", f"hydra.run.dir={tmp_path / str(i)}", env=env, check=False)
        assert one_line_error(proc).startswith(start), proc.stderr[-2000:]
    # a run name too long for a directory: Hydra can still make the run's directory, where the refusal is recorded
    proc = run_train("data=synthetic", "logger=csv", "run_name=" + "r" * 300, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     "-m", env=env, check=False)
    assert proc.returncode == 1 and "1 run(s) of the sweep failed" in proc.stderr
    (summary,) = (tmp_path / "sweep").rglob("summary.json")
    assert len(summary.parent.name) == 200 + 9 and json.loads(summary.read_text())["status"] == "failed"


def test_a_run_stopped_after_its_last_step_keeps_every_row_and_column_of_its_csv_log(tmp_path):
    """A SIGTERM while testing leaves the checkpoint of the last step and an `interrupted`
    record (this test writes that state, which a signal cannot hit reliably). The relaunch
    resumes at the last step and only tests: the CSV log keeps the last epoch's row (its
    validation and diagnostics), which it once dropped with every column only that row had."""
    run = ["data=synthetic", "data.train_size=256", "data.batch_size=16", "trainer.max_epochs=2", "logger=csv",
           "diagnostics.every_n_steps=5", f"hydra.run.dir={tmp_path}"]
    run_train(*run)
    with open(tmp_path / "metrics.csv") as f:
        before = list(csv.DictReader(f))
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("test_acc", "test_loss"):
        summary.pop(key)
    (tmp_path / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "error": "signal"}))
    relaunch = run_train(*run)
    assert "(step 32)" in relaunch.stdout
    with open(tmp_path / "metrics.csv") as f:
        after = list(csv.DictReader(f))
    assert after == before
