"""Packed runs (hydra/launcher=packed, harness/packed): every member is the run it would be alone.

The exactness tests build each member as a pack builds it and as a solo run builds it, and train
both on the same batches: the initial weights are equal bit for bit, the training losses agree
within 1e-3 relative (vmap may pick other kernels), for every norm and both backbones. The
end-to-end tests run real sweeps through the real CLI."""
import copy
import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from conftest import REPO, clean_env, run_train
from hydra import compose, initialize_config_dir

import norms
from harness import build
from harness.packed import why_alone
from harness.packed.loop import backward, optimize
from harness.packed.member import build_net
from harness.packed.stack import Stack

SMALL_VIT = ["model=vit", "model.hidden_dim=48", "model.num_layers=2", "model.num_heads=3", "model.mlp_dim=96"]
TINY = ["data=synthetic", "data.train_size=256", "data.batch_size=8", "trainer.max_epochs=2", "logger=csv"]


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


def _cases():
    for kind in norms.kinds():
        for model in ("resnet8", "vit"):
            if model == "vit" and not norms.get(kind).layers.get("nlc"):
                continue
            yield kind, model


@pytest.mark.parametrize("kind,model", list(_cases()))
def test_a_member_starts_as_the_solo_run_and_follows_its_losses(hydra_conf, kind, model):
    groups = {"gn": ["norm.num_groups=4"], "evonorm_s0": ["norm.num_groups=4"]}.get(kind, [])
    overrides = ["data=synthetic", f"norm={kind}", *groups, *(SMALL_VIT if model == "vit" else ["model=resnet8"])]
    cfgs = [compose("config", overrides=[*overrides, f"seed={s}"]) for s in range(3)]
    dm = build.data(cfgs[0])
    members, solos = [], []
    for cfg in cfgs:
        members.append(build_net(cfg, dm))
        pl.seed_everything(cfg.seed, workers=True, verbose=False)  # as train.py's run()
        _, solo = build.data_and_net(cfg)
        solos.append(solo)
        for (name, a), b in zip(members[-1].state_dict().items(), solo.state_dict().values()):
            assert torch.equal(a, b), name  # bit for bit
    stack = Stack(members).train()
    for s in solos:
        s.train()
    lrs = [0.05, 0.1, 0.2]  # a pack's members may differ in learning rate
    opts = [torch.optim.SGD(n.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4) for n, lr in zip(members, lrs)]
    solo_opts = [torch.optim.SGD(n.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4) for n, lr in zip(solos, lrs)]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0) for o in opts]
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.randn(3, 4, 3, 16, 16, generator=g)
        y = torch.randint(0, 4, (3, 4), generator=g)
        losses, _ = backward(stack, members, x, y)
        optimize(stack, opts, scheds)
        for k, (net, opt) in enumerate(zip(solos, solo_opts)):
            loss = F.cross_entropy(net(x[k]), y[k])
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert losses[k].item() == pytest.approx(loss.item(), rel=1e-3), (kind, model, k)


def test_a_diverging_member_leaves_the_stack_and_the_others_keep_their_state(hydra_conf):
    """Restacking without a member keeps every other member's weights, buffers and optimizer
    state (momentum) as they were."""
    from harness.packed.loop import Pack

    cfgs = [compose("config", overrides=["data=synthetic", "model=resnet8", f"seed={s}"]) for s in range(3)]
    dm = build.data(cfgs[0])

    class M:  # what Pack reads of a member
        def __init__(self, cfg):
            self.cfg, self.alive, self.net = cfg, True, build_net(cfg, dm)
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=0.1, momentum=0.9)

    members = [M(c) for c in cfgs]
    pack = Pack(members, dm, torch.device("cpu"), autocast=lambda: torch.autocast("cpu", enabled=False))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 4, 3, 16, 16, generator=g), torch.randint(0, 4, (3, 4), generator=g)
    backward(pack.stack, [m.net for m in members], x, y)
    optimize(pack.stack, [m.optimizer for m in members], [torch.optim.lr_scheduler.LambdaLR(m.optimizer, lambda s: 1)
                                                        for m in members])
    before = [copy.deepcopy((m.net.state_dict(), m.optimizer.state_dict())) for m in members]
    members[1].alive = False
    pack.restack()
    assert [m for m in pack.alive] == [members[0], members[2]] and len(pack.stack) == 2
    for k in (0, 2):
        state, opt = before[k]
        assert all(torch.equal(a, b) for a, b in zip(members[k].net.state_dict().values(), state.values()))
        assert all(torch.equal(a["momentum_buffer"], b["momentum_buffer"])
                   for a, b in zip(members[k].optimizer.state_dict()["state"].values(), opt["state"].values()))


@pytest.mark.parametrize("overrides,reason", [
    (["trainer=ddp_cpu"], "several processes"),
    (["norm.sync=true"], "norm.sync"),
    (["debug=limit"], "debug run"),
    (["trainer.precision=16-mixed"], "trainer.precision=16-mixed"),
    (["data.pipeline=dataloader"], "data.pipeline=dataloader"),
    (["trainer.accumulate_grad_batches=2"], "accumulate_grad_batches"),
    (["ckpt_path=/somewhere/last.ckpt"], "ckpt_path"),
])
def test_what_cannot_pack_says_why(hydra_conf, overrides, reason):
    assert reason in why_alone(compose("config", overrides=["data=synthetic", *overrides]))
    assert why_alone(compose("config", overrides=["data=synthetic"])) is None


def _summaries(sweep):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def test_a_packed_sweep_gives_each_member_the_run_it_would_be_alone(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train("-m", *TINY, "seed=0,1,2", "hydra/launcher=packed", "hydra.launcher.n_jobs=1",
                     "hydra.launcher.max_pack=3", f"hydra.sweep.dir={sweep}")
    assert "pack of 3 on cpu" in proc.stdout
    solo = tmp_path / "solo"
    run_train(*TINY, "seed=1", f"hydra.run.dir={solo}")
    packed = _summaries(sweep)
    assert len(packed) == 3 and all(s["status"] == "completed" for s in packed.values())
    alone = json.loads((solo / "summary.json").read_text())
    member = packed[f"bn-resnet20-bs8-s1-{alone['identity']}"]  # the same directory name as alone
    assert member["pack"] == {"size": 3, "members": sorted(packed)} and "pack" not in alone
    assert set(member) - {"pack"} == set(alone)
    for key in ("lr", "num_params", "activation_mib", "normalization_batch_size", "epochs_completed"):
        assert member[key] == alone[key], key
    # trained on the same images in the same order from the same weights: within float noise
    assert member["test_acc"] == pytest.approx(alone["test_acc"], abs=0.02)
    with open(sweep / next(iter(packed)) / "metrics.csv") as f, open(solo / "metrics.csv") as g:
        assert next(csv.reader(f)) == next(csv.reader(g))  # the same columns
    for name in packed:  # Hydra's files, as for any job
        assert (sweep / name / ".hydra" / "config.yaml").is_file()


def test_a_diverging_member_is_recorded_diverged_and_the_others_complete(tmp_path):
    run_train("-m", *TINY, "optim.lr=0.1,100000", "hydra/launcher=packed", "hydra.launcher.n_jobs=1",
              "hydra.launcher.max_pack=2", f"hydra.sweep.dir={tmp_path}")
    by_lr = {s["base_lr"]: s for s in _summaries(tmp_path).values()}
    assert by_lr[100000]["status"] == "diverged" and by_lr[100000]["diverged_at_step"] >= 0
    assert by_lr[0.1]["status"] == "completed" and by_lr[0.1]["test_acc"] > 0.4


def test_a_pack_stopped_by_sigterm_resumes_and_ends_as_a_pack_that_never_stopped(tmp_path):
    args = [*TINY, "trainer.max_epochs=3", "checkpoint.every_n_steps=5", "seed=0,1", "hydra/launcher=packed",
            "hydra.launcher.n_jobs=1", "hydra.launcher.max_pack=2"]
    run_train("-m", *args, f"hydra.sweep.dir={tmp_path / 'whole'}")
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "-m", *args, f"hydra.sweep.dir={stopped}"],
                            cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and len(list(stopped.glob("*/checkpoints/last.ckpt"))) < 2:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, out[-3000:]
    assert {s["status"] for s in _summaries(stopped).values()} == {"interrupted"}
    run_train("-m", *args, f"hydra.sweep.dir={stopped}")
    whole, resumed = _summaries(tmp_path / "whole"), _summaries(stopped)
    assert set(whole) == set(resumed)
    for name, s in resumed.items():
        assert s["status"] == "completed" and s["resumed_from"]["global_step"] > 0
        assert s["test_acc"] == whole[name]["test_acc"], name  # bit-exact resume
        assert [h["train/loss"] for h in s["history"]] == [h["train/loss"] for h in whole[name]["history"]]


def test_cuda_graphs_on_a_cpu_are_refused_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from conftest import one_line_error

    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    proc = run_train(*TINY, "perf.cuda_graphs=true", f"hydra.run.dir={tmp_path}", env=env, check=False)
    assert one_line_error(proc).startswith("error: perf.cuda_graphs=true captures the training step in a CUDA graph: "
                                           "it needs a CUDA GPU")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_train_as_the_eager_step_does(tmp_path):
    """The captured step against the eager one over a short real run, every member of a pack."""
    common = [*TINY, "trainer.max_epochs=1", "seed=0,1", "hydra/launcher=packed", "hydra.launcher.n_jobs=1",
              "trainer.precision=32-true", "diagnostics.enabled=false"]
    run_train("-m", *common, f"hydra.sweep.dir={tmp_path / 'eager'}")
    run_train("-m", *common, "perf.cuda_graphs=true", f"hydra.sweep.dir={tmp_path / 'graphs'}")
    eager, graphs = _summaries(tmp_path / "eager"), _summaries(tmp_path / "graphs")
    for name, s in graphs.items():
        assert s["cuda_graphs"] is True and "cuda_graphs" not in eager[name]
        assert s["history"][0]["train/loss"] == pytest.approx(eager[name]["history"][0]["train/loss"], rel=1e-3)
        assert s["test_acc"] == pytest.approx(eager[name]["test_acc"], abs=0.03)


def test_a_run_started_in_a_pack_goes_on_alone_in_the_packs_loop(tmp_path):
    """A member interrupted in a pack and relaunched with train.py alone resumes from its own
    checkpoint through the pack's loop (a pack of one), and completes."""
    args = [*TINY, "trainer.max_epochs=3", "checkpoint.every_n_steps=5"]
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), "-m", *args, "seed=0", "hydra/launcher=packed",
                             "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={tmp_path}"], cwd=REPO, env=clean_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob("*/checkpoints/last.ckpt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    (run_dir,) = [p.parent.parent for p in tmp_path.glob("*/checkpoints/last.ckpt")]
    run_train(*args, "seed=0", f"hydra.run.dir={run_dir}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"]["global_step"] > 0
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
