"""The harness without the CLI: a norm declared once reaches everything; the epoch history;
the schedule and parameter groups as pure functions; imports point one way."""
import ast
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

import data
import models
import norms
import record
from harness import schema
from record.run import Results
from harness.module import Classifier, param_groups, warmup_cosine, warmup_steps
from results.runs import read_run


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


# ---------------------------------------------------------------------------------------
# A norm is one registry entry: everything that depends on a norm derives from it
# ---------------------------------------------------------------------------------------
class ToyBatchNorm(nn.BatchNorm2d):
    """A batch-statistics norm that none of NormLab's code has heard of."""


@pytest.fixture
def toy_norm():
    spec = norms.register(norms.Norm(
        kind="toy",
        layers={"nchw": lambda num_channels, eps, virtual_batch_size: ToyBatchNorm(num_channels, eps=eps)},
        options={"eps": 1e-5, "virtual_batch_size": None},
        classes=(ToyBatchNorm,),
        batch_statistics=True,
        notation={"virtual_batch_size": lambda k: f"ghost {k}" if k else ""},
        variant_options=("virtual_batch_size",),
        option_types={"virtual_batch_size": int},
    ))
    yield spec
    norms.unregister("toy")


def test_a_norm_registered_in_one_place_reaches_build_models_batch_checks_and_labels(toy_norm, hydra_conf, tmp_path):
    layer = norms.build("toy", 8)
    assert isinstance(layer, ToyBatchNorm) and norms.kind_of(layer) == "toy"
    with pytest.raises(ValueError, match=r"norm 'toy' has no definition for layout 'nlc'; it supports 'nchw'"):
        norms.build("toy", 8, layout="nlc")
    with pytest.raises(ValueError, match=r"norm 'toy' does not take option\(s\) 'momentum'"):
        norms.build("toy", 8, momentum=0.1)

    net = models.build({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 4}, {"kind": "toy"}, 3, 10, 16)
    assert {norms.kind_of(m) for m in net.modules()} - {None} == {"toy"}
    assert param_groups(net, weight_decay_norm=False)[1]["params"]  # its gamma/beta found as norm parameters

    # what a run records and checks: a batch-statistics norm averages over the per-device batch
    assert norms.normalization_batch({"kind": "toy"}, per_device_batch=16, world_size=2) == 16
    assert norms.normalization_batch({"kind": "toy", "virtual_batch_size": 4}, 16, 1) == 4
    assert norms.normalization_batch({"kind": "ln"}, 16, 2) == 1
    cfg = compose("config", overrides=["data=synthetic", "data.batch_size=1"])
    cfg.norm = OmegaConf.create({"kind": "toy"})
    with pytest.raises(ValueError, match=r"norm=toy with data.batch_size=1: .* \(ln, in, gn, none, dyt, derf, evonorm_s0, frn, ln2d, rms\)"):
        schema.validate(cfg)

    # how the report names it, read back from a run directory
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = {"identity": "0000abcd", "norm": "toy", "batch_size": 8, "seed": 0, "model": "r8", "data": "synthetic", "status": "completed",
               "test_acc": 0.5, "config": {"norm": {"kind": "toy", "virtual_batch_size": 4}}}
    (run_dir / record.SUMMARY_FILE).write_text(json.dumps(summary))
    assert read_run(run_dir).label == "toy (ghost 4)"


def test_a_kind_is_declared_once():
    with pytest.raises(ValueError, match="'gn' is already registered"):
        norms.register(norms.Norm(kind="gn", layers={}, options={}, classes=()))


def test_labels_name_the_batch_variants_and_any_option_asked_for():
    assert norms.label({"kind": "bn"}) == "bn"
    assert norms.label({"kind": "bn", "virtual_batch_size": 4, "sync": False}) == "bn (ghost 4)"
    assert norms.label({"kind": "bn", "sync": True}) == "bn (sync)"
    assert norms.label({"kind": "gn", "num_groups": 1}) == "gn"
    assert norms.label({"kind": "gn", "num_groups": 1}, options=["num_groups"]) == "gn (G=1)"
    assert norms.label({"kind": "ln", "eps": 0.1}, options=["eps"]) == "ln (eps=0.1)"


# ---------------------------------------------------------------------------------------
# The epoch history: one row per epoch, whatever the validation schedule
# ---------------------------------------------------------------------------------------
def test_history_has_one_row_per_epoch_when_validation_skips_epochs(hydra_conf, tmp_path):
    cfg = compose("config", overrides=["data=synthetic", "data.batch_size=64"])
    pl.seed_everything(0, verbose=False)
    dm = data.build({**OmegaConf.to_container(cfg.data, resolve=True), "train_size": 256, "val_size": 64, "test_size": 64})
    net = models.build({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 4}, {"kind": "bn"}, 3, 4, 16)
    module = Classifier(net, cfg.optim, 0.05)
    trainer = pl.Trainer(max_epochs=3, check_val_every_n_epoch=2, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[], default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)  # no callback: the module records its own training metrics
    history = module.history
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all({"train/loss", "train/acc", "images_per_second"} <= set(row) for row in history)
    assert [("val/acc" in row) for row in history] == [False, True, False]
    result = Results()
    result.fill(history, {"test/acc": 0.5, "test/loss": 1.0})
    assert result.best_epoch == 2 and result.best_val_acc == history[1]["val/acc"]
    assert result.final_val_acc == history[1]["val/acc"] and result.epochs_completed == 3


# ---------------------------------------------------------------------------------------
# Schedule and parameter groups, without a Trainer
# ---------------------------------------------------------------------------------------
def test_warmup_then_cosine_to_zero():
    warmup, total = 10, 110
    factors = [warmup_cosine(s, warmup, total) for s in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)  # linear warmup
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.5) and factors[110] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # decays monotonically after warmup
    assert warmup_cosine(5, 0, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_steps(0.3, 50, 150) == (15, None) and warmup_steps(1, 25, 100) == (25, None)
    warmup, why = warmup_steps(1, 64, 64)  # one epoch with a one-epoch warmup: capped, and said
    assert warmup == 6 and why == ("optim.warmup_epochs=1 is 64 steps, the whole 64-step run: warming up over its "
                                   "first 6 steps (a tenth) instead")
    assert warmup_steps(0, 64, 64) == (0, None)


def test_parameter_groups_spare_norms_and_biases_only_when_asked():
    net = models.build({"name": "r8", "arch": "cifar_resnet", "depth": 8, "width": 4}, {"kind": "gn", "num_groups": 2},
                       3, 10, 16)
    decay, spared = param_groups(net, weight_decay_norm=False)
    norm_params = {id(p) for m in net.modules() if norms.kind_of(m) for p in m.parameters()}
    assert {id(p) for p in spared["params"]} == norm_params | {id(net.fc.bias)}
    assert spared["weight_decay"] == 0.0 and id(net.fc.weight) in {id(p) for p in decay["params"]}
    decay, spared = param_groups(net, weight_decay_norm=True)
    assert not spared["params"] and len(decay["params"]) == len(list(net.parameters()))


# ---------------------------------------------------------------------------------------
# The architecture: imports point one way, and nothing imports an entry point
# ---------------------------------------------------------------------------------------
ALLOWED = {  # package -> NormLab packages it may import
    "norms": set(),
    "models": {"norms"},
    "data": set(),
    "record": set(),
    "harness": {"norms", "models", "data", "record", "resolvers"},
    "results": {"norms", "models", "data", "record", "resolvers"},
    "bench": {"norms", "models", "data", "harness", "record"},
}
OURS = {"norms", "models", "data", "record", "resolvers", "harness", "results", "bench", "train", "report"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in OURS}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    for path in (REPO / package).rglob("*.py"):
        for name in _imports(path):
            top = name.split(".")[0]
            if top == package:
                continue
            assert top not in ("train", "report"), f"{path.relative_to(REPO)} imports the entry point {name}"
            ok = any(name == a or name.startswith(a + ".") or (a.startswith(name + ".")) for a in ALLOWED[package])
            assert ok, f"{path.relative_to(REPO)} imports {name}; {package}/ may import {sorted(ALLOWED[package])}"


def test_no_test_imports_an_entry_point():
    for path in (REPO / "tests").glob("*.py"):
        assert not {"train", "report"} & {n.split(".")[0] for n in _imports(path)}, path.name


def test_the_step_schedule_drops_by_gamma_at_each_milestone_after_warmup():
    from harness.module import warmup_step_decay

    factors = [warmup_step_decay(s, warmup=2, milestones=[5, 8], gamma=0.1) for s in range(10)]
    assert factors == pytest.approx([0.5, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
