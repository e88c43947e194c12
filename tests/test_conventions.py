"""What Lightning and Hydra users type: debug configs, tags, ckpt_path, trainer.precision=64."""
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO, clean_env, run_train
from hydra import compose, initialize_config_dir

import record
from harness import build
from record import RunRecord, RunSpec

TINY = ["data=synthetic", "data.train_size=256", "model=resnet8", "model.width=8", "logger=csv"]


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


@pytest.mark.parametrize("name,setting", [("fdr", "trainer.fast_dev_run"), ("overfit", "trainer.overfit_batches"),
                                          ("limit", "trainer.limit_train_batches"), ("profiler", "trainer.profiler")])
def test_each_debug_config_is_a_check_of_the_code_never_a_result(hydra_conf, name, setting):
    cfg = compose("config", overrides=[f"debug={name}", "experiment=quick"])
    assert setting in build.debug_settings(cfg)  # the summary says result=false; reports leave it out
    assert cfg.experiment_name == "debug"  # in runs/debug/, never among a study's runs


def test_tags_label_a_run_without_changing_what_it_is(hydra_conf):
    plain = compose("config")
    tagged = compose("config", overrides=["tags=[baseline,v2]"])
    assert list(tagged.tags) == ["baseline", "v2"]
    assert record.identity(tagged) == record.identity(plain)
    assert RunRecord.begin(tagged, RunSpec.of(tagged), Path("/nonexistent")).what.tags == ["baseline", "v2"]


def test_ckpt_path_resumes_from_that_checkpoint_only_if_it_is_this_runs(tmp_path):
    run_train(*TINY, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'a'}")
    given = tmp_path / "given.ckpt"
    shutil.copy(tmp_path / "a" / "checkpoints" / "last.ckpt", given)
    run_train(*TINY, "trainer.max_epochs=2", f"ckpt_path={given}", f"hydra.run.dir={tmp_path / 'b'}")
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["resumed_from"]["checkpoint"] == str(given)
    assert resumed["identity"] == first["identity"] and resumed["test_acc"] == first["test_acc"]
    one_line = clean_env(HYDRA_FULL_ERROR="0")
    other = run_train(*TINY, "trainer.max_epochs=3", f"ckpt_path={given}", f"hydra.run.dir={tmp_path / 'c'}",
                      check=False, env=one_line)
    assert other.returncode == 2 and f"error: {given} was written by another configuration" in other.stderr
    assert not (tmp_path / "c" / "checkpoints").exists()  # refused before training
    missing = run_train(*TINY, f"ckpt_path={tmp_path / 'none.ckpt'}", f"hydra.run.dir={tmp_path / 'd'}", check=False,
                        env=one_line)
    assert f"error: ckpt_path={tmp_path / 'none.ckpt'}: no such checkpoint file" in missing.stderr


def test_double_precision_trains_and_evaluates(tmp_path):
    """trainer.precision=64: Lightning converts the network; the images, made in float32 on the
    device, follow it (and PreciseBN's and the batch-statistics evaluations too)."""
    run_train(*TINY, "trainer.max_epochs=1", "trainer.precision=64", f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["precision"] == "64-true"
    assert summary["test_acc"] > 0.25 and "test_acc_precise_bn" in summary


def test_a_dry_run_lists_each_job_with_its_identity_and_state_and_trains_nothing(tmp_path):
    run_train("-m", "norm=bn", *TINY, "trainer.max_epochs=1", f"hydra.sweep.dir={tmp_path}")
    (done_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    proc = run_train("-m", "norm=bn,gn", "data.batch_size=32,1", *TINY, "trainer.max_epochs=1",
                     f"hydra.sweep.dir={tmp_path}", "hydra/launcher=dry_run", check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(f"[done] {done_dir}" in line for line in lines), proc.stdout
    refused = next(line for line in lines if "[refused]" in line)  # bn cannot train on batches of one
    assert f"{tmp_path}/bn-resnet8-bs1-s0-" in refused
    assert "error: norm=bn with data.batch_size=1" in lines[lines.index(refused) + 1]
    assert sum(f"[to run] {tmp_path}/gn-resnet8-bs" in line for line in lines) == 2
    assert "dry run: 4 run(s): 1 done, 1 refused, 2 to run; nothing trained" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([done_dir.name, "multirun.yaml"])  # no run started
