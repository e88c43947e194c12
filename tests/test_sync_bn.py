"""Synchronized bn on CPU (gloo): 2 real processes equal single-process bn on the concatenated batch.

nn.SyncBatchNorm refuses CPU tensors, so `norms.build("bn", C, sync=True)` all-reduces the
statistics itself (norms.batch._all_reduce_batch_norm). These tests run it in two processes joined
by a gloo process group and compare outputs, input gradients, parameter gradients (summed
over the processes, as DDP does up to its 1/world scaling) and running statistics with one bn
on the whole batch. Unsynchronized bn in the same processes is compared too: it equals bn on
each process's own part, which is what a DDP run without sync computes.
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import norms

C = 3
# (layout, per-process batch sizes): equal and unequal parts of one 8-sample batch.
CASES = [("nchw", (4, 4)), ("nchw", (3, 5)), ("nlc", (4, 4)), ("nlc", (2, 6))]
each_case = pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{layout}-{a}+{b}" for layout, (a, b) in CASES])


def make_case(layout, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (8, C, 5, 4) if layout == "nchw" else (8, 7, C)
    x = torch.randn(shape, generator=g) * 3 + 1
    upstream = torch.randn(shape, generator=g)  # the gradient arriving from the layers above
    gamma, beta = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    return x, upstream, gamma, beta


BRN = {"r_max": 1.5, "d_max": 0.5}  # limits the batches of these cases clip at


def run_bn(layout, x, upstream, gamma, beta, kind="bn", **options):
    bn = norms.build(kind, C, layout, **options)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    x = x.clone().requires_grad_(True)
    y = bn(x)
    y2 = bn(x * 0.5)  # a second step, so running statistics are compared after two updates
    ((y + y2) * upstream).sum().backward()
    return {"y": y.detach(), "x_grad": x.grad, "w_grad": bn.weight.grad, "b_grad": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = []
        for i, (layout, sizes) in enumerate(CASES):
            x, upstream, gamma, beta = make_case(layout, seed=i)
            part = slice(sum(sizes[:rank]), sum(sizes[: rank + 1]))
            out = {}
            for sync in (True, False):
                r = run_bn(layout, x[part], upstream[part], gamma, beta, sync=sync)
                for key in ("w_grad", "b_grad"):  # DDP's gradient all-reduce (before its 1/world)
                    dist.all_reduce(r[key])
                out[sync] = r
            out["brn"] = run_bn(layout, x[part], upstream[part], gamma, beta, kind="brn", sync=True, **BRN)
            for key in ("w_grad", "b_grad"):
                dist.all_reduce(out["brn"][key])
            results.append(out)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # both ranks done with every collective before either tears gloo down
    finally:
        dist.destroy_process_group()
    # Leave without Python's finalization: in a full suite, a gloo thread torn down during it
    # once aborted a worker ("terminate called without an active exception") after its results
    # were written. The results are on disk; the parent checks the exit code and reads them.
    os._exit(0)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_bn")
    mp.start_processes(_worker, args=(2, str(out / "init"), str(out)), nprocs=2, join=True, start_method="spawn")
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


@each_case
def test_sync_bn_in_two_processes_equals_bn_on_the_concatenated_batch(two_processes, case):
    whole = run_bn(CASES[case][0], *make_case(CASES[case][0], seed=case))
    synced = [two_processes[r][case][True] for r in range(2)]
    for key in ("y", "x_grad"):
        torch.testing.assert_close(torch.cat([s[key] for s in synced]), whole[key], rtol=1e-5, atol=1e-5)
    for s in synced:  # every process holds the same parameter gradients and running statistics
        for key in ("w_grad", "b_grad", "running_mean", "running_var"):
            torch.testing.assert_close(s[key], whole[key], rtol=1e-5, atol=1e-5)


@each_case
def test_sync_brn_in_two_processes_equals_brn_on_the_concatenated_batch(two_processes, case):
    whole = run_bn(CASES[case][0], *make_case(CASES[case][0], seed=case), kind="brn", **BRN)
    synced = [two_processes[r][case]["brn"] for r in range(2)]
    for key in ("y", "x_grad"):
        torch.testing.assert_close(torch.cat([s[key] for s in synced]), whole[key], rtol=1e-5, atol=1e-5)
    for s in synced:
        for key in ("w_grad", "b_grad", "running_mean", "running_var"):
            torch.testing.assert_close(s[key], whole[key], rtol=1e-5, atol=1e-5)
    plain = run_bn(CASES[case][0], *make_case(CASES[case][0], seed=case))  # the correction is at work
    assert not torch.allclose(whole["y"], plain["y"], atol=1e-3)


@each_case
def test_unsynchronized_bn_in_two_processes_is_bn_on_each_part(two_processes, case):
    layout, sizes = CASES[case]
    x, upstream, gamma, beta = make_case(layout, seed=case)
    whole = run_bn(layout, x, upstream, gamma, beta)
    local = [two_processes[r][case][False] for r in range(2)]
    bounds = [0, sizes[0], sum(sizes)]
    for r in range(2):
        part = slice(bounds[r], bounds[r + 1])
        alone = run_bn(layout, x[part], upstream[part], gamma, beta)
        torch.testing.assert_close(local[r]["y"], alone["y"])
        torch.testing.assert_close(local[r]["running_mean"], alone["running_mean"])
    # ... which is not bn over the whole batch, and the two processes' running statistics differ
    assert not torch.allclose(torch.cat([p["y"] for p in local]), whole["y"], atol=1e-3)
    assert not torch.allclose(local[0]["running_var"], local[1]["running_var"], atol=1e-4)


def test_sync_bn_without_a_process_group_is_plain_bn():
    x, upstream, gamma, beta = make_case("nchw", seed=0)
    for key, value in run_bn("nchw", x, upstream, gamma, beta, sync=True).items():
        torch.testing.assert_close(value, run_bn("nchw", x, upstream, gamma, beta)[key])


def test_sync_bn_rejects_ghost_batches_and_non_boolean_values():
    with pytest.raises(ValueError, match="sync=True and virtual_batch_size cannot be combined"):
        norms.build("bn", C, sync=True, virtual_batch_size=2)
    with pytest.raises(ValueError, match="bn sync must be true or false, got 'yes'"):
        norms.build("bn", C, sync="yes")
