"""Every backbone x every norm: it trains a step, keeps its shapes, and holds exactly the requested norms."""
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import models
import norms

MODELS = {
    "resnet20": {"name": "resnet20", "arch": "cifar_resnet", "depth": 20},
    "resnet18": {"name": "resnet18", "arch": "torchvision_resnet", "depth": 18},
    "resnet50": {"name": "resnet50", "arch": "torchvision_resnet", "depth": 50},
    "vit": {"name": "vit", "arch": "vit", "hidden_dim": 48, "num_layers": 2, "num_heads": 3, "mlp_dim": 96},
}
NORMS = {"bn": {"kind": "bn"}, "ln": {"kind": "ln"}, "in": {"kind": "in"}, "gn": {"kind": "gn", "num_groups": 4},
         "none": {"kind": "none"}}
TORCH_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def norm_sites(model_name, net, model_cfg):
    """Where a norm must sit, counted without asking norms/: one per conv in a ResNet,
    two per encoder block plus the final one in a ViT."""
    if model_name == "vit":
        return 2 * model_cfg["num_layers"] + 1
    return sum(isinstance(m, nn.Conv2d) for m in net.modules())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("model_name", MODELS)
def test_model_trains_a_step_with_the_requested_norm(model_name, norm):
    torch.manual_seed(0)
    in_channels, image_size, classes = (1, 16, 7) if model_name != "resnet50" else (3, 16, 5)
    net = models.build(MODELS[model_name], NORMS[norm], in_channels, classes, image_size)
    x = torch.randn(2, in_channels, image_size, image_size)
    out = net(x)
    assert out.shape == (2, classes)
    out.logsumexp(1).sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    kinds = [norms.kind_of(m) for m in net.modules()]
    assert kinds.count(norm) == norm_sites(model_name, net, MODELS[model_name])
    assert {k for k in kinds if k is not None} == {norm}
    # No norm layer slipped in around norms.build (e.g. a library default).
    stray = [type(m).__name__ for m in net.modules() if isinstance(m, TORCH_NORMS) and norms.kind_of(m) is None]
    assert stray == []


@pytest.mark.parametrize("norm", ["bn", "gn", "in", "none"])
def test_zero_init_makes_every_residual_branch_start_at_zero(norm):
    """With zero_init_residual, each block is relu(shortcut(x)) at initialisation, also for
    norms without gamma (in without affine, none), which get a zero SkipInit scale."""
    norm_cfg = {"kind": norm, "affine": False} if norm == "in" else NORMS[norm]
    net = models.build({**MODELS["resnet20"], "zero_init_residual": True}, norm_cfg, 3, 10, 16)
    net.eval()
    x = torch.randn(2, 16, 8, 8)
    block = net.blocks[0]
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))
    off = models.build({**MODELS["resnet20"], "zero_init_residual": False}, norm_cfg, 3, 10, 16).eval()
    with torch.no_grad():
        assert not torch.equal(off.blocks[0](x), torch.relu(x))


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_torchvision_resnet_zero_init(norm):
    net = models.build(MODELS["resnet18"], NORMS[norm], 3, 10, 16).eval()
    block = net.layer1[0]
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_models_never_name_a_norm_class():
    pattern = re.compile(r"\b(BatchNorm\w*|LayerNorm\w*|GroupNorm\w*|InstanceNorm\w*|SyncBatchNorm)\b")
    offenders = {p.name: pattern.findall(p.read_text()) for p in Path(models.__file__).parent.glob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_cifar_resnet_depth_and_width():
    net = models.build({**MODELS["resnet20"], "depth": 56, "width": 8}, NORMS["bn"], 3, 10, 32)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len([c for c in convs if c.kernel_size == (3, 3)]) == 55  # 6n+1 3x3 convs for depth 6n+2
    assert max(c.out_channels for c in convs) == 32


@pytest.mark.parametrize("bad,message", [
    ({"name": "x", "arch": "densenet"}, r"unknown model arch 'densenet'; valid archs: cifar_resnet, torchvision_resnet, vit"),
    ({**MODELS["resnet20"], "depth": 21}, r"depth must be 6n\+2"),
    ({**MODELS["resnet20"], "heads": 3}, r"does not take option\(s\) \['heads'\]"),
    ({**MODELS["vit"], "patch_size": 5}, r"image_size 16 is not divisible by patch_size 5"),
])
def test_bad_model_config_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        models.build(bad, NORMS["bn"], 3, 10, 16)


def test_gn_groups_that_do_not_divide_a_layer_fail_at_build():
    with pytest.raises(ValueError, match=r"num_groups=32 does not divide the 16 channels of layer 'stem.1' "
                                         r"\(and 6 more layers\); group counts that divide every layer of this model: \[1, 2, 4, 8, 16\]"):
        models.build(MODELS["resnet20"], {"kind": "gn", "num_groups": 32}, 3, 10, 16)


def test_gn_group_check_does_not_change_the_initialisation():
    """The gn check builds a probe model; the real model must be initialised as if it had not."""
    torch.manual_seed(0)
    with_check = models.build(MODELS["resnet20"], {"kind": "gn", "num_groups": 4}, 3, 10, 16)
    torch.manual_seed(0)
    without = models.build(MODELS["resnet20"], {"kind": "ln"}, 3, 10, 16)  # ln: no probe
    conv = lambda net: [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]  # noqa: E731
    assert all(torch.equal(a, b) for a, b in zip(conv(with_check), conv(without), strict=True))


# ---------------------------------------------------------------------------------------
# Speed options (perf.*) change how a step runs, not what it computes
# ---------------------------------------------------------------------------------------
def test_channels_last_classifier_computes_what_the_plain_one_does():
    import copy

    from omegaconf import OmegaConf

    from harness.module import Classifier

    torch.manual_seed(0)
    net = models.build({"name": "resnet20", "arch": "cifar_resnet", "depth": 8, "width": 8}, {"kind": "bn"}, 3, 10, 16)
    optim = OmegaConf.create({"weight_decay_norm": True})
    plain = Classifier(copy.deepcopy(net), optim, 0.1)
    nhwc = Classifier(copy.deepcopy(net), optim, 0.1, channels_last=True)
    assert nhwc.net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(nhwc(x), plain(x), rtol=1e-4, atol=1e-5)


def test_compiled_classifier_keeps_the_plain_checkpoint_keys():
    from omegaconf import OmegaConf

    from harness.module import Classifier

    net = models.build({"name": "resnet20", "arch": "cifar_resnet", "depth": 8, "width": 8}, {"kind": "gn", "num_groups": 4},
                       3, 10, 16)
    compiled = Classifier(net, OmegaConf.create({}), 0.1, compile=True)  # compiles lazily: nothing runs here
    assert list(compiled.state_dict()) == [f"net.{k}" for k in net.state_dict()]
    assert compiled.net_forward is not net
    assert Classifier(net, OmegaConf.create({}), 0.1).net_forward is net


def test_activation_bytes_counts_what_backward_keeps():
    # none keeps the conv inputs and relu outputs; bn adds its normalized input per layer
    x = torch.randn(8, 3, 16, 16)
    spec = {"name": "resnet20", "arch": "cifar_resnet", "depth": 8, "width": 8}
    sizes = {kind: models.activation_bytes(models.build(spec, {"kind": kind, "num_groups": 4} if kind == "gn" else {"kind": kind},
                                                         3, 10, 16).train(), x) for kind in ("none", "bn", "gn")}
    assert 0 < sizes["none"] < sizes["bn"] and sizes["none"] < sizes["gn"]
    assert sizes["bn"] >= x.numel() * 4  # at least the input of the first conv
