"""The norm-free controls (Scaled WS with a learned gain, adaptive gradient clipping, SkipInit)
against their papers' equations and timm's reference code written out here; their packed runs;
and the new norms, options and recipes through the real CLI."""
import json
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import REPO, clean_env, one_line_error, run_train
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch import nn

import models
import record
from harness import agc, build
from models.common import ScaledStandardized
from harness.packed.loop import backward, optimize
from harness.packed.member import build_net
from harness.packed.stack import Stack

R8 = {"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 8, "zero_init_residual": False}


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


def timm_scaled_std_weight(conv, gain, eps=1e-6, gamma=1.0):
    """timm's ScaledStdConv2d.forward, its weight: batch_norm over each filter's fan-in with
    weight = gain * gamma / sqrt(fan_in)."""
    w = conv.parametrizations.weight.original
    scale = gamma * w[0].numel() ** -0.5
    return F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, weight=(gain * scale).view(-1), training=True,
                        momentum=0.0, eps=eps).reshape_as(w)


def test_scaled_ws_is_nf_resnets_equation_and_timms_scaled_std_conv():
    net = models.build({**R8, "conv": "sws"}, {"kind": "none"}, 1, 10, 28)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 3 + 2  # every conv: stem, two per block, two projection shortcuts
    for conv in convs:
        gain = conv.parametrizations.weight[0].gain
        assert gain.shape == (conv.out_channels, 1, 1, 1) and torch.equal(gain, torch.ones_like(gain))  # from 1
        with torch.no_grad():
            gain.uniform_(0.5, 1.5)
        w = conv.parametrizations.weight.original
        fan_in = w[0].numel()
        mean, var = w.mean((1, 2, 3), keepdim=True), w.var((1, 2, 3), unbiased=False, keepdim=True)
        torch.testing.assert_close(conv.weight, gain * (w - mean) / ((var + 1e-6).sqrt() * fan_in ** 0.5))
        torch.testing.assert_close(conv.weight, timm_scaled_std_weight(conv, gain))
    # gain and raw weight are learned: both get gradients and move
    gain, raw = convs[1].parametrizations.weight[0].gain, convs[1].parametrizations.weight.original
    assert any(p is gain for p in net.parameters())
    before = gain.detach().clone(), raw.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    F.cross_entropy(net(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    assert not torch.equal(before[0], gain) and not torch.equal(before[1], raw)
    sws = ScaledStandardized(4).double()  # gradients to the raw weight and the gain
    w, g = torch.randn(4, 3, 3, 3, dtype=torch.double), torch.rand(4, 1, 1, 1, dtype=torch.double) + 0.5
    assert torch.autograd.gradcheck(lambda w, g: torch.func.functional_call(sws, {"gain": g}, (w,)),
                                    (w.requires_grad_(), g.requires_grad_()))


def explicit_agc(w, g, clip):
    """NFNets' unit-wise rule, one output unit (row) at a time."""
    w, g = w.reshape(len(w), -1) if w.dim() > 1 else w.reshape(1, -1), g.reshape(len(g), -1) if g.dim() > 1 else g.reshape(1, -1)
    out = []
    for wi, gi in zip(w, g):
        max_norm = clip * max(wi.norm().item(), 1e-3)
        out.append(gi * max_norm / max(gi.norm().item(), 1e-6) if gi.norm() > max_norm else gi)
    return torch.stack(out)


def test_adaptive_gradient_clipping_is_unit_wise_and_leaves_the_classifier_alone():
    torch.manual_seed(0)
    net = models.build(R8, {"kind": "none"}, 1, 10, 28)
    F.cross_entropy(net(torch.randn(4, 1, 28, 28)) * 50, torch.tensor([0, 1, 2, 3])).backward()
    with torch.no_grad():
        net.blocks[0].conv1.weight.grad[0] = 0  # a unit below the threshold keeps its gradient
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    clip = agc.clipper(net, 0.01)
    clip()
    clipped = 0
    for name, p in net.named_parameters():
        if name.startswith("fc."):  # the classifier: never clipped
            assert torch.equal(p.grad, grads[name])
            continue
        expected = explicit_agc(p.detach(), grads[name], 0.01).view_as(p)
        torch.testing.assert_close(p.grad, expected)
        clipped += not torch.equal(p.grad, grads[name])
    assert clipped > 5  # the rule bites at lambda = 0.01
    assert agc.clipper(net, None) is None


def test_skipinit_starts_every_block_as_its_shortcut_and_the_gain_learns():
    torch.manual_seed(0)
    net = models.build({**R8, "skipinit": True}, {"kind": "bn"}, 1, 10, 16).eval()
    x = torch.randn(2, 1, 16, 16)
    h = net.stem(x)
    for block in net.blocks:  # the network with every residual branch taken out
        h = torch.relu(block.shortcut(h))
    torch.testing.assert_close(net(x), net.fc(net.pool(h).flatten(1)))
    gains = [b.skip_gain.gain for b in net.blocks]
    assert all(g.shape == (1,) and g.item() == 0 for g in gains)
    F.cross_entropy(net.train()(x), torch.tensor([0, 1])).backward()
    assert all(g.grad.abs().item() > 0 for g in gains)  # from zero, but not stuck there
    tv = models.build({"name": "r18", "arch": "torchvision_resnet", "depth": 18, "skipinit": True}, {"kind": "none"},
                      3, 10, 32)
    assert sum(n.endswith("skip_gain.gain") for n, _ in tv.named_parameters()) == 8  # every BasicBlock
    plain = models.build(R8, {"kind": "bn"}, 1, 10, 16)  # off: no parameter, checkpoints as before the option
    assert not any("skip_gain" in n for n, _ in plain.named_parameters()) and isinstance(plain.blocks[0].skip_gain,
                                                                                          nn.Identity)


@pytest.mark.parametrize("overrides", [["norm=nf"], ["norm=bgn", "norm.examples_per_group=2", "norm.num_groups=4"]])
def test_the_norm_free_resnet_and_bgn_pack_as_their_solo_runs(hydra_conf, overrides):
    """Members of a pack train as the solo runs they stand for, with Scaled WS's parametrized
    weights and gains, SkipInit's gains and AGC clipping each member's gradients."""
    cfgs = [compose("config", overrides=["data=synthetic", "model=resnet8", *overrides, f"seed={s}"]) for s in range(2)]
    dm = build.data(cfgs[0])
    members = [build_net(cfg, dm) for cfg in cfgs]
    solos = []
    for cfg in cfgs:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        solos.append(build.data_and_net(cfg)[1].train())
    stack = Stack(members).train()
    opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in members]
    solo_opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in solos]
    clip = cfgs[0].optim.agc_clip
    clips, solo_clips = [agc.clipper(n, clip) for n in members], [agc.clipper(n, clip) for n in solos]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0) for o in opts]
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(2, 4, 3, 16, 16, generator=g), torch.randint(0, 4, (2, 4), generator=g)
        losses, _ = backward(stack, members, x, y)
        optimize(stack, opts, scheds, clips=clips)
        for k, (net, opt) in enumerate(zip(solos, solo_opts)):
            opt.zero_grad()
            loss = F.cross_entropy(net(x[k]), y[k])
            loss.backward()
            if solo_clips[k] is not None:
                solo_clips[k]()
            opt.step()
            assert losses[k].item() == pytest.approx(loss.item(), rel=1e-3)


def test_norm_nf_is_the_explicit_norm_free_command_and_the_keys_keep_older_identities(hydra_conf):
    nf = compose("config", overrides=["norm=nf"])
    explicit = compose("config", overrides=["norm=none", "model.conv=sws", "model.skipinit=true", "optim.agc_clip=0.01"])
    assert record.identity(nf) == record.identity(explicit)
    plain = compose("config", overrides=["norm=none"])
    older = compose("config", overrides=["norm=none"])
    with open_dict(older):  # a config from before the keys existed
        del older.optim["agc_clip"], older.model["skipinit"]
    assert record.identity(plain) == record.identity(older)  # neutral when absent: older runs keep their names
    for change in ("optim.agc_clip=0.01", "model.skipinit=true", "model.conv=sws"):
        assert record.identity(compose("config", overrides=["norm=none", change])) != record.identity(plain)
    assert record.identity(compose("config", overrides=["eval.example_weights=[0.5]"])) == record.identity(
        compose("config"))  # an evaluation setting, never the run


def sweeper_grid(cfg) -> dict:
    return {k: [str(v).strip() for v in str(vals).split(",")] for k, vals in cfg.hydra.sweeper.params.items()}


def test_the_recipes_compose_from_their_protocols(hydra_conf):
    free = compose("config", overrides=["experiment=norm_free"], return_hydra_config=True)
    quick = compose("config", overrides=["experiment=quick"], return_hydra_config=True)
    assert sweeper_grid(free)["norm"] == ["bn", "gn", "nf", "dyt"]
    for key in ("data", "optim", "trainer", "model"):
        assert free[key] == quick[key], key
    vit = compose("config", overrides=["experiment=vit_zoo"], return_hydra_config=True)
    assert sweeper_grid(vit)["norm"] == ["ln", "rms", "dyt", "derf", "bn", "gn"]
    assert (vit.model.name, vit.data.name, vit.data.train_subset, vit.trainer.max_epochs) == ("vit", "fashion_mnist", 6000, 2)


TINY = ["data=synthetic", "data.train_size=256", "data.batch_size=16", "trainer.max_epochs=1", "logger=csv",
        "eval.precise_bn_batches=2"]
SMALL_VIT = ["model=vit", "model.hidden_dim=48", "model.num_layers=2", "model.num_heads=3", "model.mlp_dim=96"]


def test_dyt_trains_a_vit_from_the_cli_and_logs_its_saturation(tmp_path):
    run_train(*TINY, *SMALL_VIT, "norm=dyt", f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["normalization_batch_size"] == 1
    diag = summary["norm_diagnostics"]
    assert all(0 <= row["saturation"] <= 1 for row in diag.values()) and len(diag) == 2 * 2 + 1
    assert "example_weight" not in summary and "test_acc_precise_bn" not in summary  # no statistics to weigh


def test_the_norm_free_resnet_and_bn_with_example_weighing_from_the_cli(tmp_path):
    run_train(*TINY, "model=resnet8", "norm=nf", f"hydra.run.dir={tmp_path / 'nf'}")
    nf = json.loads((tmp_path / "nf" / "summary.json").read_text())
    assert nf["status"] == "completed" and nf["config"]["model"]["conv"] == "sws" and nf["config"]["optim"]["agc_clip"] == 0.01
    run_train(*TINY, "model=resnet8", "norm=bn", "eval.example_weights=[0,0.5,1]", f"hydra.run.dir={tmp_path / 'bn'}")
    bn = json.loads((tmp_path / "bn" / "summary.json").read_text())
    assert bn["example_weight"] in (0, 0.5, 1) and 0 <= bn["test_acc_example_weight"] <= 1
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), str(tmp_path / "bn"), "example_weights=[0,0.5,1]"],
                          cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "bn" / "eval.json").read_text())
    assert out["example_weight"] == bn["example_weight"] and out["test_acc_example_weight"] == bn["test_acc_example_weight"]
    assert set(out["val_acc_by_example_weight"]) == {"0.0", "0.5", "1.0"}
    assert out["val_acc_example_weight"] == max(out["val_acc_by_example_weight"].values())
    assert "chosen on validation" in proc.stdout and len(proc.stdout.strip().splitlines()) == 1


@pytest.mark.parametrize("overrides,line", [
    ([*SMALL_VIT, "norm=nf"], "error: model.conv=sws: the ViT has no convolution followed by a norm"),
    (["norm=bgn", "norm.examples_per_group=3", "data.batch_size=8"],
     "error: norm.examples_per_group=3 does not divide data.batch_size=8"),
])
def test_a_refused_combination_is_one_line_before_training(tmp_path, overrides, line):
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    proc = run_train(*TINY[:-1], *overrides, f"hydra.run.dir={tmp_path}", check=False, env=env)
    assert one_line_error(proc).startswith(line)
    assert not (tmp_path / "checkpoints").exists()
