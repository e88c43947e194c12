"""The report end to end: real sweeps through the CLI, malformed and foreign records, the cost,
code and Why sections, the W&B workspace."""
import csv
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, clean_env, run_train
from fake_runs import BASE, fake_run, hydra_conf, report  # noqa: F401 - hydra_conf is a fixture
from hydra import compose
from omegaconf import OmegaConf
from scipy import stats as sps
from test_stats import power_by_integral


# ---------------------------------------------------------------------------------------
# End to end: the sweep a new user launches
# ---------------------------------------------------------------------------------------
@pytest.mark.slow  # ~30 s of real runs; the grouping it checks is tested on written runs in make test
def test_real_sweep_over_group_count_and_lr_gives_four_series(tmp_path):
    run_train("-m", "norm=gn", "norm.num_groups=1,8", "optim.lr=0.01,0.5", "data=synthetic", "data.batch_size=8",
              "data.train_size=256", "trainer.max_epochs=1", "logger=csv", f"hydra.sweep.dir={tmp_path}")
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path), "wandb.mode=disabled",
                           "select=optim.lr", "rows=norm.num_groups"], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path), "wandb.mode=disabled"], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "report" / "results.csv") as f:
        cells = list(csv.DictReader(f))
    assert sorted(c["series"] for c in cells) == ["gn (G=1) lr=0.01", "gn (G=1) lr=0.5", "gn (G=8) lr=0.01",
                                                   "gn (G=8) lr=0.5"]
    assert all(c["n"] == "1" for c in cells)
    summaries = {(s["config"]["norm"]["num_groups"], s["config"]["optim"]["lr"]): s
                 for s in (json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json"))}
    for c in cells:
        s = summaries[int(c["norm.num_groups"]), float(c["optim.lr"])]
        assert float(c["test_error_mean"]) == pytest.approx(100 * (1 - s["test_acc"]), abs=1e-3)
    with open(tmp_path / "report" / "runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


def test_a_malformed_summary_is_shown_as_such_and_the_rest_reported(hydra_conf, tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path, [*BASE, "norm=bn"], seed, 10.0 + seed)
    broken = fake_run(tmp_path, [*BASE, "norm=bn"], 2, 12.0)
    (broken / ".hydra").mkdir()
    (broken / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(compose("config", overrides=[*BASE, "seed=2"])))
    (broken / "summary.json").write_text('{"status": "completed", "test_a')
    orphan = fake_run(tmp_path, [*BASE, "norm=bn"], 3, 12.0)
    (orphan / "summary.json").write_text("[]")  # valid JSON, not a summary, and no Hydra config
    out, cells, _ = report(tmp_path)
    (cell,) = cells
    assert cell["n"] == "2" and float(cell["test_error_mean"]) == pytest.approx(10.5)
    assert cell["problems"] == "malformed=1"
    assert "summary.json does not read" in (out / "index.html").read_text()


def test_cost_table_carries_spreads_and_timing_runs_every_cell_in_turns(hydra_conf, tmp_path):
    for norm in ("bn", "gn"):
        for seed, e in enumerate((10.0, 12.0)):
            fake_run(tmp_path, [*BASE, f"norm={norm}", "model.width=4", *(["norm.num_groups=2"] if norm == "gn" else [])],
                     seed, e)
    out, _, _ = report(tmp_path, timing=True, timing_rounds=2)
    cost = (out / "results.md").read_text().split("#### Cost")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in cost.splitlines()
            if line.startswith("| bn") or line.startswith("| gn")}
    half = sps.t.ppf(0.975, 1) * np.std([10.0, 12.0], ddof=1) / math.sqrt(2)
    assert rows["bn"][1] == f"11.00 [{max(11 - half, 0):.2f}, {11 + half:.2f}]"  # test error with its CI in [0, 100]
    ms, ratio = rows["gn"][3], rows["gn"][4]
    assert float(ms.split()[0]) > 0 and "–" in ms  # median ms/step (min–max over rounds)
    low, high = (float(v) for v in ratio.split("(")[1].rstrip(")").split("–"))
    assert low <= float(ratio.split()[0]) <= high and rows["bn"][4].startswith("1.00")


def test_cells_that_pool_runs_of_different_code_are_flagged(hydra_conf, tmp_path):
    dirs = [fake_run(tmp_path, [*BASE, "norm=bn"], seed, 10.0 + seed) for seed in (0, 1)]
    for run_dir, commit in zip(dirs, ("a" * 40, "b" * 40), strict=True):
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["code"] = {"commit": commit}
        (run_dir / "summary.json").write_text(json.dumps(summary))
    out, _, _ = report(tmp_path)
    assert "Caution: 1 cell(s) pool runs trained by different commits of NormLab (bn at 8)" in (out / "results.md").read_text()


def test_why_section_pairs_precise_bn_with_the_same_runs_and_draws_noise_and_drift(hydra_conf, tmp_path):
    # bn at batch 2 and 32 over 3 seeds: PreciseBN lowers each run's error by 2 + seed/10 points
    for batch, seed in itertools.product((2, 32), range(3)):
        error = 30.0 + seed if batch == 2 else 20.0 + seed
        run = fake_run(tmp_path, ["data=synthetic", f"data.batch_size={batch}"], seed, error)
        summary = json.loads((run / "summary.json").read_text())
        noise = 0.8 / math.sqrt(batch)
        diag = {f"layer{i}": {"batch_mean_noise": noise * (1 + i), "input_drift": 0.1} for i in range(3)}
        summary.update(test_acc_precise_bn=1 - (error - 2 - seed / 10) / 100, test_acc_batch_stats=1 - (error + 5) / 100,
                       example_weight=0.3, val_acc_example_weight=0.5, test_acc_example_weight=1 - (error - 1) / 100,
                       norm_diagnostics=diag)
        for row in summary["history"]:
            row["norm_diagnostics"] = diag
        (run / "summary.json").write_text(json.dumps(summary))
    gn = fake_run(tmp_path, ["data=synthetic", "norm=gn", "data.batch_size=2"], 0, 25.0)  # no statistics: no rows
    assert gn.is_dir()
    out, _, _ = report(tmp_path)
    md = (out / "results.md").read_text()
    diffs = [-(2 + s / 10) for s in range(3)]
    half = sps.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / math.sqrt(3)
    line = next(x for x in md.splitlines() if x.startswith("- Why, bn at batch 2"))
    assert (f"changes test error by {np.mean(diffs):+.1f} points, 95% CI {np.mean(diffs) - half:+.1f} to "
            f"{np.mean(diffs) + half:+.1f}, n = 3 (paired by run) of its +10.0-point gap to batch 32") in line
    assert "its own statistics changes it by +5.0 points" in line
    assert "| bn: PreciseBN |" in md and "gn: PreciseBN" not in md
    # inference example weighing: one point below each run's error, the mean over seeds with its interval
    half = sps.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (f"| bn with example weighing (α chosen on validation) | 30.00 [{30 - half:.2f}, {30 + half:.2f}] (n=3) | "
            f"20.00 [{20 - half:.2f}, {20 + half:.2f}] (n=3) |") in md
    assert "gn with example weighing" not in md
    assert (out / "batch_noise.png").is_file() and (out / "input_drift.png").is_file()
    assert 'id="batch_noise"' in (out / "index.html").read_text()


# ---------------------------------------------------------------------------------------
# Seeds to plan, aggregates across columns, contrasts through the CLI
# ---------------------------------------------------------------------------------------
MULTIRUN = """hydra:
  sweeper:
    params:
      seed: 0,1,2
  overrides:
    hydra:
    - hydra.mode=MULTIRUN
    task:
    - norm=bn,ln,in
    - data=synthetic
"""


def test_plan_writes_the_seeds_an_undecided_comparison_needs_and_the_command_that_adds_them(hydra_conf, tmp_path,
                                                                                             capsys):
    values = {"bn": [10.0, 11.0, 12.0], "ln": [11.0, 12.5, 13.0], "in": [30.0, 31.0, 29.5], "gn": [10.5, 11.2, 12.3]}
    for norm, errs in values.items():
        for seed, e in enumerate(errs):
            fake_run(tmp_path, [*BASE, f"norm={norm}"], seed, e)
    (tmp_path / "multirun.yaml").write_text(MULTIRUN)
    out, _, comparisons = report(tmp_path, plan=True)
    verdicts = {r["a"]: r["verdict"] for r in comparisons}
    assert verdicts == {"ln": "not distinguishable", "gn": "not distinguishable", "in": "higher"}
    with open(out / "plan.csv") as f:
        reader = csv.DictReader(f)
        plan = {r["series"]: r for r in reader}  # the decided comparison needs nothing
    assert reader.fieldnames[:7] == ["at", "series", "against", "n_now", "n_needed", "difference", "sd"]
    assert set(plan) == {"ln", "gn"}
    raw = sorted(sps.ttest_ind(values[n], values["bn"], equal_var=False).pvalue for n in ("ln", "gn", "in"))
    for norm in ("ln", "gn"):
        a, b = values[norm], values["bn"]
        diff, sa, sb = np.mean(a) - np.mean(b), np.std(a, ddof=1), np.std(b, ddof=1)
        p = sps.ttest_ind(a, b, equal_var=False).pvalue
        alpha = 0.05 / (3 - raw.index(p))  # Holm's step-down compares the k-th smallest of 3 p-values with 0.05 / (3 - k)
        needed = next(n for n in range(2, 1000) if power_by_integral(diff, sa, sb, n, n, alpha) >= 0.8)
        assert float(plan[norm].pop("alpha")) == pytest.approx(alpha, rel=1e-5)
        assert plan[norm] == {"facet": "", "at": "batch 8", "series": norm, "against": "bn (vs best)", "n_now": "3",
                              "n_needed": str(needed), "difference": f"{diff:.4f}",
                              "sd": f"{math.sqrt((sa**2 + sb**2) / 2):.4f}"}
        assert alpha == pytest.approx(0.025 if norm == "ln" else 0.05)  # in < ln < gn
    most = max(int(r["n_needed"]) for r in plan.values())
    command = (f"python train.py -m norm=bn,ln,in data=synthetic seed={','.join(map(str, range(most)))} "
               f"hydra.sweep.dir={tmp_path}")
    assert command in capsys.readouterr().out and command in (out / "results.md").read_text()
    report(tmp_path)
    assert not (out / "plan.csv").exists()  # no stale plan beside a report that did not make one


def test_aggregates_count_failures_and_match_an_independent_stratified_bootstrap(hydra_conf, tmp_path):
    from results.aggregate import profile
    from results.analysis import analyse
    from results.runs import read_runs
    from results.series import make_layout, tables

    rng = np.random.default_rng(3)
    values = {(norm, batch): list(np.round(rng.normal(mu, 1.0, size=5), 2))
              for norm, batch, mu in (("bn", 2, 21.0), ("bn", 32, 19.0), ("gn", 2, 20.0), ("gn", 32, 22.0))}
    values["gn", 32] = values["gn", 32][:4]
    for (norm, batch), errs in values.items():
        for seed, e in enumerate(errs):
            fake_run(tmp_path, ["data=synthetic", f"data.batch_size={batch}", f"norm={norm}"], seed, e)
    fake_run(tmp_path, ["data=synthetic", "data.batch_size=32", "norm=gn"], 4, 0.0, status="diverged")
    out, _, _ = report(tmp_path)
    with open(out / "aggregate.csv") as f:
        reader = csv.DictReader(f)
        agg = {r["series"]: r for r in reader}
    assert reader.fieldnames[:6] == ["series", "runs", "failed", "iqm", "iqm_ci_low", "iqm_ci_high"]
    assert [(agg[n]["runs"], agg[n]["failed"], agg[n]["failure_rate"]) for n in ("bn", "gn")] == [
        ("10", "0", "0.0000"), ("10", "1", "0.1000")]  # the diverged run is counted, not dropped
    boot_rng = np.random.default_rng(12345)
    for norm in ("bn", "gn"):
        cells = [np.array(values[norm, batch]) for batch in (2, 32)]
        pooled = np.sort(np.concatenate(cells))
        k = pooled.size // 4  # interquartile mean: a quarter cut at each end
        resampled = np.sort(np.concatenate([c[boot_rng.integers(0, c.size, (40000, c.size))] for c in cells], axis=1))
        low, high = np.percentile(resampled[:, k:pooled.size - k].mean(axis=1), [2.5, 97.5])
        assert float(agg[norm]["iqm"]) == pytest.approx(pooled[k:pooled.size - k].mean(), abs=1e-4)
        assert float(agg[norm]["iqm_ci_low"]) == pytest.approx(low, abs=0.06)
        assert float(agg[norm]["iqm_ci_high"]) == pytest.approx(high, abs=0.06)
    with open(out / "improvement.csv") as f:
        (imp,) = list(csv.DictReader(f))
    by_column = [sps.mannwhitneyu(values["gn", b], values["bn", b]).statistic / (len(values["gn", b]) * 5)
                 for b in (2, 32)]  # P(bn < gn), ties one half
    assert (imp["series"], imp["against"]) == ("bn", "gn")
    assert float(imp["probability"]) == pytest.approx(np.mean(by_column), abs=1e-4)
    assert float(imp["ci_low"]) <= float(imp["probability"]) <= float(imp["ci_high"])
    runs = read_runs(tmp_path, skip=out)
    (table,) = tables(runs, make_layout(runs))
    fractions = profile(analyse(table), np.array([100.0]))
    assert fractions["bn"][0][0] == 1.0 and fractions["gn"][0][0] == pytest.approx((5 / 5 + 4 / 5) / 2)
    assert (out / "performance_profile.png").is_file() and "## Across columns" in (out / "results.md").read_text()


def test_contrasts_typed_on_the_command_line(hydra_conf, tmp_path):
    for norm, batch, errs in (("bn", 2, [20.0, 21.0, 22.0]), ("bn", 32, [15.0, 15.5, 16.5]),
                              ("gn", 2, [14.0, 14.5, 15.5]), ("gn", 32, [17.0, 18.0, 18.5])):
        for seed, e in enumerate(errs):
            fake_run(tmp_path, ["data=synthetic", f"data.batch_size={batch}", f"norm={norm}"], seed, e)
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path), "wandb.mode=disabled",
                           "contrasts=gn@2 vs bn@32, gn@32 vs bn@2"], cwd=REPO, env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "report" / "comparisons.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "contrast"]
    assert [(r["a"], r["column"], r["b"]) for r in rows] == [("gn", "2 vs 32", "bn"), ("gn", "32 vs 2", "bn")]
    assert "Contrast gn@32 vs bn@2: gn batch 32 minus bn batch 2 = −" in proc.stdout


def test_the_workspace_command_prints_its_panels_and_saving_needs_a_login(tmp_path, monkeypatch, capsys):
    from results import workspace

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert workspace.main(["--entity", "someone", "--experiment", "quick"]) == 0
    out = capsys.readouterr().out
    assert "Norm vs batch size: test accuracy vs batch size" in out and "not saved" in out
    assert workspace.main(["--entity", "someone", "--save"]) == 2
    assert capsys.readouterr().err.strip() == ("error: saving a workspace needs a W&B login: run `wandb login` "
                                               "(or set WANDB_API_KEY)")
    filters = json.dumps(workspace.spec(workspace.norm_vs_batch_workspace("someone", "normlab", "quick")))
    assert "quick" in filters and "config:batch_size.value" in filters


def test_saving_a_workspace_without_a_network_is_one_line_and_never_hangs(tmp_path):
    """With a key and no reachable server, or a server that never answers, --save ends in one
    line within its timeout (it once printed a 35-line traceback and hung until killed)."""
    import socket

    env = clean_env(WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567", HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "results.workspace", "--entity", "someone", "--save", "--timeout", "5"]
    closed = subprocess.run(cmd, cwd=REPO, env={**env, "WANDB_BASE_URL": "http://127.0.0.1:9"}, capture_output=True,
                            text=True, timeout=120)
    assert closed.returncode == 2 and closed.stderr.strip().splitlines() == [
        "error: 127.0.0.1 is not reachable; the workspace was not saved"]
    with socket.socket() as silent:  # accepts connections, answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        mute = subprocess.run(cmd, cwd=REPO, env={**env, "WANDB_BASE_URL": f"http://127.0.0.1:{port}"},
                              capture_output=True, text=True, timeout=120)
    lines = mute.stderr.strip().splitlines()
    assert mute.returncode == 2 and "Traceback" not in mute.stderr, mute.stderr[-2000:]
    assert lines[-1].startswith("error: the workspace was not saved ("), lines
    assert "0123456789abcdef0123456789abcdef01234567" not in mute.stdout + mute.stderr
