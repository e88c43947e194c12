"""The small-batch norms beyond the four (brn, rms, ln2d) and Weight Standardization, each
against an explicit computation of its paper's equations over its declared axes."""
import pytest
import torch
from torch import nn

import models
import norms
from harness.module import param_groups

torch.set_default_dtype(torch.float32)


def brn(**options):
    layer = norms.build("brn", 4, **options)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        layer.bias.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
        layer.running_mean.copy_(torch.tensor([0.5, -0.5, 1.0, 0.0]))
        layer.running_var.copy_(torch.tensor([2.0, 0.5, 1.0, 4.0]))
    return layer


def explicit_brn(layer, x, r_max, d_max):
    """The paper's equations, written out for (N, C, H, W)."""
    mu_b = x.mean((0, 2, 3))
    var_b = x.var((0, 2, 3), unbiased=False)
    sigma_b = (var_b + layer.eps).sqrt()
    sigma = (layer.running_var + layer.eps).sqrt()
    r = (sigma_b / sigma).clamp(1 / r_max, r_max)
    d = ((mu_b - layer.running_mean) / sigma).clamp(-d_max, d_max)
    xhat = (x - mu_b[:, None, None]) / sigma_b[:, None, None] * r[:, None, None] + d[:, None, None]
    return xhat * layer.weight[:, None, None] + layer.bias[:, None, None]


def test_brn_training_output_is_the_papers_equation_and_evaluation_is_bn():
    x = torch.randn(6, 4, 3, 3) * 3 + 1
    layer = brn(r_max=1.5, d_max=0.5)
    expected = explicit_brn(layer, x, 1.5, 0.5)
    running_mean, running_var = layer.running_mean.clone(), layer.running_var.clone()
    torch.testing.assert_close(layer.train()(x), expected)
    # running statistics updated as bn's: momentum 0.1, the unbiased batch variance
    torch.testing.assert_close(layer.running_mean, 0.9 * running_mean + 0.1 * x.mean((0, 2, 3)))
    torch.testing.assert_close(layer.running_var, 0.9 * running_var + 0.1 * x.var((0, 2, 3), unbiased=True))
    bn = nn.BatchNorm2d(4).eval()
    bn.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "steps"})
    torch.testing.assert_close(layer.eval()(x), bn(x))


def test_brn_with_r_max_1_and_d_max_0_is_bn_in_training():
    x = torch.randn(8, 4, 5, 5) * 2 - 1
    layer, bn = brn(r_max=1.0, d_max=0.0), nn.BatchNorm2d(4)
    bn.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "steps"})
    torch.testing.assert_close(layer.train()(x), bn.train()(x))
    torch.testing.assert_close(layer.running_var, bn.running_var)


def test_brn_unclipped_normalizes_a_training_batch_with_the_running_statistics():
    x = torch.randn(8, 4, 5, 5) * 2 - 1
    layer = brn(r_max=1e6, d_max=1e6)
    mu, sigma = layer.running_mean.clone(), (layer.running_var + layer.eps).sqrt()
    expected = (x - mu[:, None, None]) / sigma[:, None, None] * layer.weight[:, None, None] + layer.bias[:, None, None]
    torch.testing.assert_close(layer.train()(x), expected, rtol=1e-4, atol=1e-4)


def test_brn_r_and_d_are_constants_in_the_backward_pass():
    x = (torch.randn(4, 4, 3, 3, dtype=torch.double) * 2).requires_grad_()
    g = torch.randn(4, 4, 3, 3, dtype=torch.double)
    layer = brn(r_max=1.2, d_max=0.3).double().train()
    (grad,) = torch.autograd.grad((layer(x) * g).sum(), x)
    # the explicit equations with r and d detached, differentiated by autograd
    ref = brn(r_max=1.2, d_max=0.3).double()
    mu_b, var_b = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    sigma_b, sigma = (var_b + ref.eps).sqrt(), (ref.running_var + ref.eps).sqrt()
    r = (sigma_b / sigma).clamp(1 / 1.2, 1.2).detach()
    d = ((mu_b - ref.running_mean) / sigma).clamp(-0.3, 0.3).detach()
    y = ((x - mu_b[:, None, None]) / sigma_b[:, None, None] * r[:, None, None] + d[:, None, None]) \
        * ref.weight[:, None, None] + ref.bias[:, None, None]
    (expected,) = torch.autograd.grad((y * g).sum(), x)
    torch.testing.assert_close(grad, expected)
    # and the layer's parameters get gradients (gamma, beta)
    layer.zero_grad()
    (layer(x) * g).sum().backward()
    assert layer.weight.grad.abs().sum() > 0 and layer.bias.grad.abs().sum() > 0


def test_brn_warmup_is_bn_then_relaxes_to_the_final_limits():
    layer = norms.build("brn", 4, r_max=3.0, d_max=5.0, warmup_steps=10)
    seen = {}
    for step in range(1, 90):
        layer.train()(torch.randn(4, 4, 2, 2))
        seen[step] = layer.limits()
    assert seen[9] == (1.0, 0.0)  # bn for the first warmup steps
    assert seen[45][0] == pytest.approx(1 + 2 * 35 / 70) and seen[45][1] == pytest.approx(5.0 * 35 / 40)
    assert seen[89] == (3.0, 5.0)


def test_brn_uses_batch_statistics_like_bn():
    assert norms.normalization_batch({"kind": "brn"}, per_device_batch=16, world_size=2) == 16
    assert norms.normalization_batch({"kind": "brn", "virtual_batch_size": 4}, 16, 1) == 4
    assert norms.normalization_batch({"kind": "brn", "sync": True}, 16, 2) == 32
    x = torch.randn(8, 4, 3, 3)
    ghost = norms.build("brn", 4, virtual_batch_size=4, r_max=1.0, d_max=0.0).train()
    bn = nn.BatchNorm2d(4).train()
    torch.testing.assert_close(ghost(x), torch.cat([bn(x[:4]), bn(x[4:])]))
    with pytest.raises(ValueError, match="cannot train on a single value per channel"):
        norms.build("brn", 4).train()(torch.randn(1, 4, 1, 1))


@pytest.mark.parametrize("layout,x,dim", [("nchw", torch.randn(3, 6, 4, 4), 1), ("nlc", torch.randn(3, 5, 6), -1)])
def test_rms_divides_by_the_root_mean_square_over_channels_without_centering(layout, x, dim):
    layer = norms.build("rms", 6, layout)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
        layer.bias.uniform_(-1, 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    expected = x / (x.pow(2).mean(dim, keepdim=True) + 1e-6).sqrt() * layer.weight.view(shape) + layer.bias.view(shape)
    torch.testing.assert_close(layer(x), expected)
    assert torch.autograd.gradcheck(norms.build("rms", 6, layout).double(), (x.double().requires_grad_(),))


def test_ln2d_normalizes_over_channels_per_pixel_and_is_ln_per_token_on_tokens():
    x = torch.randn(3, 6, 4, 4) * 2 + 1
    layer = norms.build("ln2d", 6)
    mean, var = x.mean(1, keepdim=True), x.var(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(layer(x), (x - mean) / (var + 1e-6).sqrt())
    assert not torch.allclose(layer(x), norms.build("ln", 6)(x))  # not ln over (C, H, W)
    tokens = torch.randn(3, 5, 6)
    torch.testing.assert_close(norms.build("ln2d", 6, "nlc")(tokens), nn.LayerNorm(6, eps=1e-6)(tokens))
    assert torch.autograd.gradcheck(norms.build("ln2d", 6).double(), (x.double().requires_grad_(),))


def test_weight_standardization_gives_zero_mean_unit_variance_filters_and_trains():
    net = models.build({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 8, "conv": "ws"},
                       {"kind": "gn", "num_groups": 4}, 1, 10, 28)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 3 + 2  # stem, two per block, two projection shortcuts: every conv
    for conv in convs:
        w = conv.weight  # the standardized weight the convolution uses
        torch.testing.assert_close(w.mean((1, 2, 3)), torch.zeros(w.shape[0]), atol=1e-6, rtol=0)
        torch.testing.assert_close(w.var((1, 2, 3), unbiased=False), torch.ones(w.shape[0]), atol=1e-3, rtol=0)
    raw = convs[0].parametrizations.weight.original
    before = raw.detach().clone()
    opt = torch.optim.SGD(param_groups(net, True), lr=0.1)
    nn.functional.cross_entropy(net(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    assert not torch.equal(before, raw)  # the raw weight is what the optimizer updates
    plain = models.build({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 8}, {"kind": "gn", "num_groups": 4},
                         1, 10, 28)
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in net.parameters())


def test_weight_standardization_on_a_backbone_without_convs_before_norms_is_one_line():
    with pytest.raises(ValueError, match=r"model.conv=ws: the ViT has no convolution followed by a norm"):
        models.build({"name": "vit", "arch": "vit", "conv": "ws"}, {"kind": "ln"}, 3, 10, 32)


def _randomize(layer):
    """Affine parameters (and v, tau, eps_l) away from their initial values, so each term counts."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.uniform_(-0.5, 0.5) if name in ("bias", "tau") else p.uniform_(0.5, 1.5)
    return layer


def _c(t):
    return t.view(1, -1, 1, 1)


@pytest.mark.parametrize("learnable_eps", [False, True])
def test_frn_with_tlu_is_the_papers_equation_over_h_w(learnable_eps):
    x = torch.randn(3, 6, 4, 5) * 3 + 1
    layer = _randomize(norms.build("frn", 6, act=True, learnable_eps=learnable_eps))
    eps = 1e-6 + (_c(layer.eps_l).abs() if learnable_eps else 0)
    nu2 = (x * x).mean((2, 3), keepdim=True)  # no mean subtraction
    y = _c(layer.weight) * x / (nu2 + eps).sqrt() + _c(layer.bias)
    torch.testing.assert_close(layer(x), torch.maximum(y, _c(layer.tau)))
    plain = _randomize(norms.build("frn", 6, act=False))  # a site with no activation after it: no TLU
    assert plain.tau is None and not norms.includes_activation(plain) and norms.includes_activation(layer)
    torch.testing.assert_close(plain(x), _c(plain.weight) * x / ((x * x).mean((2, 3), keepdim=True) + 1e-6).sqrt()
                               + _c(plain.bias))
    torch.testing.assert_close(layer.eval()(x), layer.train()(x))  # no batch statistics: train = eval
    assert torch.autograd.gradcheck(layer.double(), (x.double().requires_grad_(),))


def test_frn_on_tokens_is_over_l_per_sample_and_channel():
    x = torch.randn(3, 7, 6)
    layer = _randomize(norms.build("frn", 6, "nlc", act=True))
    y = x / ((x * x).mean(1, keepdim=True) + 1e-6).sqrt() * layer.weight + layer.bias
    torch.testing.assert_close(layer(x), torch.maximum(y, layer.tau))


def test_frn_without_tlu_on_a_1x1_map_is_the_sign_and_learnable_eps_avoids_it():
    x = torch.randn(8, 6, 1, 1)
    x = x + x.sign() * 0.1  # |x| >= 0.1 >> sqrt(eps)
    layer = _randomize(norms.build("frn", 6))
    torch.testing.assert_close(layer(x), _c(layer.weight) * x.sign() + _c(layer.bias), atol=1e-3, rtol=0)
    learned = norms.build("frn", 6, learnable_eps=True)
    with torch.no_grad():
        learned.eps_l.fill_(1.0)
    assert not torch.allclose(learned(x), x.sign(), atol=0.05)  # a large learned eps keeps the magnitude


def test_evonorm_s0_is_the_papers_equation_with_group_variance():
    x = torch.randn(3, 8, 4, 4) * 2 + 0.5
    layer = _randomize(norms.build("evonorm_s0", 8, act=True, num_groups=2))
    var = x.view(3, 2, -1).var(-1, unbiased=False).repeat_interleave(4, 1).view(3, 8, 1, 1)  # over (C/G, H, W)
    expected = x * torch.sigmoid(_c(layer.v) * x) / (var + 1e-5).sqrt() * _c(layer.weight) + _c(layer.bias)
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.eval()(x), expected)  # no batch statistics
    assert torch.autograd.gradcheck(layer.double(), (x.double().requires_grad_(),))
    plain = _randomize(norms.build("evonorm_s0", 8, num_groups=2))  # no activation after it: gamma x + beta
    assert plain.v is None
    torch.testing.assert_close(plain(x), x * _c(plain.weight) + _c(plain.bias))


def test_evonorm_b0_is_the_papers_equation_with_batch_and_instance_variance():
    x = torch.randn(6, 4, 3, 3) * 2 + 1
    layer = _randomize(norms.build("evonorm_b0", 4, act=True)).train()
    batch_var = x.var((0, 2, 3), unbiased=False)
    instance_var = x.var((2, 3), unbiased=False, keepdim=True)

    def expected(var):
        left = _c((var + 1e-5).sqrt())
        return x / torch.maximum(left, _c(layer.v) * x + (instance_var + 1e-5).sqrt()) * _c(layer.weight) + _c(layer.bias)

    torch.testing.assert_close(layer(x), expected(batch_var))
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * x.var((0, 2, 3), unbiased=True))  # as bn's
    torch.testing.assert_close(layer.eval()(x), expected(layer.running_var))  # evaluation: the running variance
    gradcheck_layer = _randomize(norms.build("evonorm_b0", 4, act=True)).double().train()
    gradcheck_layer.momentum = 0.0
    assert torch.autograd.gradcheck(gradcheck_layer, (x.double().requires_grad_(),))
    plain = _randomize(norms.build("evonorm_b0", 4))
    assert plain.v is None and plain.running_var is None  # no batch statistics where it only scales
    torch.testing.assert_close(plain(x), x * _c(plain.weight) + _c(plain.bias))


def test_evonorm_b0_uses_batch_statistics_like_bn():
    assert norms.normalization_batch({"kind": "evonorm_b0"}, per_device_batch=16, world_size=2) == 16
    assert norms.normalization_batch({"kind": "evonorm_b0", "virtual_batch_size": 4}, 16, 1) == 4
    assert norms.normalization_batch({"kind": "evonorm_b0", "sync": True}, 16, 2) == 32
    assert norms.normalization_batch({"kind": "evonorm_s0"}, 16, 2) == norms.normalization_batch({"kind": "frn"}, 16, 2) == 1
    x = torch.randn(8, 4, 3, 3)
    ghost = norms.build("evonorm_b0", 4, act=True, virtual_batch_size=4).train()
    whole = norms.build("evonorm_b0", 4, act=True).train()
    torch.testing.assert_close(ghost(x), torch.cat([whole(x[:4]), whole(x[4:])]))
    with pytest.raises(ValueError, match="evonorm_b0 cannot train on a single value per channel"):
        norms.build("evonorm_b0", 4, act=True).train()(torch.randn(1, 4, 1, 1))


def _relus(net):
    return sum(isinstance(m, nn.ReLU) for m in net.modules())


@pytest.mark.parametrize("arch,model,act_sites,plain_sites", [
    ("cifar_resnet", {"depth": 8, "width": 8}, 1 + 3, 3 + 2),  # stem + norm1 per block; norm2 per block + 2 shortcuts
    ("torchvision_resnet", {"depth": 18}, 1 + 8, 8 + 3),
    ("torchvision_resnet", {"depth": 50}, 1 + 2 * 16, 16 + 4),
])
def test_backbones_ask_for_norm_activation_where_a_relu_follows_the_norm(arch, model, act_sites, plain_sites):
    frn = models.build({"name": arch, "arch": arch, **model}, {"kind": "frn"}, 3, 10, 32)
    layers = [m for m in frn.modules() if norms.kind_of(m) == "frn"]
    assert sum(m.apply_act for m in layers) == act_sites and sum(not m.apply_act for m in layers) == plain_sites
    bn = models.build({"name": arch, "arch": arch, **model}, {"kind": "bn"}, 3, 10, 32)
    # a norm with its own activation replaces the ReLU at its site; the ReLU after each addition stays
    assert _relus(bn) - _relus(frn) == act_sites


def test_frn_with_tlu_at_zero_tau_is_the_plain_norm_and_relu_in_a_backbone():
    """With tau = 0 the TLU is a ReLU: a ResNet with frn equals one whose frn sites all lack the
    TLU and are followed by ReLU, which checks that the TLU sits exactly where the ReLU was."""
    spec = {"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 8, "zero_init_residual": False}
    torch.manual_seed(0)
    net = models.build(spec, {"kind": "frn"}, 1, 10, 16)
    reference = __import__("copy").deepcopy(net)
    for module in reference.modules():
        if norms.kind_of(module) == "frn" and module.apply_act:
            module.apply_act = False
    # the activations the frn sites replaced, by name: the stem's and each block's first
    assert isinstance(reference.stem[2], nn.Identity)
    reference.stem[2] = nn.ReLU()
    for block in reference.blocks:
        assert isinstance(block.act1, nn.Identity)
        block.act1 = nn.ReLU()
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(net(x), reference(x))


MODELS = [({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 8}, 28, 1),
          ({"name": "resnet18", "arch": "torchvision_resnet", "depth": 18}, 32, 3),
          ({"name": "vit", "arch": "vit", "hidden_dim": 48, "num_heads": 2, "num_layers": 2, "mlp_dim": 96}, 32, 3)]


@pytest.mark.parametrize("kind", ["brn", "rms", "ln2d", "frn", "evonorm_s0", "evonorm_b0"])
@pytest.mark.parametrize("model,size,channels", MODELS, ids=["cifar_resnet", "torchvision_resnet", "vit"])
def test_every_model_builds_and_trains_with_each_new_norm(kind, model, size, channels):
    torch.manual_seed(0)
    norm = {"kind": kind, **({"num_groups": 4} if kind == "evonorm_s0" else {})}
    if kind.startswith("evonorm") and model["arch"] == "vit":
        with pytest.raises(ValueError, match=f"norm '{kind}' has no definition for layout 'nlc'; it supports 'nchw'"):
            models.build(model, norm, channels, 10, size)
        return
    net = models.build(model, norm, channels, 10, size)
    assert {norms.kind_of(m) for m in net.modules()} - {None} == {kind}
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x, y = torch.randn(4, channels, size, size), torch.randint(0, 10, (4,))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net.train()(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and net.eval()(x).shape == (4, 10)
    assert losses[-1] < losses[0], losses  # three steps on one batch fit it better: gradients flow through the norm
