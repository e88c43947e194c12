"""Evaluation that separates a model from its statistics: PreciseBN, batch statistics, eval.py."""
import copy
import json
import subprocess
import sys

import pytest
import torch
from conftest import REPO, clean_env, run_train
from torch import nn

import norms
from harness.evaluation import accuracy, precise_bn, statistics_layers


def small_net(norm="bn", **options):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), norms.build(norm, 8, **options), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), norms.build(norm, 8, **options), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))


def test_precise_bn_is_the_equal_weight_average_of_the_per_batch_statistics():
    net = small_net()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 3, 5, 5, generator=g) * (1 + i) + i, torch.zeros(6, dtype=torch.long)) for i in range(5)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    recalibrated, used = precise_bn(net, batches)
    assert used == 5
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the network's own: untouched
    first = statistics_layers(recalibrated)[0]
    means = torch.stack([x.mean((0, 2, 3)) for x, _ in batches])
    # the first bn's input is the first conv's output: compute it the same way
    conv = recalibrated[0]
    with torch.no_grad():
        inputs = [conv(x) for x, _ in batches]
    means = torch.stack([h.mean((0, 2, 3)) for h in inputs])
    variances = torch.stack([h.var((0, 2, 3), unbiased=True) for h in inputs])
    torch.testing.assert_close(first.running_mean, means.mean(0))
    torch.testing.assert_close(first.running_var, variances.mean(0))
    assert first.momentum == 0.1 and not recalibrated.training  # the layer's own settings back


def test_precise_bn_repairs_corrupted_statistics_and_the_accuracy_recovers():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 3, 6, 6, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()  # the sign of channel 0's mean
    net = small_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        for i in range(0, 512, 32):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
    batches = [(x[i:i + 64], y[i:i + 64]) for i in range(0, 512, 64)]
    good = accuracy(net, batches)
    assert good > 0.9
    for layer in statistics_layers(net):
        layer.running_mean.add_(5.0)
        layer.running_var.mul_(40.0)
    broken = accuracy(net, batches)
    repaired, _ = precise_bn(net, [(x[i:i + 32], y[i:i + 32]) for i in range(0, 512, 32)])
    assert broken < good - 0.2 and accuracy(repaired, batches) > good - 0.02, (good, broken)


def test_batch_statistics_accuracy_normalizes_each_batch_by_itself_and_changes_nothing():
    net = small_net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3, 5, 5)
    batches = [(x, torch.zeros(8, dtype=torch.long))]
    accuracy(net, batches, batch_statistics=8)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # the same as the network in train mode on that batch
    reference = small_net()
    reference.load_state_dict(before)
    with torch.no_grad():
        expected = (reference.train()(x).argmax(1) == 0).float().mean().item()
    assert accuracy(net, batches, batch_statistics=8) == expected
    assert statistics_layers(small_net("gn", num_groups=4)) == [] and statistics_layers(small_net("ln")) == []


def test_batch_statistics_in_passes_of_several_batches_are_each_batch_by_itself():
    """Groups of 2 normalized by their own statistics inside passes of 16 (bn: all groups at
    once) give each image the logits a pass over its batch of 2 alone gives."""
    net = small_net().eval()
    x, y = torch.randn(40, 3, 5, 5), torch.randint(0, 3, (40,))
    reference = copy.deepcopy(net).train()
    with torch.no_grad():
        alone = torch.cat([reference(x[i:i + 2]) for i in range(0, 40, 2)])
    expected = (alone.argmax(1) == y).sum().item() / 40
    passes = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 40, 16)]  # 16, 16, 8
    assert accuracy(net, passes, batch_statistics=2) == expected
    # a pass that is not a multiple of the batch leaves its tail out, as drop_last does
    assert accuracy(net, [(x[:5], y[:5])], batch_statistics=2) == (alone[:4].argmax(1) == y[:4]).sum().item() / 4


TINY = ["data=synthetic", "data.train_size=384", "data.batch_size=16", "trainer.max_epochs=1", "logger=csv"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    run_train(*TINY, "norm=bn", f"hydra.run.dir={root / 'bn'}")
    run_train(*TINY, "norm=gn", "norm.num_groups=4", f"hydra.run.dir={root / 'gn'}")
    return root


def eval_cli(*args, check=True):
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_a_run_records_precise_bn_and_batch_statistics_for_bn_only(finished):
    bn = json.loads((finished / "bn" / "summary.json").read_text())
    gn = json.loads((finished / "gn" / "summary.json").read_text())
    for key in ("test_acc_batch_stats", "val_acc_precise_bn", "test_acc_precise_bn"):
        assert 0 <= bn[key] <= 1 and key not in gn
    assert bn["precise_bn_batches"] == 24  # 384 training images / 16: every training batch (up to 200)
    assert (finished / "bn" / "checkpoints" / "precise_bn.pt").is_file()


def test_eval_reproduces_the_runs_test_accuracy_and_writes_eval_json(finished):
    for norm in ("bn", "gn"):
        proc = eval_cli(finished / norm)
        out = json.loads((finished / norm / "eval.json").read_text())
        summary = json.loads((finished / norm / "summary.json").read_text())
        assert out["test_acc"] == summary["test_acc"] and "as summary.json records" in proc.stdout
        assert len(proc.stdout.strip().splitlines()) == 1
        if norm == "bn":
            assert out["test_acc_precise_bn"] == summary["test_acc_precise_bn"]
            assert out["test_acc_batch_stats"] == summary["test_acc_batch_stats"]
        else:
            assert "test_acc_precise_bn" not in out


@pytest.mark.slow  # ~24 s: several eval.py processes
def test_eval_refuses_a_corrupt_or_foreign_checkpoint_in_one_line(finished, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    proc = eval_cli(finished / "bn", f"checkpoint={broken}", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: {broken} is not a readable checkpoint (UnpicklingError)"]
    proc = eval_cli(finished / "bn", f"checkpoint={finished / 'gn' / 'checkpoints' / 'last.ckpt'}", check=False)
    assert proc.returncode == 2 and "was written by another configuration" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = eval_cli(tmp_path / "nothing", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'nothing'}: no such run directory"
