"""Each norm against a reference computed by explicit mean/variance over the axes its docstring and
the README ("What each norm normalizes") declare."""
import pytest
import torch
from torch import nn

import norms

torch.manual_seed(0)

# (kind, layout, options) -> axes of the reference mean/var. gn is reshaped to expose groups.
N, C, H, W, L, G = 4, 6, 5, 3, 7, 3


def reference(x, kind, layout, scope="token", groups=G, eps=1e-5):
    """Normalize x over the axes the norm declares (biased variance), no affine."""
    if kind == "gn":
        if layout == "nchw":
            xg = x.reshape(x.shape[0], groups, -1, *x.shape[2:])
            axes = (2, 3, 4)
        else:
            xg = x.reshape(*x.shape[:2], groups, -1)
            axes = (1, 3)
        mean = xg.mean(axes, keepdim=True)
        var = xg.var(axes, unbiased=False, keepdim=True)
        return ((xg - mean) / torch.sqrt(var + eps)).reshape(x.shape)
    axes = {
        ("bn", "nchw"): (0, 2, 3), ("ln", "nchw"): (1, 2, 3), ("in", "nchw"): (2, 3),
        ("bn", "nlc"): (0, 1), ("in", "nlc"): (1,),
        ("ln", "nlc"): (2,) if scope == "token" else (1, 2),
    }[kind, layout]
    mean = x.mean(axes, keepdim=True)
    var = x.var(axes, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def channel_view(p, layout, ndim):
    return p.view(1, -1, 1, 1) if layout == "nchw" else p.view(1, 1, -1)


def make_input(layout, dtype=torch.float32):
    shape = (N, C, H, W) if layout == "nchw" else (N, L, C)
    return (torch.randn(shape, dtype=dtype) * 3 + 2)


CASES = [(k, lay, {}) for k in ("bn", "ln", "in", "gn") for lay in ("nchw", "nlc")]
CASES += [("ln", "nlc", {"scope": "sample"}), ("in", "nchw", {"affine": True}), ("in", "nlc", {"affine": True})]


def options_for(kind, extra):
    return {**({"num_groups": G} if kind == "gn" else {}), **extra}


@pytest.mark.parametrize("kind,layout,extra", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_matches_reference_over_declared_axes(kind, layout, extra, mode):
    layer = norms.build(kind, C, layout, **options_for(kind, extra))
    with torch.no_grad():  # non-trivial affine parameters, so the per-channel affine is checked too
        if getattr(layer, "weight", None) is not None:
            layer.weight.copy_(torch.rand(C) + 0.5)
            layer.bias.copy_(torch.randn(C))
    x = make_input(layout)
    if mode == "eval":
        layer.eval()
        if kind == "bn":  # eval uses running statistics, not the batch's
            layer.running_mean.copy_(torch.randn(C))
            layer.running_var.copy_(torch.rand(C) + 0.5)
    y = layer(x)
    assert y.shape == x.shape
    if kind == "bn" and mode == "eval":
        rm, rv = (channel_view(b, layout, x.dim()) for b in (layer.running_mean, layer.running_var))
        expected = (x - rm) / torch.sqrt(rv + 1e-5)
    else:
        expected = reference(x, kind, layout, scope=extra.get("scope", "token"))
    if getattr(layer, "weight", None) is not None:
        expected = expected * channel_view(layer.weight, layout, x.dim()) + channel_view(layer.bias, layout, x.dim())
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["nchw", "nlc"])
@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_bn_running_statistics_follow_momentum(layout, momentum):
    layer = norms.build("bn", C, layout, momentum=momentum)
    x = make_input(layout)
    layer(x)
    axes = (0, 2, 3) if layout == "nchw" else (0, 1)
    batch_mean = x.mean(axes)
    batch_var = x.var(axes, unbiased=True)  # PyTorch stores the unbiased variance
    torch.testing.assert_close(layer.running_mean, momentum * batch_mean)
    torch.testing.assert_close(layer.running_var, (1 - momentum) * torch.ones(C) + momentum * batch_var)
    assert layer.num_batches_tracked.item() == 1


def test_gn_with_one_group_equals_ln_on_maps():
    x = make_input("nchw")
    gn, ln = norms.build("gn", C, num_groups=1), norms.build("ln", C)
    with torch.no_grad():
        w, b = torch.rand(C) + 0.5, torch.randn(C)
        for layer in (gn, ln):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    torch.testing.assert_close(gn(x), ln(x))


@pytest.mark.parametrize("layout", ["nchw", "nlc"])
def test_gn_with_one_channel_per_group_equals_in(layout):
    x = make_input(layout)
    gn, inn = norms.build("gn", C, layout, num_groups=C), norms.build("in", C, layout, affine=True)
    with torch.no_grad():
        w, b = torch.rand(C) + 0.5, torch.randn(C)
        for layer in (gn, inn):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    torch.testing.assert_close(gn(x), inn(x))


def test_gn_with_one_group_on_tokens_is_sample_scope_ln_not_token_ln():
    x = make_input("nlc")
    gn = norms.build("gn", C, "nlc", num_groups=1)
    torch.testing.assert_close(gn(x), norms.build("ln", C, "nlc", scope="sample")(x))
    assert not torch.allclose(gn(x), norms.build("ln", C, "nlc", scope="token")(x), atol=1e-3)


def test_bn_at_batch_one_behaves_like_in():
    x = torch.randn(1, C, H, W)
    torch.testing.assert_close(norms.build("bn", C)(x), norms.build("in", C, affine=True)(x))


@pytest.mark.parametrize("kind,layout,extra", CASES + [("none", "nchw", {}), ("none", "nlc", {})], ids=lambda v: str(v))
def test_gradients(kind, layout, extra):
    layer = norms.build(kind, C, layout, **options_for(kind, extra)).double()
    shape = (3, C, 2, 3) if layout == "nchw" else (3, 4, C)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,), eps=1e-6, atol=1e-5)


def test_none_is_identity():
    x = make_input("nchw")
    assert torch.equal(norms.build("none", C)(x), x)


@pytest.mark.parametrize("layout,shape", [("nchw", (1, C, 1, 1)), ("nlc", (1, 1, C))])
def test_bn_single_value_per_channel_is_a_clear_error(layout, shape):
    layer = norms.build("bn", C, layout)
    with pytest.raises(ValueError, match=r"single value per channel.*" + r"\(" + ", ".join(map(str, shape))):
        layer(torch.randn(shape))
    layer.eval()  # eval mode uses running statistics, so one value is fine
    assert layer(torch.randn(shape)).shape == shape


def test_gn_indivisible_groups_names_the_values():
    with pytest.raises(ValueError, match=r"num_channels=6 is not divisible by num_groups=4.*\[1, 2, 3, 6\]"):
        norms.build("gn", 6, num_groups=4)


@pytest.mark.parametrize("call,message", [
    (lambda: norms.build("batchnorm", 4), r"unknown norm kind 'batchnorm'; valid kinds: 'bn', 'ln', 'in', 'gn', 'none', 'bgn', 'brn', 'dyt', 'derf', 'evonorm_s0', 'evonorm_b0', 'frn', 'ln2d', 'rms', 'sn'"),
    (lambda: norms.build("bn", 4, layout="nhwc"), r"unknown layout 'nhwc'; valid layouts: 'nchw', 'nlc'"),
    (lambda: norms.build("ln", 4, "nlc", scope="channel"), r"unknown ln scope 'channel'; valid scopes: 'token', 'sample'"),
    (lambda: norms.build("ln", 4, "nchw", scope="token"), r"scope 'token' is not available for layout 'nchw'"),
    (lambda: norms.build("bn", 4, num_groups=2), r"norm 'bn' does not take option\(s\) 'num_groups'; valid options: 'eps'"),
    (lambda: norms.build("gn", 0), r"num_channels must be a positive integer, got 0"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("kind", norms.kinds())
@pytest.mark.parametrize("layout", norms.LAYOUTS)
def test_kind_of_reads_back_the_kind(kind, layout):
    groups = {"num_groups": 2} if "num_groups" in norms.get(kind).options else {}
    if layout not in norms.get(kind).layers:  # the EvoNorms on tokens: refused, saying why
        with pytest.raises(ValueError, match=f"norm '{kind}' has no definition for layout '{layout}'; it supports 'nchw' "
                                             r"\(the EvoNorms are defined for CNN feature maps"):
            norms.build(kind, 4, layout, **groups)
        return
    for act in (False, True):
        assert norms.kind_of(norms.build(kind, 4, layout, act=act, **groups)) == kind


@pytest.mark.parametrize("layout", ["nchw", "nlc"])
def test_ghost_bn_with_the_whole_batch_is_plain_bn(layout):
    x = make_input(layout)
    ghost, plain = norms.build("bn", C, layout, virtual_batch_size=N), norms.build("bn", C, layout)
    torch.testing.assert_close(ghost(x), plain(x))
    torch.testing.assert_close(ghost.running_var, plain.running_var)


@pytest.mark.parametrize("layout", ["nchw", "nlc"])
def test_ghost_bn_with_half_the_batch_is_bn_on_each_half(layout):
    x = make_input(layout)
    ghost, plain = norms.build("bn", C, layout, virtual_batch_size=N // 2), norms.build("bn", C, layout)
    halves = torch.cat([plain(x[: N // 2]), plain(x[N // 2:])])  # plain bn on each half, in order
    torch.testing.assert_close(ghost(x), halves)
    torch.testing.assert_close(ghost.running_mean, plain.running_mean)
    torch.testing.assert_close(ghost.running_var, plain.running_var)
    # and it is not plain bn over the whole batch
    assert not torch.allclose(ghost(x), norms.build("bn", C, layout)(x), atol=1e-3)


def test_ghost_bn_rejects_a_batch_it_cannot_split():
    with pytest.raises(ValueError, match=r"a batch of 4 samples cannot be split into virtual batches of virtual_batch_size=3"):
        norms.build("bn", C, virtual_batch_size=3)(make_input("nchw"))
    with pytest.raises(ValueError, match=r"virtual_batch_size must be a positive integer or None, got 0"):
        norms.build("bn", C, virtual_batch_size=0)


@pytest.mark.parametrize("layout", ["nchw", "nlc"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_bn_is_torchs_batch_norm_to_the_bit(layout, momentum):
    """NormLab's bn (norms.batch.BatchStatistics over F.batch_norm) against torch's own
    BatchNorm2d / BatchNorm1d: outputs, gradients and running statistics identical, bit for bit,
    in training (three steps) and in evaluation. Numbers a refactor must not move."""
    ours = norms.build("bn", C, layout, momentum=momentum)
    theirs = (nn.BatchNorm2d if layout == "nchw" else nn.BatchNorm1d)(C, momentum=momentum)
    g = torch.Generator().manual_seed(0)
    shape = (4, C, 5, 3) if layout == "nchw" else (4, 7, C)
    to_theirs = (lambda t: t) if layout == "nchw" else (lambda t: t.transpose(1, 2))
    for _ in range(3):
        x = (torch.randn(shape, generator=g) * 2 + 1).requires_grad_(True)
        x2 = x.detach().clone().requires_grad_(True)
        y, y2 = ours(x), to_theirs(theirs(to_theirs(x2)))
        assert torch.equal(y, y2)
        (y * y.detach()).sum().backward()
        (y2 * y2.detach()).sum().backward()
        assert torch.equal(x.grad, x2.grad) and torch.equal(ours.weight.grad, theirs.weight.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    ours.eval(), theirs.eval()
    x = torch.randn(shape, generator=g)
    assert torch.equal(ours(x), to_theirs(theirs(to_theirs(x))))
