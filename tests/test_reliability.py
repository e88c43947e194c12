"""Bad input gets one clear error before training; faults lose nothing; secrets never leak."""
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
from conftest import REPO, WANDB, clean_env, run_train, wandb_inspect
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException

from harness import build, schema

CONF = REPO / "conf"


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


# ---------------------------------------------------------------------------------------
# Bad input: each is rejected before training, with a message naming what was wrong
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("override,valid", [
    ("norm=batchnorm", ["bn", "gn", "in", "ln", "none"]),
    ("model=resnet99", ["resnet18", "resnet20", "resnet50", "resnet56", "vit"]),
    ("data=mnist", ["cifar10", "cifar100", "fashion_mnist", "synthetic"]),
    ("experiment=nope", ["norm_vs_batch", "norm_vs_batch_vit", "quick"]),
])
def test_unknown_names_list_the_valid_ones(hydra_conf, override, valid):
    with pytest.raises(MissingConfigException) as info:
        compose("config", overrides=[override])
    message = str(info.value)
    assert override.split("=")[1] in message
    assert all(v in message for v in valid), message


BAD_VALUES = [
    (["norm=gn", "norm.num_groups=32"], r"num_groups=32 does not divide the 16 channels of layer 'stem.1'.*\[1, 2, 4, 8, 16\]"),
    (["model=vit", "model.hidden_dim=48", "model.num_heads=2", "norm=gn", "norm.num_groups=5"],
     r"num_groups=5 does not divide the 48 channels of layer 'encoder.layers.encoder_layer_0.ln_1'"),
    (["norm=bn", "data.batch_size=1"], r"norm=bn with data.batch_size=1"),
    (["data.batch_size=5000"], r"data.batch_size=5000 is larger than the training set \(1024 images\)"),
    (["data.batch_size=0"], r"data.batch_size must be a positive integer, got 0"),
    (["data.batch_size=-8"], r"data.batch_size must be a positive integer, got -8"),
    (["data.batch_size=eight"], r"data.batch_size must be an integer, got 'eight'"),
    (["optim.lr=0"], r"optim.lr must be a positive number, got 0"),
    (["optim.lr=fast"], r"optim.lr must be a number, got 'fast'"),
    (["trainer.max_epochs=-1"], r"trainer.max_epochs=-1 is a step budget: it needs trainer.max_steps"),
    (["trainer.max_epochs=ten"], r"trainer.max_epochs must be an integer or null, got 'ten'"),
    (["optim.warmup_epochs=-1"], r"optim.warmup_epochs must be a number of epochs, 0 or more, got -1"),
    (["optim.lr=inf"], r"optim.lr must be a positive number, got inf"),
    (["trainer.max_epochs=-1", "++trainer.max_steps=-1"], r"trainer.max_epochs=-1 is a step budget"),
    (["optim.lr_scaling=cubic"], r"optim.lr_scaling must be one of linear, sqrt, none, got 'cubic'"),
    (["model=vit", "model.hidden_dim=48", "model.num_heads=2", "norm=ln", "norm.scope=channel"],
     r"norm.scope must be one of token, sample, got 'channel'"),
    (["norm=ln", "norm.scope=token"], r"ln scope 'token' is not available for layout 'nchw'"),
    # the typed schema (harness/schema.py): types, unknown keys and ranges, each named as typed
    (["+norm.momentum=2"], r"^norm.momentum must be a number from 0 to 1, got 2$"),
    (["+norm.affine=maybe"], r"^norm.affine must be true or false, got 'maybe'$"),
    (["norm=ln", "+norm.eps=-1"], r"^norm.eps must be a positive number, got -1$"),
    (["norm=gn", "+norm.momentum=0.1"], r"^norm.momentum: no such key.*valid keys of norm: kind, eps, affine, num_groups"),
    (["seed=1.7"], r"^seed must be an integer, got 1.7$"),
    (["seed=-1"], r"^seed must be an integer from 0 to 2\*\*32 - 1, got -1$"),
    (["data.train_subset=-700"], r"^data.train_subset must be a positive integer, got -700$"),
    (["data.val_size=abc"], r"^data.val_size must be an integer, got 'abc'$"),
    (["data.num_workers=-1"], r"^data.num_workers must be an integer, 0 or more, got -1$"),
    (["data.pipeline=gpu"], r"^data.pipeline must be one of memory, dataloader, got 'gpu'$"),
    (["data.noise=-0.5"], r"^data.noise must be 0 or more, got -0.5$"),
    (["checkpoint.every_n_steps=-1"], r"^checkpoint.every_n_steps must be a positive integer, got -1$"),
    (["+optim.momentum=0.0"], r"^optim.momentum: no such key; did you mean norm.momentum or optim.optimizer.momentum\?"),
    (["+foo=1"], r"^foo: no such key \(valid keys at the top level: seed, .*checkpoint, eval, diagnostics, tags, ckpt_path\)$"),
    (["model.width=-8"], r"^model.width must be a positive integer, got -8$"),
    (["+model.dropout=0.1"], r"^model.dropout: no such key .*valid keys of model: name, arch, gn_groups, depth, width, zero_init_residual"),
    (["model=vit", "+model.dropout=1.5"], r"^model.dropout must be a number from 0 up to \(not including\) 1, got 1.5$"),
    (["++trainer.accumulate_grad_batches=0"], r"^trainer.accumulate_grad_batches must be a positive integer, got 0$"),
    (["++trainer.max_epohcs=3"], r"^trainer.max_epohcs: no such key .*max_epochs"),
    (["trainer.max_epohcs=3"], r"^trainer.max_epohcs: no such key .*max_epochs"),  # without ++, as Lightning users type
    (["trainer.accumulate_grad_batches=0"], r"^trainer.accumulate_grad_batches must be a positive integer, got 0$"),
    (["+optim.optimizer.momentm=0.5"], r"^optim.optimizer.momentm: not an argument of torch.optim.SGD; valid: momentum,"),
    (["optim.optimizer.momentum=-1"], r"^optim.optimizer: torch.optim.SGD refuses .*Invalid momentum value: -1"),
    (["optim.optimizer._target_=torch.optim.Nope"], r"^optim.optimizer._target_: 'torch.optim.Nope' is not an importable"),
    (["norm.kind=xx"], r"^norm.kind: unknown norm kind 'xx'; valid: bn, brn, evonorm_b0, evonorm_s0, frn, gn, in, ln, ln2d, none, rms$"),
    (["run_name=a/b"], r"^run_name must be a non-empty name without '/'"),
    (["run_name=" + "x" * 201], r"^run_name must be .*at most 200 bytes"),
    (["rerun=always"], r"^rerun must be one of none, stale, got 'always'$"),
    (["logger=wandb", "logger.wandb.mode=onlin"], r"^logger.wandb.mode must be one of auto, online, offline, disabled"),
    (["progress_bar=maybe"], r"^progress_bar must be one of auto, true, false, got 'maybe'$"),
    (["num_threads=0"], r"^num_threads must be auto or a positive integer, got 0$"),
    (["norm=brn", "norm.r_max=0.5"], r"^norm.r_max must be a number, 1 or more, got 0.5$"),
    (["norm=brn", "norm.d_max=-1"], r"^norm.d_max must be 0 or more, got -1$"),
    (["norm=rms", "+norm.eps=0"], r"^norm.eps must be a positive number, got 0$"),
    (["model.conv=std"], r"^model.conv must be one of plain, ws, got 'std'$"),
    (["model=vit", "model.conv=ws"], r"^model.conv=ws: the ViT has no convolution followed by a norm"),
    (["optim.schedule=step"], r"^optim.schedule=step needs optim.milestones, increasing positive epochs"),
    (["norm=frn", "+norm.eps=0"], r"^norm.eps must be a positive number, got 0$"),
    (["norm=frn", "norm.learnable_eps=maybe"], r"^norm.learnable_eps must be true or false, got 'maybe'$"),
    (["norm=evonorm_s0", "norm.num_groups=32"], r"^evonorm_s0: num_groups=32 does not divide the 16 channels of layer 'stem.1'"),
    (["norm=evonorm_b0", "data.batch_size=1"], r"^norm=evonorm_b0 with data.batch_size=1: batch statistics"),
    (["model=vit", "model.hidden_dim=48", "model.num_heads=2", "norm=evonorm_b0"],
     r"^norm 'evonorm_b0' has no definition for layout 'nlc'; it supports 'nchw' \(the EvoNorms are defined for CNN"),
]


def prepare(cfg):
    """What train.py's run does with a config before it trains (the CLI tests below check that
    a failure here leaves a failed summary and nothing trained)."""
    schema.validate(cfg)
    return build.data_and_net(cfg)


@pytest.mark.parametrize("overrides,message", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_values_fail_before_training_and_name_the_value(hydra_conf, overrides, message):
    cfg = compose("config", overrides=["data=synthetic", "logger=csv", *overrides])
    with pytest.raises(ValueError, match=message):
        prepare(cfg)


def test_the_reliability_table_lists_every_bad_value_the_suite_tries():
    table = (REPO / "RELIABILITY.md").read_text()
    missing = [" ".join(o) for o, _ in BAD_VALUES if len(" ".join(o)) < 100 and f"| `{' '.join(o)}` |" not in table]
    assert missing == []


def test_unknown_layout_is_named():
    import norms

    with pytest.raises(ValueError, match=r"unknown layout 'nhwc'; valid layouts: 'nchw', 'nlc'"):
        norms.build("gn", 8, layout="nhwc", num_groups=2)


def test_missing_data_offline_says_where_it_looked_and_how_to_get_it(hydra_conf, tmp_path):
    cfg = compose("config", overrides=["data=fashion_mnist", f"data.root={tmp_path / 'root'}", "data.download=false",
                                       f"+data.system_dir={tmp_path / 'none'}", "logger=csv"])
    with pytest.raises(FileNotFoundError, match=r"looked in .*root/FashionMNIST/raw and .*none.*apt-get install dataset-fashion-mnist.*data.download=true"):
        prepare(cfg)
    cfg = compose("config", overrides=["data=cifar10", f"data.root={tmp_path / 'root'}", "data.download=false", "logger=csv"])
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found or corrupt in .*cifar-10-batches-py.*data.download=true"):
        prepare(cfg)


def test_truncated_fashion_mnist_is_detected_not_trained_on(hydra_conf, tmp_path):
    import data

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, (magic, count, size) in data.fashion_mnist.EXPECTED.items():
        header = magic.to_bytes(4, "big") + count.to_bytes(4, "big")
        body = b"\0" * (size - 8 - (1000 if name == "train-images-idx3-ubyte" else 0))  # one file cut short
        (raw / name).write_bytes(header + body)
    cfg = compose("config", overrides=[f"data.root={tmp_path}", "data.download=false", "logger=csv"])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte is corrupt or truncated \(47039016 bytes"):
        prepare(cfg)


def test_corrupt_debian_archive_is_detected(tmp_path):
    import data

    system = tmp_path / "system"
    system.mkdir()
    for name in data.fashion_mnist.FILES:
        (system / f"{name}.gz").write_bytes(b"not a gzip file")
    dm = data.build({"name": "fashion_mnist", "root": str(tmp_path / "root"), "download": False,
                     "system_dir": str(system), "batch_size": 8})
    with pytest.raises(ValueError, match=r"cannot unpack .*train-images-idx3-ubyte.gz"):
        dm.prepare_data()


def test_corrupt_cifar_is_detected(tmp_path):
    import data

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"truncated")
    dm = data.build({"name": "cifar10", "root": str(tmp_path), "download": False, "batch_size": 8})
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found or corrupt"):
        dm.prepare_data()


@pytest.mark.slow  # ~24 s; the bad values themselves are checked in make test
def test_cli_error_is_one_readable_line(tmp_path):
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    # one error from the config check, one from building the model: neither trains anything
    for i, (overrides, line) in enumerate([(["norm=bn", "data.batch_size=1"], "error: norm=bn with data.batch_size=1"),
                                           (["norm=gn", "norm.num_groups=32"], "error: gn: num_groups=32 does not divide")]):
        run_dir = tmp_path / str(i)
        proc = run_train(*overrides, "data=synthetic", f"hydra.run.dir={run_dir}", env=env, check=False)
        assert proc.returncode == 2
        assert proc.stderr.strip().splitlines()[-1].startswith(line)
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "failed" and line.removeprefix("error: ") in summary["error"]
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.csv").exists()  # nothing trained
    env["HYDRA_FULL_ERROR"] = "1"  # the traceback is still there for who asks
    proc = run_train("norm=gn", "norm.num_groups=32", "data=synthetic", f"hydra.run.dir={tmp_path / 'full'}", env=env, check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


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
    line = _one_line_error(relaunch)
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
    from data.base import EpochSampler

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
# Secrets
# ---------------------------------------------------------------------------------------
@pytest.mark.slow  # ~40 s of real runs; the scrubbing functions are tested in make test
def test_a_planted_key_never_reaches_a_file_or_the_console(tmp_path):
    wandb_key, hf_token, literal = "0123456789abcdef" * 2 + "planted1", "hf_planted_token_4242", "literal-secret-0987"
    env = clean_env(WANDB_API_KEY=wandb_key, HF_TOKEN=hf_token, WANDB_BASE_URL="http://127.0.0.1:9")
    # a run that trains with secrets in its environment, one put into its config by interpolation
    run_dir = tmp_path / "sweep" / "run"
    proc = run_train("data=synthetic", "trainer.max_epochs=1", "logger.wandb.entity=${oc.env:HF_TOKEN}",
                     f"hydra.run.dir={run_dir}", env=env)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["config"]["logger"]["wandb"]["entity"] == "<redacted>"
    report = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path / "sweep")], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    # a sweep whose jobs are refused for keys that do not exist, typed with secrets as values
    quiet = {**env, "HYDRA_FULL_ERROR": "0"}  # the one-line errors of a user, not the tracebacks of a developer
    sweep = run_train("-m", "data=synthetic", "trainer.max_epochs=1", "seed=0,1", "+hf_token=${oc.env:HF_TOKEN}",
                      f"+my_api_key={literal}", f"hydra.sweep.dir={tmp_path / 'multi'}", env=quiet, check=False)
    assert sweep.returncode == 1 and "2 run(s) of the sweep failed" in sweep.stderr
    assert (tmp_path / "multi" / "multirun.yaml").is_file()
    # Hydra's own error for an override of a key that does not exist echoes the value: scrubbed too
    typo = run_train("data=synthetic", f"my_api_key={literal}", f"hydra.run.dir={tmp_path / 'typo'}", env=quiet,
                     check=False)
    assert typo.returncode == 1 and "my_api_key" in typo.stderr
    console = "".join(p.stdout + p.stderr for p in (proc, report, sweep, typo))
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.suffix == ".wandb" for p in files)
    for secret in (wandb_key, hf_token, literal):
        assert secret not in console
        leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert leaks == [], f"{secret} found in {leaks}"


# ---------------------------------------------------------------------------------------
# A run trusts no directory, summary or checkpoint that is not its own
# ---------------------------------------------------------------------------------------
TINY = ["data=synthetic", "data.train_size=256", "data.batch_size=16", "trainer.max_epochs=1", "logger=csv"]


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_a_directory_or_checkpoint_of_another_configuration_is_refused(tmp_path):
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    bn_dir = tmp_path / "bn"
    run_train(*TINY, "norm=bn", f"hydra.run.dir={bn_dir}")
    bn = json.loads((bn_dir / "summary.json").read_text())
    # relaunching a finished bn run's directory with gn: refused, never reported as gn's
    proc = run_train(*TINY, "norm=gn", "norm.num_groups=4", f"hydra.run.dir={bn_dir}", env=env, check=False)
    line = _one_line_error(proc)
    assert line.startswith(f"error: {bn_dir} holds the run of another configuration: identity {bn['identity']} "
                           f"(bn-resnet20-bs16-s0), while this config is ")
    assert "(gn-resnet20-bs16-s0)" in line and "epoch 1/1" not in proc.stdout
    assert json.loads((bn_dir / "summary.json").read_text()) == bn  # untouched
    # bn's checkpoint in a directory where gn is asked to run: refused before anything is written
    gn_dir = tmp_path / "gn"
    (gn_dir / "checkpoints").mkdir(parents=True)
    (gn_dir / "checkpoints" / "last.ckpt").write_bytes((bn_dir / "checkpoints" / "last.ckpt").read_bytes())
    proc = run_train(*TINY, "norm=gn", "norm.num_groups=4", f"hydra.run.dir={gn_dir}", env=env, check=False)
    assert f"{gn_dir / 'checkpoints' / 'last.ckpt'} was written by another configuration: identity {bn['identity']}" \
        in _one_line_error(proc)
    assert not (gn_dir / "summary.json").exists() and not (gn_dir / "metrics.csv").exists()


@pytest.mark.slow  # ~28 s: two real runs
def test_unreadable_summary_and_checkpoint_are_set_aside_and_the_run_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    run_train(*TINY, f"hydra.run.dir={run_dir}")
    first = json.loads((run_dir / "summary.json").read_text())
    # a truncated summary: kept aside; the run resumes from its (sound) final checkpoint and completes
    (run_dir / "summary.json").write_text('{"status": "compl')
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}")
    (kept,) = run_dir.glob("summary.json.unreadable-*")
    assert kept.read_text() == '{"status": "compl' and "unreadable summary" in proc.stdout
    again = json.loads((run_dir / "summary.json").read_text())
    assert again["status"] == "completed" and again["test_acc"] == first["test_acc"] and "resumed_from" in again
    # an empty checkpoint (and no summary): kept aside; the run trains from the start
    (run_dir / "summary.json").unlink()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}")
    assert len(list((run_dir / "checkpoints").glob("last.ckpt.unreadable-*"))) == 1 and "epoch 1/1" in proc.stdout
    third = json.loads((run_dir / "summary.json").read_text())
    assert third["status"] == "completed" and "resumed_from" not in third
    assert third["test_acc"] == first["test_acc"]  # the same seed trained from the start: the same result


@pytest.mark.slow  # ~35 s: three real runs
def test_summary_records_its_code_and_a_run_of_other_code_is_said_and_retrained_on_request(tmp_path):
    from importlib import metadata

    run_dir = tmp_path / "run"
    run_train("data=synthetic", "data.train_size=256", "data.batch_size=16", "trainer.max_epochs=1",
              "logger.wandb.mode=offline", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert summary["code"]["commit"] == head and isinstance(summary["code"]["dirty"], bool)
    assert summary["code"]["torch"] == metadata.version("torch") and summary["code"]["wandb"] == metadata.version("wandb")
    # the summary is the run's last word: written after W&B finished its run
    (wandb_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    assert (run_dir / "summary.json").stat().st_mtime_ns >= wandb_file.stat().st_mtime_ns

    summary["code"]["commit"] = "0" * 40  # as if another commit had completed it
    (run_dir / "summary.json").write_text(json.dumps(summary))
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}", "logger=csv")
    assert f"completed by other code (commit 00000000, this is {head[:8]}): rerun=stale trains it again" in proc.stdout
    assert "epoch 1/1" not in proc.stdout
    proc = run_train(*TINY, f"hydra.run.dir={run_dir}", "logger=csv", "rerun=stale")
    assert "epoch 1/1" in proc.stdout
    assert json.loads((run_dir / "summary.json").read_text())["code"]["commit"] == head
    assert len(list(run_dir.glob("summary.json.stale-*"))) == 1 and len(list(run_dir.glob("checkpoints/last.ckpt.stale-*"))) == 1
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    assert _one_line_error(run_train(*TINY, f"hydra.run.dir={run_dir}", "rerun=always", env=env, check=False)) == \
        "error: rerun must be one of none, stale, got 'always'"


@pytest.mark.slow  # ~20 s; tests/test_conventions.py checks each debug config in make test
def test_debug_runs_are_recorded_as_not_results_and_left_out_of_reports(hydra_conf, tmp_path):
    assert build.debug_settings(compose("config", overrides=["++trainer.limit_train_batches=1"])) == {
        "trainer.limit_train_batches": 1}  # Lightning: an int is a number of batches
    assert build.debug_settings(compose("config", overrides=["++trainer.limit_train_batches=1.0"])) == {}
    assert build.debug_settings(compose("config", overrides=["++trainer.fast_dev_run=true"])) == {"trainer.fast_dev_run": True}
    assert build.debug_settings(compose("config")) == {}

    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "++trainer.limit_train_batches=2,1.0", f"hydra.sweep.dir={sweep}")
    assert "debug run (trainer.limit_train_batches=2)" in proc.stdout
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert sorted(s.get("result", True) for s in summaries) == [False, True]
    report = subprocess.run([sys.executable, str(REPO / "report.py"), str(sweep), "wandb.mode=disabled"], cwd=REPO,
                            env=clean_env(), capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "is a debug run" in report.stdout
    with open(sweep / "report" / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 1  # only the real run


class _Errors(__import__("http.server").server.BaseHTTPRequestHandler):
    """A stand-in W&B server on loopback that answers every request with an error."""

    def _error(self):
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b'{"errors": ["stand-in"]}')

    do_GET = do_POST = do_PUT = _error

    def log_message(self, *args):
        pass


@pytest.mark.slow  # ~55 s: each waits out logger.wandb.init_timeout against a stand-in server
@pytest.mark.parametrize("server", ["errors", "silent"])
def test_wandb_falls_back_to_offline_when_its_server_fails(tmp_path, server):
    import http.server
    import socket
    import threading

    if server == "errors":
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Errors)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port, close = httpd.server_address[1], httpd.shutdown
    else:  # accepts connections (the kernel's backlog) and never answers
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        port, close = sock.getsockname()[1], sock.close
    try:
        env = clean_env(WANDB_API_KEY="k" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{port}")
        proc = run_train(*TINY[:-1], "logger.wandb.init_timeout=5", f"hydra.run.dir={tmp_path}", env=env)
    finally:
        close()
    assert "W&B: offline (online start failed" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["wandb"]["mode"] == "offline"
    assert wandb_inspect(next((tmp_path / "wandb").glob("offline-run-*")))["summary"]["test/acc"] == summary["test_acc"]


def test_warmup_is_counted_in_real_steps_and_never_fills_the_run(tmp_path):
    # a one-epoch run with the default one-epoch warmup: capped to a tenth of the run, and said
    proc = run_train(*TINY, f"hydra.run.dir={tmp_path / 'one'}")
    assert "optim.warmup_epochs=1 is 16 steps, the whole 16-step run: warming up over its first 1 steps" in proc.stdout
    # a step budget (Lightning's max_epochs=-1): the warmup is one epoch of 16 steps, not the 24-step run
    run_dir = tmp_path / "steps"
    run_train(*TINY, "trainer.max_epochs=-1", "++trainer.max_steps=24", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    with open(run_dir / "metrics.csv") as f:
        lr = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    assert lr[9] == pytest.approx(summary["lr"] * 10 / 16)  # the 10th step of a 16-step warmup


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
        assert _one_line_error(proc).startswith(start), proc.stderr[-2000:]
    # a run name too long for a directory: Hydra can still make the run's directory, where the refusal is recorded
    proc = run_train("data=synthetic", "logger=csv", "run_name=" + "r" * 300, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     "-m", env=env, check=False)
    assert proc.returncode == 1 and "1 run(s) of the sweep failed" in proc.stderr
    (summary,) = (tmp_path / "sweep").rglob("summary.json")
    assert len(summary.parent.name) == 200 + 9 and json.loads(summary.read_text())["status"] == "failed"
