"""Scaling out through the real CLI: DDP with 2 CPU processes (gloo), and sweeps through
Hydra's joblib and submitit_local launchers; the SLURM launcher's config and job script."""
import csv
import dataclasses
import json
import os
from pathlib import Path

import pytest
from conftest import REPO, clean_env, run_train, wandb_inspect

TINY = ["data=synthetic", "model.width=8", "trainer.max_epochs=2"]


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "wandb")


@pytest.fixture(scope="module")
def ddp_sweep(tmp_path_factory):
    """A 2-run multirun, each run DDP over 2 CPU processes: bn without and with norm.sync."""
    cwd = tmp_path_factory.mktemp("cwd")  # where a stray run or multirun of a child would appear
    sweep_dir = tmp_path_factory.mktemp("ddp")
    proc = run_train("-m", "trainer=ddp_cpu", "norm=bn", "norm.sync=false,true", *TINY,
                     f"hydra.sweep.dir={sweep_dir}", cwd=cwd)
    return sweep_dir, cwd, proc


def test_ddp_runs_write_one_set_of_outputs_from_rank_zero(ddp_sweep):
    sweep_dir, cwd, proc = ddp_sweep
    dirs = run_dirs(sweep_dir)
    assert len(dirs) == 2  # one directory per run, not one per process
    assert list(cwd.iterdir()) == []  # no child started a run (or a whole multirun) of its own
    assert proc.stdout.count("test accuracy") == 2  # each run reports once
    for run_dir in dirs:
        assert len(list(run_dir.rglob("summary.json"))) == 1
        assert len(list(run_dir.rglob("metrics.csv"))) == 1
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
        with open(run_dir / "metrics.csv") as f:
            epochs = [row["epoch"] for row in csv.DictReader(f) if row.get("val/loss")]
        assert epochs == ["1", "2"]  # each epoch logged once, by one process


@pytest.mark.parametrize("sync", [False, True])
def test_ddp_summary_records_the_three_batch_sizes(ddp_sweep, sync):
    sweep_dir, _, _ = ddp_sweep
    summaries = [(d, json.loads((d / "summary.json").read_text())) for d in run_dirs(sweep_dir)]
    ((run_dir, s),) = [(d, s) for d, s in summaries if s["config"]["norm"]["sync"] is sync]
    assert s["status"] == "completed" and s["epochs_completed"] == 2
    assert s["test_acc"] > 0.4, s["test_acc"]  # 4 classes, chance 0.25: it learned something in 2 epochs
    assert (s["world_size"], s["per_device_batch_size"], s["optimization_batch_size"]) == (2, 32, 64)
    # unsynchronized bn normalizes over one process's batch; synchronized over both
    assert s["normalization_batch_size"] == (64 if sync else 32)
    assert s["lr"] == pytest.approx(0.1 * 64 / 128)  # linear scaling by the optimization batch
    record = wandb_inspect(run_dir / s["wandb"]["dir"])
    assert record["config"]["world_size"] == 2
    assert record["config"]["normalization_batch_size"] == s["normalization_batch_size"]
    assert record["summary"]["test/acc"] == pytest.approx(s["test_acc"])


def test_ddp_test_metrics_cover_every_test_image(ddp_sweep):
    """The 256 test images are split over 2 processes; the summary's test loss and accuracy must
    be those of the saved model on all 256, not on one process's 128: re-evaluated here, in one
    process, from the run's checkpoint."""
    import torch
    import torch.nn.functional as F

    import data
    import models

    sweep_dir, _, _ = ddp_sweep
    for run_dir in run_dirs(sweep_dir):
        s = json.loads((run_dir / "summary.json").read_text())
        cfg = s["config"]
        dm = data.build(cfg["data"])
        dm.setup()
        net = models.build(cfg["model"], cfg["norm"], dm.in_channels, dm.num_classes, dm.image_size)
        state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
        x, y = dm.preprocess(next(iter(dm.test_dataloader())), train=False)
        assert len(y) == 256
        with torch.no_grad():
            logits = net.eval()(x)
        assert s["test_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-4)
        assert s["test_acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1e-9)


def test_sync_batchnorm_flag_points_to_norm_sync(tmp_path):
    proc = run_train("trainer=ddp_cpu", "+trainer.sync_batchnorm=true", *TINY, f"hydra.run.dir={tmp_path}",
                     env=clean_env(HYDRA_FULL_ERROR="0"), check=False)
    assert proc.returncode == 2
    assert "use norm.sync=true" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("launcher", ["joblib", pytest.param("submitit_local", marks=pytest.mark.slow)])
def test_a_sweep_through_a_hydra_launcher(tmp_path, launcher):
    # submitit_local starts every job of the sweep at once: one core each here
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.cpus_per_task=1"]
    proc = run_train("-m", f"hydra/launcher={launcher}", *extra, "norm=bn,gn", *TINY, "trainer.max_epochs=1",
                     "logger=csv", f"hydra.sweep.dir={tmp_path}")
    dirs = run_dirs(tmp_path)
    assert sorted(d.name.split("-")[0] for d in dirs) == ["bn", "gn"], proc.stdout[-2000:]
    for run_dir in dirs:
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["status"] == "completed" and s["test_acc"] > 0.3
        # the 2 parallel jobs share the cores instead of each taking all of them
        assert s["torch_threads"] == (max(1, (os.cpu_count() or 1) // 2) if launcher == "joblib" else 1)
    if launcher == "submitit_local":
        assert list((tmp_path / ".submitit").rglob("*_result.pkl"))  # submitit ran and returned the jobs


# ---------------------------------------------------------------------------------------
# SLURM: no cluster here, so the config and the job script it produces are checked
# ---------------------------------------------------------------------------------------
def compose_slurm(*overrides, env=None):
    from hydra import compose, initialize_config_dir


    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=submitit_slurm", *overrides], return_hydra_config=True)
    return cfg


def test_slurm_config_composes_from_the_plugins_own_and_states_only_what_normlab_sets():
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf
    from omegaconf import OmegaConf

    plugin = {f.name: f.default for f in dataclasses.fields(SlurmQueueConf) if f.default is not dataclasses.MISSING}
    ours = OmegaConf.load(REPO / "conf/hydra/launcher/submitit_slurm.yaml")
    assert all(OmegaConf.to_container(ours)[k] != plugin.get(k) for k in ours)  # no copy of a plugin default
    launcher = compose_slurm("trainer=ddp", "trainer.devices=4").hydra.launcher
    assert set(launcher) == {f.name for f in dataclasses.fields(SlurmQueueConf)}
    for key in set(plugin) - set(ours) - {"submitit_folder", "name"}:  # those two interpolate Hydra's own keys
        assert launcher[key] == plugin[key], key


def test_slurm_defaults_come_from_trainer_and_environment(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    # submitit only renders a SLURM job script where `srun` exists: a stand-in that is never run
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("NORMLAB_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("NORMLAB_SLURM_TIMEOUT_MIN", "720")
    cfg = compose_slurm("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path}")
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (params["partition"], params["timeout_min"]) == ("gpu-a100", 720)
    assert (params["nodes"], params["gpus_per_node"], params["tasks_per_node"]) == (2, 4, 4)

    # The job script submitit writes from them, mapped as the plugin maps them.
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="slurm",
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout", "_target_")})
    script = executor._executor._make_submission_file_text("python train.py", "uid")
    for line in ("#SBATCH --partition=gpu-a100", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --nodes=2", "#SBATCH --time=720", "#SBATCH --cpus-per-task=8"):
        assert line in script, script


def test_slurm_needs_a_number_of_gpus(tmp_path):
    proc = run_train("-m", "hydra/launcher=submitit_slurm", "trainer=ddp", *TINY, f"hydra.sweep.dir={tmp_path}",
                     env=clean_env(HYDRA_FULL_ERROR="0"), check=False)
    assert proc.returncode != 0
    assert "needs trainer.devices to be the number of GPUs per node" in proc.stderr + proc.stdout


# ---------------------------------------------------------------------------------------
# Ghost batch norm through the recipe: normalization batch vs optimization batch
# ---------------------------------------------------------------------------------------
@pytest.mark.slow  # ~25 s: a real recipe sweep and its report
def test_norm_batch_vs_opt_batch_records_both_batches_and_reports_them(tmp_path):
    import subprocess
    import sys

    run_train("-m", "experiment=norm_batch_vs_opt_batch", "data=synthetic", "model.width=8", "trainer.max_epochs=1",
              "norm.virtual_batch_size=4,16", "data.batch_size=16", "seed=0", "logger=csv",
              f"hydra.sweep.dir={tmp_path}")
    recorded = {}
    for run_dir in run_dirs(tmp_path):
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["status"] == "completed"
        recorded[s["config"]["norm"]["virtual_batch_size"]] = (s["normalization_batch_size"], s["optimization_batch_size"])
    assert recorded == {4: (4, 16), 16: (16, 16)}

    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path), "wandb.mode=disabled"], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "report" / "results.csv") as f:
        assert [row["series"] for row in csv.DictReader(f)] == ["bn (ghost 4)", "bn (ghost 16)"]
