"""Config composition: every norm x model x data composes and builds; names match the code."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import data
import models
import norms

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def test_config_groups_match_the_code():
    assert options("norm") == sorted(norms.kinds())
    assert options("data") == sorted(data.DATASETS)
    assert {"resnet20", "resnet56", "resnet18", "resnet50", "vit"} <= set(options("model"))
    assert {"sgd", "adamw"} <= set(options("optim"))


@pytest.mark.parametrize("data_name", options("data"))
@pytest.mark.parametrize("model_name", options("model"))
@pytest.mark.parametrize("norm", options("norm"))
def test_every_combination_composes_and_builds(hydra_conf, norm, model_name, data_name):
    cfg = compose("config", overrides=[f"norm={norm}", f"model={model_name}", f"data={data_name}"])
    assert (cfg.norm.kind, cfg.model.name, cfg.data.name) == (norm, model_name, data_name)
    assert cfg.run_name == f"{norm}-{model_name}-bs{cfg.data.batch_size}-s{cfg.seed}"
    dm = data.build(cfg.data)  # builds the DataModule; reads no files
    if cfg.model.arch == "vit" and norm.startswith("evonorm"):  # defined for CNN maps only
        with pytest.raises(ValueError, match=f"norm '{norm}' has no definition for layout 'nlc'"):
            models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
        return
    net = models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
    assert {norms.kind_of(m) for m in net.modules()} - {None} == {norm}


def test_defaults(hydra_conf):
    cfg = compose("config")
    assert (cfg.norm.kind, cfg.model.name, cfg.data.name) == ("bn", "resnet20", "fashion_mnist")
    assert cfg.optim.lr_scaling == "linear" and cfg.trainer.accelerator == "auto"
    assert cfg.logger.wandb.project == "normlab"
