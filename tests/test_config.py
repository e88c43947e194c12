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


# norm= options that are a kind with the convolutions it is published with, not kinds of their own
NORM_WITH_CONV = {"gn_ws": ("gn", "ws"), "nf": ("none", "sws")}


def test_config_groups_match_the_code():
    assert options("norm") == sorted([*norms.kinds(), *NORM_WITH_CONV])
    assert options("data") == sorted(data.DATASETS)
    assert {"resnet20", "resnet56", "resnet18", "resnet50", "vit"} <= set(options("model"))
    assert {"sgd", "adamw"} <= set(options("optim"))


@pytest.mark.parametrize("data_name", options("data"))
@pytest.mark.parametrize("model_name", options("model"))
@pytest.mark.parametrize("norm", options("norm"))
def test_every_combination_composes_and_builds(hydra_conf, norm, model_name, data_name):
    # an ImageFolder tree is read at setup; with data.num_classes the model builds without one
    files = ["data.root=/nonexistent", "data.num_classes=10"] if data_name == "imagefolder" else []
    cfg = compose("config", overrides=[f"norm={norm}", f"model={model_name}", f"data={data_name}", *files])
    kind, conv = NORM_WITH_CONV.get(norm, (norm, "plain"))
    assert (cfg.norm.kind, cfg.model.conv, cfg.model.name, cfg.data.name) == (kind, conv, model_name, data_name)
    assert cfg.run_name == f"{kind}-{model_name}-bs{cfg.data.batch_size}-s{cfg.seed}"
    dm = data.build(cfg.data)  # builds the DataModule; reads no files
    if cfg.model.arch == "vit" and (norm.startswith("evonorm") or conv != "plain"):  # defined for CNN maps only
        with pytest.raises(ValueError, match=f"norm '{norm}' has no definition for layout 'nlc'|the ViT has no conv"):
            models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
        return
    net = models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
    assert {norms.kind_of(m) for m in net.modules()} - {None} == {kind}


def test_defaults(hydra_conf):
    cfg = compose("config")
    assert (cfg.norm.kind, cfg.model.name, cfg.data.name) == ("bn", "resnet20", "fashion_mnist")
    assert cfg.optim.lr_scaling == "linear" and cfg.trainer.accelerator == "auto"
    assert cfg.logger.wandb.project == "normlab"


def test_any_trainer_argument_is_typed_without_plus(hydra_conf):
    cfg = compose("config", overrides=["trainer.fast_dev_run=true", "trainer.accumulate_grad_batches=4"])
    assert cfg.trainer.fast_dev_run is True and cfg.trainer.accumulate_grad_batches == 4
    with pytest.raises(Exception, match="Could not override .optim.lrr."):  # only the trainer node is open
        compose("config", overrides=["optim.lrr=0.1"])


def test_the_vit_trains_with_adamw_unless_told_otherwise(hydra_conf):
    assert compose("config", overrides=["model=vit"]).optim.optimizer._target_ == "torch.optim.AdamW"
    assert compose("config", overrides=["model=vit", "optim=sgd"]).optim.optimizer._target_ == "torch.optim.SGD"
    assert compose("config", overrides=["model=resnet20"]).optim.optimizer._target_ == "torch.optim.SGD"


@pytest.mark.parametrize("model,norm,groups", [("resnet18", "gn", 32), ("resnet50", "gn", 32), ("resnet20", "gn", 8),
                                               ("resnet50", "evonorm_s0", 32), ("resnet8", "evonorm_s0", 8)])
def test_gn_uses_the_gn_papers_32_groups_on_resnet18_and_50(hydra_conf, model, norm, groups):
    assert compose("config", overrides=[f"model={model}", f"norm={norm}"]).norm.num_groups == groups
    assert compose("config", overrides=[f"model={model}", f"norm={norm}", "norm.num_groups=16"]).norm.num_groups == 16


def test_the_vits_position_embedding_and_class_token_are_never_weight_decayed():
    from harness.module import param_groups

    net = models.build({"name": "vit", "arch": "vit", "hidden_dim": 48, "num_heads": 2, "num_layers": 2, "mlp_dim": 96},
                       {"kind": "ln"}, 3, 10, 32)
    for weight_decay_norm in (True, False):
        decay, no_decay = param_groups(net, weight_decay_norm)
        names = {n for n, p in net.named_parameters() if any(p is q for q in no_decay["params"])}
        assert {"class_token", "encoder.pos_embedding"} <= names
        assert ("encoder.layers.encoder_layer_0.ln_1.weight" in names) is not weight_decay_norm
        assert len(decay["params"]) + len(no_decay["params"]) == len(list(net.parameters()))
