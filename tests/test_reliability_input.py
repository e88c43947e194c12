"""Bad input gets one clear error before training: each is rejected with a message naming what was wrong."""
import json

import pytest
from conftest import REPO, clean_env, run_train
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
    (["norm.kind=xx"], r"^norm.kind: unknown norm kind 'xx'; valid: bgn, bn, brn, derf, dyt, evonorm_b0, evonorm_s0, frn, gn, in, ln, ln2d, none, rms, sn$"),
    (["run_name=a/b"], r"^run_name must be a non-empty name without '/'"),
    (["run_name=" + "x" * 201], r"^run_name must be .*at most 200 bytes"),
    (["rerun=always"], r"^rerun must be one of none, stale, got 'always'$"),
    (["logger=wandb", "logger.wandb.mode=onlin"], r"^logger.wandb.mode must be one of auto, online, offline, disabled"),
    (["progress_bar=maybe"], r"^progress_bar must be one of auto, true, false, got 'maybe'$"),
    (["num_threads=0"], r"^num_threads must be auto or a positive integer, got 0$"),
    (["norm=brn", "norm.r_max=0.5"], r"^norm.r_max must be a number, 1 or more, got 0.5$"),
    (["norm=brn", "norm.d_max=-1"], r"^norm.d_max must be 0 or more, got -1$"),
    (["norm=rms", "+norm.eps=0"], r"^norm.eps must be a positive number, got 0$"),
    (["model.conv=std"], r"^model.conv must be one of plain, ws, sws, got 'std'$"),
    (["model=vit", "model.conv=ws"], r"^model.conv=ws: the ViT has no convolution followed by a norm"),
    (["optim.schedule=step"], r"^optim.schedule=step needs optim.milestones, increasing positive epochs"),
    (["norm=frn", "+norm.eps=0"], r"^norm.eps must be a positive number, got 0$"),
    (["norm=frn", "norm.learnable_eps=maybe"], r"^norm.learnable_eps must be true or false, got 'maybe'$"),
    (["norm=evonorm_s0", "norm.num_groups=32"], r"^evonorm_s0: num_groups=32 does not divide the 16 channels of layer 'stem.1'"),
    (["norm=evonorm_b0", "data.batch_size=1"], r"^norm=evonorm_b0 with data.batch_size=1: batch statistics"),
    (["model=vit", "model.hidden_dim=48", "model.num_heads=2", "norm=evonorm_b0"],
     r"^norm 'evonorm_b0' has no definition for layout 'nlc'; it supports 'nchw' \(the EvoNorms are defined for CNN"),
    # the norms and controls of tests/test_new_norms.py and tests/test_norm_free.py
    (["norm=bgn", "norm.examples_per_group=3", "data.batch_size=8"],
     r"^norm.examples_per_group=3 does not divide data.batch_size=8 .*valid examples_per_group for 8: \[1, 2, 4, 8\]"),
    (["norm=bgn", "norm.num_groups=5"], r"^bgn: num_groups=5 does not divide the 16 channels of layer 'stem.1'"),
    (["norm=bgn", "norm.examples_per_group=0"], r"^norm.examples_per_group must be a positive integer, got 0$"),
    (["norm=dyt", "norm.alpha_init=0"], r"^norm.alpha_init must be a positive number, got 0$"),
    (["norm=sn", "data.batch_size=1"], r"^norm=sn with data.batch_size=1: batch statistics"),
    (["optim.agc_clip=-0.01"], r"^optim.agc_clip must be a positive number, got -0.01$"),
    (["optim.agc_clip=0.01", "++trainer.gradient_clip_val=1"], r"^optim.agc_clip=0.01 and trainer.gradient_clip_val=1"),
    (["eval.example_weights=[0,1.5]"], r"^eval.example_weights must be a list of numbers from 0 to 1"),
    (["model=vit", "model.conv=sws"], r"^model.conv=sws: the ViT has no convolution followed by a norm"),
    (["model=vit", "model.skipinit=true"], r"^model.skipinit=true: SkipInit scales the residual branches of NormLab's ResNets"),
    (["model=vit", "norm=nf"], r"^model.conv=sws: the ViT has no convolution followed by a norm"),
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
