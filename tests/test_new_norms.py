"""The 2025 point-wise norms (dyt, derf), Switchable Normalization (sn), batch-group
normalization (bgn) and inference example weighing, each against its paper's equations (or its
authors' reference code) written out here, in training and evaluation, with gradients."""
import copy

import pytest
import torch

import norms
from harness.diagnostics import NormStats

N, C, G = 8, 6, 3
LAYOUTS = {"nchw": ((N, C, 3, 4), 1), "nlc": ((N, 5, C), -1)}  # shape, channel dim


def make(layout, dtype=torch.double, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(LAYOUTS[layout][0], generator=g, dtype=dtype) * 2 + 0.5)


def along(t, x, layout):
    shape = [1] * x.dim()
    shape[LAYOUTS[layout][1]] = -1
    return t.view(shape)


def randomize(layer):
    """Every parameter away from its initial value, so each term of the equation counts."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.linspace(-0.7, 0.9, p.numel(), dtype=p.dtype).view_as(p) + (1.0 if name == "weight" else 0))
    return layer


# ------------------------------------------------------------------------------ dyt, derf
def explicit_pointwise(kind, layer, x, layout):
    inner = layer.alpha * x + (layer.shift if kind == "derf" else 0)
    squashed = torch.tanh(inner) if kind == "dyt" else torch.erf(inner)
    return along(layer.weight, x, layout) * squashed + along(layer.bias, x, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["dyt", "derf"])
def test_dyt_and_derf_are_their_equations_exactly_in_training_and_evaluation(kind, layout):
    layer = norms.build(kind, C, layout).double()
    assert layer.alpha.item() == 0.5 and layer.alpha.shape == (1,)  # one scalar, from alpha_init
    assert torch.equal(layer.weight, torch.ones(C, dtype=torch.double)) and not layer.bias.any()
    if kind == "derf":
        assert layer.shift.shape == (1,) and layer.shift.item() == 0
    randomize(layer)
    x = make(layout).requires_grad_()
    for mode in (True, False):  # no statistics: the same in both, for any batch
        y = layer.train(mode)(x)
        assert torch.equal(y, explicit_pointwise(kind, layer, x, layout))
    assert torch.equal(layer(x[:1]), explicit_pointwise(kind, layer, x, layout)[:1])
    # gradients: to the input (gradcheck) and to every parameter (against the explicit equation)
    assert torch.autograd.gradcheck(layer, (x,))
    grads = torch.autograd.grad(layer(x).pow(2).sum(), [x, *layer.parameters()])
    ref = copy.deepcopy(layer)
    expected = torch.autograd.grad(explicit_pointwise(kind, ref, x, layout).pow(2).sum(), [x, *ref.parameters()])
    for a, b in zip(grads, expected):
        torch.testing.assert_close(a, b)
    assert norms.build(kind, C, layout, alpha_init=0.2).alpha.item() == pytest.approx(0.2)


@pytest.mark.parametrize("kind", ["dyt", "derf"])
def test_dyt_and_derf_log_the_fraction_of_saturated_activations(kind):
    layer = randomize(norms.build(kind, C))
    x = make("nchw", torch.float32) * 4
    inner = layer.alpha * x + (layer.shift if kind == "derf" else 0)
    expected = ((torch.tanh(inner) if kind == "dyt" else torch.erf(inner)).abs() > 0.99).float().mean()
    assert layer.saturation(x).item() == pytest.approx(expected.item()) and 0 < expected < 1
    assert _measured(layer, x)["saturation"] == pytest.approx(expected.item())  # the diagnostics, in training
    assert "saturation" not in _measured(norms.build("bn", C), x)  # only the point-wise norms'


def _measured(layer, x):
    """What harness/diagnostics.py measures at a layer in one training forward pass."""
    stats = NormStats([("n", layer)], "cpu")
    stats.start()
    layer.train()(x)
    stats.stop()
    return stats.epoch_means()["n"]


# ------------------------------------------------------------------------------ sn
def explicit_sn_moments(x):
    """in, ln, bn moments of (N, C, *) computed directly over their axes (two-pass, biased)."""
    dims = tuple(range(2, x.dim()))
    mean_in, var_in = x.mean(dims), x.var(dims, unbiased=False)
    mean_ln, var_ln = x.mean((1, *dims)), x.var((1, *dims), unbiased=False)
    mean_bn, var_bn = x.mean((0, *dims)), x.var((0, *dims), unbiased=False)
    return (mean_in, mean_ln[:, None].expand_as(mean_in), mean_bn[None].expand_as(mean_in)), \
        (var_in, var_ln[:, None].expand_as(var_in), var_bn[None].expand_as(var_in))


def explicit_sn(layer, x, bn_moments=None):
    means, variances = explicit_sn_moments(x)
    if bn_moments is not None:  # evaluation: the bn branch's running statistics
        means = (*means[:2], bn_moments[0][None].expand_as(means[0]))
        variances = (*variances[:2], bn_moments[1][None].expand_as(variances[0]))
    wm, wv = torch.softmax(layer.mean_weight, 0), torch.softmax(layer.var_weight, 0)
    mean = sum(w * m for w, m in zip(wm, means))
    var = sum(w * v for w, v in zip(wv, variances))
    view = (*mean.shape, *[1] * (x.dim() - 2))
    y = (x - mean.view(view)) / (var.view(view) + layer.eps).sqrt()
    return y * layer.weight.view(1, -1, *[1] * (x.dim() - 2)) + layer.bias.view(1, -1, *[1] * (x.dim() - 2))


def test_sn_mixes_in_ln_and_bn_moments_by_softmax_weights_in_training_and_evaluation():
    layer = randomize(norms.build("sn", C)).double()
    assert layer.mean_weight.shape == layer.var_weight.shape == (3,)  # in, ln, bn
    x = make("nchw").requires_grad_()
    torch.testing.assert_close(layer.train()(x), explicit_sn(layer, x))
    # the bn branch's running statistics: bn's update (momentum 0.1, unbiased variance)
    torch.testing.assert_close(layer.running_mean, 0.1 * x.detach().mean((0, 2, 3)))
    torch.testing.assert_close(layer.running_var, 0.9 + 0.1 * x.detach().var((0, 2, 3), unbiased=True))
    torch.testing.assert_close(layer.eval()(x), explicit_sn(layer, x, (layer.running_mean, layer.running_var)))
    frozen = copy.deepcopy(layer).train()
    frozen.momentum = 0.0
    assert torch.autograd.gradcheck(frozen, (x,))
    assert torch.autograd.gradcheck(layer.eval(), (x,))
    g = torch.autograd.grad(frozen(x).pow(3).sum(), [frozen.mean_weight, frozen.var_weight])
    e = torch.autograd.grad(explicit_sn(frozen, x).pow(3).sum(), [frozen.mean_weight, frozen.var_weight])
    for a, b in zip(g, e):  # the switch logits learn, through the softmax
        torch.testing.assert_close(a, b)
        assert a.abs().sum() > 0


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("branch,reference", [(0, ("in", {"affine": True})), (1, ("ln", {})), (2, ("bn", {}))])
def test_sn_with_one_hot_weights_is_that_norm(layout, branch, reference):
    kind, options = reference
    if kind == "ln" and layout == "nlc":
        options = {"scope": "sample"}  # on tokens sn's ln branch is over (L, C) per sample
    layer, ref = norms.build("sn", C, layout).double(), norms.build(kind, C, layout, **options).double()
    with torch.no_grad():
        for logits in (layer.mean_weight, layer.var_weight):
            logits.copy_(torch.full((3,), -60.0))
            logits[branch] = 60.0
    x = make(layout)
    torch.testing.assert_close(layer.train()(x), ref.train()(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(layer.eval()(x), ref.eval()(x), atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------ bgn
POINTS = [  # bgn's options, the kind it is there and that kind's options
    ({}, "bn", {}),
    ({"examples_per_group": 2}, "bn", {"virtual_batch_size": 2}),
    ({"examples_per_group": 1, "num_groups": G}, "gn", {"num_groups": G}),
    ({"examples_per_group": 1, "num_groups": 1}, "ln", {}),
    ({"examples_per_group": 1}, "in", {"affine": True}),
]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("options,kind,ref_options", POINTS, ids=["bn", "ghost_bn", "gn", "ln", "in"])
def test_bgn_is_bn_ghost_bn_gn_ln_and_in_at_its_points(layout, options, kind, ref_options):
    if kind == "ln" and layout == "nlc":
        ref_options = {"scope": "sample"}  # gn(G=1) on tokens, as bgn(k=1, G=1)
    layer, ref = norms.build("bgn", C, layout, **options).double(), norms.build(kind, C, layout, **ref_options).double()
    for m in (layer, ref):
        randomize(m)
    assert (layer.running_mean is None) == (options.get("examples_per_group") == 1)  # statistics over examples only
    for step in range(2):  # training steps, then evaluation with what they left
        x = make(layout, seed=step)
        torch.testing.assert_close(layer.train()(x), ref.train()(x), atol=1e-6, rtol=0)
    if layer.running_mean is not None:
        torch.testing.assert_close(layer.running_mean, ref.running_mean, atol=1e-6, rtol=0)
        torch.testing.assert_close(layer.running_var, ref.running_var, atol=1e-6, rtol=0)
    x = make(layout, seed=5)
    torch.testing.assert_close(layer.eval()(x), ref.eval()(x), atol=1e-6, rtol=0)
    layer.train().momentum = 0.0
    assert torch.autograd.gradcheck(layer, (x.requires_grad_(),))


def test_bgn_between_the_points_normalizes_over_k_examples_and_a_group_of_channels():
    layer = randomize(norms.build("bgn", C, examples_per_group=2, num_groups=G)).double()
    x = make("nchw")
    xg = x.view(N // 2, 2, G, C // G, -1)  # (groups of examples, k, G, C/G, H*W)
    mean, var = xg.mean((1, 3, 4), keepdim=True), xg.var((1, 3, 4), unbiased=False, keepdim=True)
    expected = ((xg - mean) / (var + 1e-5).sqrt()).view_as(x) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer.train()(x), expected)
    # running statistics per channel, updated by each group of 2 examples in order, as ghost bn's
    rm, rv = torch.zeros(C, dtype=torch.double), torch.ones(C, dtype=torch.double)
    for part in x.split(2):
        rm = 0.9 * rm + 0.1 * part.mean((0, 2, 3))
        rv = 0.9 * rv + 0.1 * part.var((0, 2, 3), unbiased=True)
    torch.testing.assert_close(layer.running_mean, rm)
    torch.testing.assert_close(layer.running_var, rv)
    # evaluation: a group's population mean and E[x^2] are its channels' (the authors' reference)
    x = make("nchw", seed=3)
    pm, psq = rm.view(G, -1).mean(1), (rv + rm ** 2).view(G, -1).mean(1)
    y = (x.view(N, G, -1) - pm[:, None]) / (psq - pm ** 2 + 1e-5).sqrt()[:, None]
    torch.testing.assert_close(layer.eval()(x), y.view_as(x) * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1))


def test_bgn_batch_options_are_checked_in_one_line():
    assert norms.normalization_batch({"kind": "bgn", "examples_per_group": None}, 16, 1) == 16
    assert norms.normalization_batch({"kind": "bgn", "examples_per_group": 4}, 16, 1) == 4
    assert norms.normalization_batch({"kind": "bgn", "examples_per_group": 1}, 16, 1) == 1
    assert norms.uses_batch_statistics({"kind": "bgn", "examples_per_group": 2})
    assert not norms.uses_batch_statistics({"kind": "bgn", "examples_per_group": 1})  # gn: a batch of one is fine
    assert norms.normalization_batch({"kind": "sn"}, 16, 1) == 16 and norms.uses_batch_statistics({"kind": "sn"})
    with pytest.raises(ValueError, match=r"^norm.examples_per_group=3 does not divide data.batch_size=8 .*"
                                         r"valid examples_per_group for 8: \[1, 2, 4, 8\]"):
        norms.check_batch({"kind": "bgn", "examples_per_group": 3}, 8)
    norms.check_batch({"kind": "bgn", "examples_per_group": 16}, 8)  # at least the batch: the whole batch, as ghost bn
    with pytest.raises(ValueError, match=r"bgn: num_channels=6 is not divisible by num_groups=4; valid num_groups "
                                         r"for 6 channels: \[1, 2, 3, 6\]"):
        norms.build("bgn", C, num_groups=4)
    with pytest.raises(ValueError, match="a batch of 6 samples cannot be split into groups of examples_per_group=4"):
        norms.build("bgn", C, examples_per_group=4)(torch.randn(6, C, 2, 2))
    assert norms.label({"kind": "bgn", "examples_per_group": 2, "num_groups": 3}) == "bgn (k=2, G=3)"


# ------------------------------------------------------------------------------ example weighing
def weighed(x, rm, rv, alpha, groups, eps=1e-5):
    """Summers & Dinneen's inference example weighing, per sample and group of C/G channels."""
    xs = x.reshape(x.shape[0], groups, -1)
    pm, psq = rm.view(groups, -1).mean(1), (rv + rm ** 2).view(groups, -1).mean(1)
    mean = alpha * xs.mean(-1) + (1 - alpha) * pm
    var = alpha * (xs ** 2).mean(-1) + (1 - alpha) * psq - mean ** 2
    return ((xs - mean[..., None]) / (var[..., None] + eps).sqrt()).view_as(x)


@pytest.mark.parametrize("kind,options,groups", [("bn", {}, C), ("bgn", {}, C), ("bgn", {"examples_per_group": 2,
                                                                                           "num_groups": G}, G)])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_example_weighing_mixes_each_examples_moments_into_the_running_ones_at_evaluation(kind, options, groups, alpha):
    layer = randomize(norms.build(kind, C, **options)).double()
    for seed in range(3):
        layer.train()(make("nchw", seed=seed))
    x, trained = make("nchw", seed=9), copy.deepcopy(layer.state_dict())
    plain = layer.eval()(x)
    layer.eval_example_weight = alpha
    w, b = layer.weight.view(1, -1, 1, 1), layer.bias.view(1, -1, 1, 1)
    expected = weighed(x, layer.running_mean, layer.running_var, alpha, groups) * w + b
    torch.testing.assert_close(layer(x), expected)
    if alpha == 0:
        torch.testing.assert_close(layer(x), plain)
    if alpha == 1 and groups == C:  # each example's own statistics alone: in
        ref = norms.build("in", C, affine=True).double()
        ref.load_state_dict({"weight": layer.weight, "bias": layer.bias})
        torch.testing.assert_close(layer(x), ref(x))
    assert torch.autograd.gradcheck(layer.eval(), (x.requires_grad_(),))
    other = norms.build(kind, C, **options).double()  # training never reads it: the same step as alpha 0
    other.load_state_dict(trained)
    layer.load_state_dict(trained)
    x = make("nchw", seed=4)
    assert torch.equal(layer.train()(x), other.train()(x)) and torch.equal(layer.running_var, other.running_var)
