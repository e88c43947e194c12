"""The report's conclusions: cells hold one configuration, statistics match independent
computations, ties are marked, selection uses validation only, bad options are one line.

Most run directories here are written by the test from real composed configs with known test
errors (what a finished run leaves), so every number the report prints can be checked; one
real sweep through the CLI checks the same grouping end to end."""
import csv
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, clean_env, run_train
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy import stats as sps

from results import make_report
from results.config import ReportConfig, register


@pytest.fixture(scope="module")
def hydra_conf():
    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


def fake_run(sweep, overrides, seed, test_error, val_error=None, status="completed"):
    """A run directory as a finished run leaves it: summary.json with its resolved config."""
    cfg = OmegaConf.to_container(compose("config", overrides=[*overrides, f"seed={seed}"]), resolve=True)
    run_dir = sweep / f"run{len(list(sweep.glob('run*')))}"
    run_dir.mkdir(parents=True)
    val_error = test_error if val_error is None else val_error
    summary = {"status": status, "norm": cfg["norm"]["kind"], "model": cfg["model"]["name"], "data": cfg["data"]["name"],
               "batch_size": cfg["data"]["batch_size"], "seed": seed, "config": cfg, "best_epoch": 2,
               "history": [{"epoch": 1, "val/acc": 0.5}, {"epoch": 2, "val/acc": 1 - val_error / 100}]}
    if status == "completed":
        summary.update(test_acc=1 - test_error / 100, final_val_acc=1 - val_error / 100, images_per_second=100.0)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def report(sweep, **options):
    cfg = OmegaConf.merge(OmegaConf.structured(ReportConfig),
                          {"runs_dir": str(sweep), "wandb": {"mode": "disabled"}, **options})
    out = make_report(cfg)
    with open(out / "results.csv") as f:
        cells = list(csv.DictReader(f))
    with open(out / "comparisons.csv") as f:
        comparisons = list(csv.DictReader(f))
    return out, cells, comparisons


BASE = ["data=synthetic", "data.batch_size=8"]


# ---------------------------------------------------------------------------------------
# Grouping: configurations are never averaged together
# ---------------------------------------------------------------------------------------
def test_groups_by_every_key_that_varies(hydra_conf, tmp_path):
    errors = {}
    for i, (groups, lr) in enumerate(itertools.product((1, 8), (0.01, 0.5))):
        errors[groups, lr] = 10.0 + 7 * i
        fake_run(tmp_path, [*BASE, "norm=gn", f"norm.num_groups={groups}", f"optim.lr={lr}"], 0, errors[groups, lr])
    _, cells, _ = report(tmp_path)
    assert len(cells) == 4 and all(c["n"] == "1" for c in cells)
    by_series = {c["series"]: float(c["test_error_mean"]) for c in cells}
    assert by_series == {f"gn (G={g}) lr={lr:g}": pytest.approx(e) for (g, lr), e in errors.items()}
    assert {(c["norm.num_groups"], c["optim.lr"]) for c in cells} == {("1", "0.01"), ("1", "0.5"), ("8", "0.01"), ("8", "0.5")}


@pytest.mark.parametrize("overrides,labels", [
    (["model=resnet20", "model=resnet56"], {"resnet20/bn", "resnet56/bn"}),
    (["data=synthetic", "data=fashion_mnist"], {"bn on synthetic", "bn on fashion_mnist"}),
    (["optim=sgd", "optim=adamw"], {"bn SGD", "bn AdamW"}),
])
def test_a_swept_config_group_is_its_own_series_named_briefly(hydra_conf, tmp_path, overrides, labels):
    for i, choice in enumerate(overrides):
        for seed in (0, 1):
            fake_run(tmp_path, ["data=synthetic", choice, "data.batch_size=8"], seed, 20.0 + 10 * i + seed)
    _, cells, _ = report(tmp_path)
    assert {c["series"] for c in cells} == labels
    assert all(c["n"] == "2" for c in cells)  # the two seeds, and only them, are pooled


ZOO_NORMS = ("bn", "gn", "brn", "frn", "evonorm_s0")


def test_every_norm_and_conv_combination_is_its_own_series(hydra_conf, tmp_path):
    """-m norm=bn,gn,brn,frn,evonorm_s0 model.conv=plain,ws: ten configurations, ten series."""
    for i, (norm, conv) in enumerate(itertools.product(ZOO_NORMS, ("plain", "ws"))):
        for seed in (0, 1):
            fake_run(tmp_path, [*BASE, f"norm={norm}", f"model.conv={conv}"], seed, 20.0 + i + seed)
    _, cells, _ = report(tmp_path)
    assert len({c["series"] for c in cells}) == 10 and all(c["n"] == "2" for c in cells)
    assert {(c["norm.kind"], c["model.conv"]) for c in cells} == set(itertools.product(ZOO_NORMS, ("plain", "ws")))


@pytest.mark.slow  # ten real runs and the report, ~2 min; the grouping is tested on written runs in make test
def test_the_zoo_sweep_with_and_without_weight_standardization_reports_ten_series(tmp_path):
    run_train("-m", f"norm={','.join(ZOO_NORMS)}", "model.conv=plain,ws", "data=synthetic", "data.batch_size=8",
              "data.train_size=256", "model=resnet8", "model.width=8", "trainer.max_epochs=1", "logger=csv",
              f"hydra.sweep.dir={tmp_path}")
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path), "wandb.mode=disabled"], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "report" / "results.csv") as f:
        cells = list(csv.DictReader(f))
    assert {(c["norm.kind"], c["model.conv"]) for c in cells} == set(itertools.product(ZOO_NORMS, ("plain", "ws")))
    assert len({c["series"] for c in cells}) == 10


def test_seeds_of_one_configuration_pool_and_cells_report_their_interval(hydra_conf, tmp_path):
    values = {"bn": [12.0, 14.5, 13.1], "gn": [20.2, 23.9, 21.7]}
    for norm, errs in values.items():
        for seed, e in enumerate(errs):
            fake_run(tmp_path, [*BASE, f"norm={norm}", "norm.num_groups=4" if norm == "gn" else "norm.sync=false"], seed, e)
    out, cells, comparisons = report(tmp_path)
    for c in cells:
        x = np.array(values[c["series"]])
        half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        assert float(c["test_error_mean"]) == pytest.approx(x.mean(), abs=1e-3)
        assert float(c["test_error_ci_low"]) == pytest.approx(x.mean() - half, abs=1e-3)
        assert float(c["test_error_ci_high"]) == pytest.approx(x.mean() + half, abs=1e-3)
    # gn vs the best (bn): Welch's difference and interval, by the textbook formulas
    (row,) = [r for r in comparisons if r["kind"] == "vs best"]
    a, b = np.array(values["gn"]), np.array(values["bn"])
    va, vb = a.var(ddof=1) / 3, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    diff = a.mean() - b.mean()
    p = 2 * sps.t.sf(abs(diff) / math.sqrt(va + vb), df)
    assert (row["a"], row["b"]) == ("gn", "bn")
    assert float(row["diff_mean"]) == pytest.approx(diff, abs=1e-4)
    assert float(row["diff_ci_low"]) == pytest.approx(diff - half, abs=1e-4)
    assert float(row["diff_ci_high"]) == pytest.approx(diff + half, abs=1e-4)
    assert float(row["p_value"]) == pytest.approx(p, rel=1e-4)
    assert float(row["p_holm"]) == pytest.approx(p, rel=1e-4) and row["significant"] == "True"  # one comparison
    findings = (out / "results.md").read_text().split("## Results")[0]
    assert f"bn has the lowest mean test error, {b.mean():.1f} % (95% CI {b.mean() - sps.t.ppf(0.975, 2) * b.std(ddof=1) / math.sqrt(3):.1f}" in findings
    assert f"gn by {diff:.1f} points (95% CI {diff - half:.1f} to {diff + half:.1f}, Holm p = {p:.3f}, n = 3 and 3)" in findings


def test_holm_over_the_table_and_ties_marked_not_ranked(hydra_conf, tmp_path):
    values = {"bn": [10.0, 10.4, 9.8], "ln": [10.3, 9.9, 10.6], "in": [30.0, 31.0, 29.5], "gn": [10.1, 11.5, 9.7]}
    for norm, errs in values.items():
        for seed, e in enumerate(errs):
            fake_run(tmp_path, [*BASE, f"norm={norm}", *(["norm.num_groups=4"] if norm == "gn" else [])], seed, e)
    out, cells, comparisons = report(tmp_path)
    best = min(values, key=lambda n: np.mean(values[n]))
    raw = {r["a"]: float(r["p_value"]) for r in comparisons if r["kind"] == "vs best"}
    assert set(raw) == set(values) - {best}
    for r in comparisons:  # Holm by hand: sorted ascending, multiplied by (m - rank), running maximum
        ordered = sorted(raw.values())
        k = ordered.index(float(r["p_value"]))
        expected = min(1.0, max((len(ordered) - i) * ordered[i] for i in range(k + 1)))
        assert float(r["p_holm"]) == pytest.approx(expected, rel=1e-5)
    marks = {c["series"]: (c["best_at_batch_size"], c["tied_with_best"]) for c in cells}
    assert marks[best] == ("True", "False") and marks["in"] == ("False", "False")
    assert all(marks[n] == ("False", "True") for n in values if n not in (best, "in"))
    table = (out / "results.md").read_text()
    assert table.count("★") >= 2 and "≈" in table  # the legend and the cells


def test_one_seed_is_never_ranked(hydra_conf, tmp_path):
    for norm, e in (("bn", 10.0), ("ln", 30.0)):
        fake_run(tmp_path, [*BASE, f"norm={norm}"], 0, e)
    out, cells, comparisons = report(tmp_path)
    assert [c["tied_with_best"] for c in cells if c["series"] == "ln"] == ["True"]
    assert comparisons[0]["p_value"] == "" and comparisons[0]["significant"] == "False"
    assert "With n = 1 per cell no difference from ln can be tested" in (out / "results.md").read_text()


def test_batch_effect_compares_the_smallest_and_largest_batch(hydra_conf, tmp_path):
    small, large = [30.0, 33.0, 31.0], [12.0, 12.5, 11.0]
    for bs, errs in ((2, small), (32, large)):
        for seed, e in enumerate(errs):
            fake_run(tmp_path, ["data=synthetic", "norm=bn", f"data.batch_size={bs}"], seed, e)
    out, _, comparisons = report(tmp_path)
    (effect,) = [r for r in comparisons if r["kind"] == "column effect"]
    welch = sps.ttest_ind(small, large, equal_var=False)
    assert effect["column"] == "2->32" and float(effect["diff_mean"]) == pytest.approx(np.mean(small) - np.mean(large))
    assert float(effect["p_value"]) == pytest.approx(welch.pvalue, rel=1e-5)
    assert "bn: batch 2 vs batch 32: +" in (out / "results.md").read_text()


def test_bootstrap_and_permutation_options(hydra_conf, tmp_path):
    for norm, errs in (("bn", [10.0, 11.0, 12.0]), ("ln", [20.0, 21.0, 22.0])):
        for seed, e in enumerate(errs):
            fake_run(tmp_path, [*BASE, f"norm={norm}"], seed, e)
    _, cells, comparisons = report(tmp_path, ci="bootstrap", test="permutation")
    bn = next(c for c in cells if c["series"] == "bn")
    assert 10.0 <= float(bn["test_error_ci_low"]) < 11.0 < float(bn["test_error_ci_high"]) <= 12.0
    # exact permutation: 20 ways to split 6 runs 3/3, the observed one and its mirror are the extremes
    assert float(comparisons[0]["p_value"]) == pytest.approx(0.1) and comparisons[0]["test"] == "permutation"


# ---------------------------------------------------------------------------------------
# select: tuned on validation, reported on test
# ---------------------------------------------------------------------------------------
def test_select_picks_by_validation_never_by_test(hydra_conf, tmp_path):
    for seed in (0, 1):  # lr 0.5 has the best test error, lr 0.01 the best validation error
        fake_run(tmp_path, [*BASE, "norm=bn", "optim.lr=0.5"], seed, test_error=5.0 + seed, val_error=30.0)
        fake_run(tmp_path, [*BASE, "norm=bn", "optim.lr=0.01"], seed, test_error=20.0 + seed, val_error=10.0)
        fake_run(tmp_path, [*BASE, "norm=bn", "optim.lr=0.1"], seed, test_error=25.0, status="failed")
    out, cells, _ = report(tmp_path, select="optim.lr")
    (cell,) = cells
    assert cell["series"] == "bn" and float(cell["test_error_mean"]) == pytest.approx(20.5)
    assert cell["selected"] == "lr=0.01=2" and cell["problems"] == "failed=2"
    assert "chosen: lr=0.01 ×2" in (out / "results.md").read_text()


# ---------------------------------------------------------------------------------------
# Layout options and bad input
# ---------------------------------------------------------------------------------------
def test_facets_make_one_table_each(hydra_conf, tmp_path):
    for model in ("resnet20", "resnet56"):
        for norm in ("bn", "ln"):
            fake_run(tmp_path, ["data=synthetic", f"model={model}", f"norm={norm}", "data.batch_size=8"], 0, 10.0)
    out, cells, _ = report(tmp_path, facet="model", rows="norm")
    assert {(c["facet"], c["series"]) for c in cells} == {(f"model.name={m}", n) for m in ("resnet20", "resnet56")
                                                          for n in ("bn", "ln")}
    assert (out / "convergence.png").is_file() and (out / "convergence_2.png").is_file()


@pytest.mark.parametrize("option,message", [
    ({"select": "optim.lrr"}, r"select=optim.lrr: no run has this config key; keys that vary among these runs: norm.kind"),
    ({"facet": "model"}, r"facet=model.name: every run has the same value \('resnet20'\); keys that vary"),
    ({"baseline": "gn"}, r"baseline=gn: no single series is named so; series: bn, ln"),
    ({"ci": "normal"}, r"ci=normal: valid values are t, bootstrap"),
])
def test_bad_options_name_what_was_typed_and_what_is_there(hydra_conf, tmp_path, option, message):
    for norm in ("bn", "ln"):
        fake_run(tmp_path, [*BASE, f"norm={norm}"], 0, 10.0)
    with pytest.raises(ValueError, match=message):
        report(tmp_path, **option)


def test_cli_bad_option_is_one_line_and_no_argument_prints_usage(tmp_path):
    (tmp_path / "empty").mkdir()
    env = clean_env()
    env.pop("HYDRA_FULL_ERROR")
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path / "empty")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: no runs (summary.json or .hydra/config.yaml) found under {tmp_path / 'empty'}"]
    proc = subprocess.run([sys.executable, str(REPO / "report.py")], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "python report.py runs/quick" in proc.stderr


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
    assert "summary.json is unreadable" in (out / "index.html").read_text()


def test_cost_table_carries_spreads_and_timing_runs_every_cell_in_turns(hydra_conf, tmp_path):
    for norm in ("bn", "gn"):
        for seed, e in enumerate((10.0, 12.0)):
            fake_run(tmp_path, [*BASE, f"norm={norm}", "model.width=4", *(["norm.num_groups=2"] if norm == "gn" else [])],
                     seed, e)
    out, _, _ = report(tmp_path, timing=True, timing_rounds=2)
    cost = (out / "results.md").read_text().split("#### Cost")[1]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in cost.splitlines()
            if line.startswith("| bn") or line.startswith("| gn")}
    half = sps.t.ppf(0.975, 1) * np.std([10.0, 12.0], ddof=1) / math.sqrt(2)
    assert rows["bn"][1] == f"11.00 [{11 - half:.2f}, {11 + half:.2f}]"  # test error with its CI
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
    assert (out / "batch_noise.png").is_file() and (out / "input_drift.png").is_file()
    assert 'id="batch_noise"' in (out / "index.html").read_text()


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
