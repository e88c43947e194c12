"""Diagnostics recorded during training: batch-statistics noise, input drift, signal scale."""
import csv
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import run_train

import data as datasets
import models
from harness.diagnostics import METRICS, NormDiagnostics
from harness.evaluation import precise_bn


def measure(net, batches) -> dict:
    """The callback's per-layer means over `batches`, every batch measured."""
    diag = NormDiagnostics(every_n_steps=1)
    module = SimpleNamespace(net=net, device=torch.device("cpu"))
    diag.setup(None, module, "fit")
    net.train()
    with torch.no_grad():
        for x in batches:
            diag.stats.start()
            net(x)
            diag.stats.stop()
    assert diag.stats.active is False and all(not m._forward_pre_hooks for m in net.modules())  # no hooks between steps
    means = diag.stats.epoch_means()
    diag.teardown(None, module, "fit")
    return means


def test_batch_statistics_are_noisier_at_batch_2_than_at_batch_32():
    dm = datasets.build({"name": "synthetic", "batch_size": 32})
    x = torch.cat([dm.preprocess(b, train=False)[0] for b in dm.eval_loader("train", 256)])
    torch.manual_seed(0)
    net = models.build({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 8}, {"kind": "bn"}, 3, 4, 16)
    # running statistics = the population's, so the noise is the batch's alone
    net, _ = precise_bn(net, [(x[i:i + 64], None) for i in range(0, len(x), 64)])
    for layer in net.modules():
        if hasattr(layer, "momentum") and getattr(layer, "running_mean", None) is not None:
            layer.momentum = 0.0  # measuring must not move them
    small = measure(net, [x[i:i + 2] for i in range(0, 128, 2)])
    large = measure(net, [x[i:i + 32] for i in range(0, 768, 32)])
    for name in small:
        assert small[name]["batch_mean_noise"] > 2 * large[name]["batch_mean_noise"], name
        assert small[name]["batch_var_noise"] > 2 * large[name]["batch_var_noise"], name
    # about 1/sqrt(batch): 16 times fewer samples, about 4 times the noise of the mean
    ratio = sum(small[n]["batch_mean_noise"] / large[n]["batch_mean_noise"] for n in small) / len(small)
    assert 2.5 < ratio < 6, ratio


def test_input_drift_is_zero_for_an_unchanging_input_and_grows_with_the_shift():
    net = torch.nn.Sequential(torch.nn.Identity())
    net[0] = models.norm_factory({"kind": "none"})(3)
    x = torch.randn(16, 3, 4, 4)
    assert measure(net, [x, x])["0"]["input_drift"] == 0
    shifted = measure(net, [x, x + x.std((0, 2, 3), keepdim=True)])["0"]["input_drift"]  # every mean moved one std
    assert shifted == pytest.approx(1.0, abs=0.05)
    assert set(measure(net, [x])["0"]) == {"input_std"}  # no running statistics, no parameters: no noise, no grads


SYNTH = ["data=synthetic", "data.train_size=384", "data.batch_size=16", "trainer.max_epochs=2", "logger=csv",
         "eval.precise_bn_batches=0"]


def test_diagnostics_do_not_change_training_and_reach_the_summary_history_and_csv(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    run_train(*SYNTH, "diagnostics.every_n_steps=1", f"hydra.run.dir={on}")
    run_train(*SYNTH, "diagnostics.enabled=false", f"hydra.run.dir={off}")
    a = torch.load(on / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    b = torch.load(off / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []

    summary = json.loads((on / "summary.json").read_text())
    diag = summary["norm_diagnostics"]
    assert list(diag)[0] == "stem.1" and len(diag) == 21  # ResNet-20: the stem, 2 per block x 9, 2 shortcuts
    assert set(diag["stem.1"]) == set(METRICS) - {"saturation"}  # dyt's and derf's only
    assert all(row["norm_diagnostics"] for row in summary["history"]) and len(summary["history"]) == 2
    assert json.loads((off / "summary.json").read_text())["norm_diagnostics"] is None
    with open(on / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("diag/stem.1/input_drift")]
    assert len(rows) == 2
