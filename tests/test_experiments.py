"""Experiment recipes and the W&B sweep files compose into valid runs of the same grid."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

import data
import models
import norms
import record
from record import RunSpec

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def sweeper_grid(cfg) -> dict:
    return {k: [str(v).strip() for v in str(vals).split(",")] for k, vals in cfg.hydra.sweeper.params.items()}


def test_the_recipes_exist():
    assert {"norm_vs_batch", "norm_vs_batch_vit", "quick", "norm_batch_vs_opt_batch"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_composes_and_every_grid_point_builds(hydra_conf, name):
    cfg = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    assert cfg.experiment_name == name
    grid = sweeper_grid(cfg)
    batches = grid.get("data.batch_size", [str(cfg.data.batch_size)])  # a study may hold the batch fixed
    assert [int(b) for b in batches] == sorted(int(b) for b in batches)
    choices = [f"+zoo={z}" for z in grid["+zoo"]] if "+zoo" in grid else [f"norm={n}" for n in grid.get("norm", [cfg.norm.kind])]
    files = ["data.root=/nonexistent", "data.num_classes=1000"] if cfg.data.name == "imagefolder" else []
    for choice in choices:
        point = compose("config", overrides=[f"experiment={name}", choice, *files])
        dm = data.build(point.data)
        models.build(point.model, point.norm, dm.in_channels, dm.num_classes, dm.image_size)  # gn groups divide


ZOO = {"bn": ("bn", "plain"), "gn": ("gn", "plain"), "gn_ws": ("gn", "ws"), "brn": ("brn", "plain"),
       "frn": ("frn", "plain"), "evonorm_s0": ("evonorm_s0", "plain"), "evonorm_b0": ("evonorm_b0", "plain")}


@pytest.mark.parametrize("name,protocol", [("small_batch_zoo", "norm_vs_batch"), ("quick_zoo", "quick")])
def test_the_zoo_recipes_are_their_protocol_with_the_seven_entries(hydra_conf, name, protocol):
    """Each zoo composes from its base study (its defaults list) and replaces only the norms."""
    zoo = compose("config", overrides=[f"experiment={name}"], return_hydra_config=True)
    base = compose("config", overrides=[f"experiment={protocol}"], return_hydra_config=True)
    zoo_grid, base_grid = sweeper_grid(zoo), sweeper_grid(base)
    assert zoo_grid["norm"] == list(ZOO)
    assert {k: v for k, v in zoo_grid.items() if k != "norm"} == {k: v for k, v in base_grid.items() if k != "norm"}
    for entry, (kind, conv) in ZOO.items():
        point = compose("config", overrides=[f"experiment={name}", f"norm={entry}"])
        assert (point.norm.kind, point.model.conv) == (kind, conv)
        for key in ("data", "optim", "trainer"):  # the protocol, key for key
            assert point[key] == base[key], key
        # +zoo=<entry>, as zoo sweeps were written before, composes the same run
        assert compose("config", overrides=[f"experiment={name}", f"+zoo={entry}"]) == point


def test_norm_batch_vs_opt_batch_holds_one_batch_while_varying_the_other(hydra_conf):
    cfg = compose("config", overrides=["experiment=norm_batch_vs_opt_batch"], return_hydra_config=True)
    grid = sweeper_grid(cfg)
    ghost, batch = [int(k) for k in grid["norm.virtual_batch_size"]], [int(n) for n in grid["data.batch_size"]]
    assert cfg.norm.kind == "bn" and len(ghost) > 1 and len(batch) > 1
    # every cell is distinct: each virtual batch splits every batch, and is smaller than it or equal
    assert all(n % k == 0 and k <= n for k in ghost for n in batch)
    for k in ghost:  # and each point trains: a batch of N goes through bn in virtual batches of k
        point = compose("config", overrides=["experiment=norm_batch_vs_opt_batch", f"norm.virtual_batch_size={k}",
                                             f"data.batch_size={batch[0]}"])
        assert norms.normalization_batch(point.norm, point.data.batch_size, world_size=1) == k
        net = models.build(point.model, point.norm, 1, 10, 28).train()
        assert net(torch.randn(batch[0], 1, 28, 28)).shape == (batch[0], 10)


def test_identity_of_configs_from_before_a_key_existed_is_unchanged(hydra_conf):
    """norm.sync and trainer.num_nodes arrived after runs had been named: at their neutral values
    they leave the identity as it was, so a relaunched older sweep still finds its runs."""
    cfg = compose("config", overrides=["data=synthetic", "trainer=ddp_cpu"])
    older = compose("config", overrides=["data=synthetic", "trainer=ddp_cpu", "~norm.sync", "~trainer.num_nodes"])
    assert record.identity(cfg) == record.identity(older)
    for change in ("norm.sync=true", "trainer.num_nodes=2"):
        assert record.identity(compose("config", overrides=["data=synthetic", "trainer=ddp_cpu", change])) != record.identity(cfg)


@pytest.mark.parametrize("overrides,pinned", [
    ([], "03c2b05c"), (["norm=gn"], "c58bc89d"), (["norm=ln", "model=vit", "optim=adamw"], "70a24dab"),
    (["experiment=quick"], "b1229b12"), (["norm=bn", "norm.virtual_batch_size=4"], "38c9f213"),
])
def test_identities_are_pinned_across_versions(hydra_conf, overrides, pinned):
    """The identities runs had before the typed schema, the evaluation and diagnostics keys: a
    relaunched older sweep finds its runs (and says when another commit trained them)."""
    assert record.identity(compose("config", overrides=overrides)) == pinned
    relaxed = compose("config", overrides=[*overrides, "eval.precise_bn_batches=0", "diagnostics.enabled=false",
                                           "data.num_workers=2"])
    assert record.identity(relaxed) == pinned


def test_gn_paper_protocol_in_norm_vs_batch(hydra_conf):
    cfg = compose("config", overrides=["experiment=norm_vs_batch"], return_hydra_config=True)
    assert (cfg.data.name, cfg.model.name) == ("cifar10", "resnet20")
    assert [int(b) for b in sweeper_grid(cfg)["data.batch_size"]] == [2, 4, 8, 16, 32, 64, 128]
    assert sweeper_grid(cfg)["seed"] == ["0", "1", "2"]
    assert (cfg.optim.lr, cfg.optim.base_batch_size, cfg.optim.lr_scaling) == (0.1, 32, "linear")
    assert cfg.model.zero_init_residual is True


def test_identity_ignores_logging_but_not_training_settings(hydra_conf):
    base = compose("config", overrides=["data=synthetic"])
    same = compose("config", overrides=["data=synthetic", "logger=csv", "progress_bar=false", "checkpoint.every_n_steps=7",
                                        "experiment_name=other", "trainer.log_every_n_steps=3"])
    assert record.identity(base) == record.identity(same)
    for change in ("seed=1", "norm=gn", "data.batch_size=8", "optim.lr=0.2", "trainer.max_epochs=3", "model.width=8"):
        assert record.identity(compose("config", overrides=["data=synthetic", change])) != record.identity(base), change
    assert RunSpec.of(base).wandb_id != RunSpec.of(same).wandb_id  # another experiment, another W&B run


def test_run_directory_is_named_by_identity(hydra_conf):
    cfg = compose("config", overrides=["data=synthetic", "norm=gn", "data.batch_size=8"], return_hydra_config=True)
    assert cfg.hydra.run.dir == f"runs/default/gn-resnet20-bs8-s0-{record.identity(cfg)}"


def _agent_command(sweep: dict, params: dict) -> list[str]:
    """The command `wandb agent` runs for one parameter set (its macro expansion)."""
    macros = {"${env}": "/usr/bin/env", "${interpreter}": "python", "${program}": sweep["program"],
              "${args_no_hyphens}": [f"{k}={v}" for k, v in params.items()]}
    out = []
    for item in sweep["command"]:
        value = macros.get(item, item)
        out += value if isinstance(value, list) else [value]
    return out


@pytest.mark.parametrize("path", sorted((CONF / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_wandb_sweep_file_composes_into_a_valid_run(hydra_conf, path):
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "train.py" and sweep["method"] == "grid"
    assert "${args_no_hyphens}" in sweep["command"]
    params = {k: v["values"] for k, v in sweep["parameters"].items()}
    first = {k: v[0] for k, v in params.items()}
    command = _agent_command(sweep, first)
    overrides = command[command.index("train.py") + 1:]
    cfg = compose("config", overrides=overrides, return_hydra_config=True)
    assert cfg.norm.kind == first["norm"] and cfg.data.batch_size == first["data.batch_size"] and cfg.seed == first["seed"]
    # The sweep file's grid is the recipe's grid.
    grid = sweeper_grid(cfg)
    assert [str(v) for v in params["norm"]] == grid["norm"]
    assert [str(v) for v in params["data.batch_size"]] == grid["data.batch_size"]
    assert [str(v) for v in params["seed"]] == grid.get("seed", ["0"])
    dm = data.build(cfg.data)
    models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)


def test_gn_paper_imagenet_is_the_papers_protocol(hydra_conf):
    from harness import build, schema

    cfg = compose("config", overrides=["experiment=gn_paper_imagenet", "data.root=/data/imagenet"],
                  return_hydra_config=True)
    assert sweeper_grid(cfg) == {"norm": ["bn", "gn"], "data.batch_size": ["2", "4", "8", "16", "32"],
                                 "seed": ["0", "1", "2"]}
    assert (cfg.model.name, cfg.model.small_stem, cfg.model.zero_init_residual) == ("resnet50", False, True)
    assert (cfg.data.name, cfg.data.crop_size, cfg.data.resize_size) == ("imagefolder", 224, 256)
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.max_epochs) == ("ddp", 8, 100)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    for n in (32, 16, 8, 4, 2):  # 0.1 * N / 32 for N images per GPU on 8 GPUs
        assert build.scaled_lr(cfg.optim, 8 * n) == pytest.approx(0.1 * n / 32)
    assert (cfg.optim.schedule, list(cfg.optim.milestones), cfg.optim.optimizer.weight_decay) == ("step", [30, 60, 90], 1e-4)
    gn = compose("config", overrides=["experiment=gn_paper_imagenet", "data.root=/data/imagenet", "norm=gn"])
    assert gn.norm.num_groups == 32 and gn.norm.get("sync", False) is False
    schema.validate(gn)


def test_every_run_of_the_studies_keeps_its_directory_name(hydra_conf):
    """The directory name (run name and identity) of every run of the quick, quick_zoo,
    norm_vs_batch and small_batch_zoo grids, expanded from each recipe's own grid, and of one run
    of every norm, model, data set and recipe, are those NormLab gave them before conf/ took its
    defaults from the code and the zoos composed from their base studies (commit d352809): a
    relaunch finds every run a user already has."""
    import itertools

    from record.identity import dir_name

    pinned = json.loads((Path(__file__).parent / "fixtures" / "identities.json").read_text())

    def name(overrides):
        cfg = compose("config", overrides=overrides)
        return f"{dir_name(cfg.run_name)}-{record.identity(cfg)}"

    for recipe, names in pinned["recipes"].items():
        grid = sweeper_grid(compose("config", overrides=[f"experiment={recipe}"], return_hydra_config=True))
        jobs = [[f"{k}={v}" for k, v in zip(grid, point)] for point in itertools.product(*grid.values())]
        assert sorted(name([f"experiment={recipe}", *job]) for job in jobs) == names, recipe
    for overrides, pinned_name in pinned["single"].items():
        assert name(overrides.split()) == pinned_name, overrides
