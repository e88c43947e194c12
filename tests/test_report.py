"""The report's conclusions: cells hold one configuration, statistics match independent
computations, ties are marked, selection uses validation only, bad options are one line.

The run directories here are written by the test from real composed configs with known test
errors (tests/fake_runs.py), so every number the report prints can be checked."""
import csv
import itertools
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, clean_env, one_line_error, run_train
from fake_runs import BASE, fake_run, hydra_conf, report  # noqa: F401 - hydra_conf is a fixture
from scipy import optimize
from scipy import stats as sps
from test_stats import power_by_integral


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
    assert (f"gn +{diff:.1f} points (higher: Holm-adjusted 95% CI {diff - half:.1f} to {diff + half:.1f}, "
            f"Holm p = {p:.3f}, n = 3 and 3)") in findings
    assert row["verdict"] == "higher" and float(row["diff_ci_holm_low"]) == pytest.approx(diff - half, abs=1e-4)


def test_holm_over_the_table_and_undecided_marked_not_ranked(hydra_conf, tmp_path):
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
    assert {c["series"] for c in cells if c["best_at_batch_size"] == "True"} == {best}
    verdicts = {c["series"]: c["verdict_vs_best"] for c in cells}
    assert verdicts[best] == "best" and verdicts["in"] == "higher"
    assert all(verdicts[n] == "not distinguishable" for n in values if n not in (best, "in"))
    table = (out / "results.md").read_text()
    assert table.count("★") >= 2 and "? not distinguishable" in table  # the legend and the cells
    assert not re.search(r"\btie", table) and not re.search(r"\btie", (out / "index.html").read_text())


def test_one_seed_is_never_ranked(hydra_conf, tmp_path):
    for norm, e in (("bn", 10.0), ("ln", 30.0)):
        fake_run(tmp_path, [*BASE, f"norm={norm}"], 0, e)
    out, cells, comparisons = report(tmp_path)
    assert [c["verdict_vs_best"] for c in cells if c["series"] == "ln"] == ["untestable"]
    assert comparisons[0]["p_value"] == "" and comparisons[0]["significant"] == "False"
    assert comparisons[0]["verdict"] == "untestable"
    md = (out / "results.md").read_text()
    assert "ln +20.0 points (untestable with n = 1 and 1 (a cell needs two runs))" in md
    assert "| ln | 30.00 (n=1, no CI) untestable |" in md and "≈ |" not in md


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
# Verdicts: the words say what the tests showed
# ---------------------------------------------------------------------------------------
def welch(a, b, confidence=0.95):
    a, b = np.asarray(a), np.asarray(b)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    diff, se = a.mean() - b.mean(), math.sqrt(va + vb)
    half = sps.t.ppf((1 + confidence) / 2, df) * se
    return diff, diff - half, diff + half, 2 * sps.t.sf(abs(diff) / se, df), se, df


def runs_of(tmp_path, values, batch=8):
    for norm, errs in values.items():
        for seed, e in enumerate(errs):
            fake_run(tmp_path, ["data=synthetic", f"data.batch_size={batch}", f"norm={norm}"], seed, e)


def test_a_worse_but_undecided_series_is_not_distinguishable_never_a_tie(hydra_conf, tmp_path):
    values = {"bn": [10.0, 11.0, 12.0], "ln": [11.0, 12.5, 13.0]}  # ln about 1.2 sd worse, 3 seeds
    runs_of(tmp_path, values)
    out, cells, (row,) = report(tmp_path)
    diff, low, high, p, _, _ = welch(values["ln"], values["bn"])
    sa, sb = np.std(values["ln"], ddof=1), np.std(values["bn"], ddof=1)
    detectable = optimize.brentq(lambda d: power_by_integral(d, sa, sb, 3, 3, 0.05) - 0.8, 0.01, 50)  # a family of one
    assert row["verdict"] == "not distinguishable" and row["significant"] == "False"
    assert float(row["detectable_difference"]) == pytest.approx(detectable, abs=1e-3)
    md = (out / "results.md").read_text()
    assert (f"ln +{diff:.1f} points (not distinguishable with n = 3 and 3 (this comparison detects about "
            f"{detectable:.1f} points with 80 % power; Holm-adjusted 95% CI {low:.1f} to {high:.1f}, "
            f"Holm p = {p:.3f}))") in md
    assert {c["series"]: c["verdict_vs_best"] for c in cells} == {"bn": "best", "ln": "not distinguishable"}
    assert "| ln | " in md and " ? |" in md.split("## Results")[1].split("#### Comparisons")[0]
    assert not re.search(r"\btie", md.lower())
    assert "not distinguishable" in (out / "index.html").read_text()


@pytest.mark.parametrize("margin,verdict", [(1.0, "equivalent"), (0.01, "not distinguishable")])
def test_equivalent_only_when_a_tost_within_the_margin_passes(hydra_conf, tmp_path, margin, verdict):
    values = {"bn": [10.0, 10.1, 9.9, 10.05, 9.95], "ln": [10.02, 10.12, 9.92, 10.07, 9.97]}
    runs_of(tmp_path, values)
    out, cells, (row,) = report(tmp_path, equivalence_margin=margin)
    diff, _, _, _, se, df = welch(values["ln"], values["bn"])
    p_tost = max(sps.t.sf((diff + margin) / se, df), sps.t.cdf((diff - margin) / se, df))
    half = sps.t.ppf(0.95, df) * se  # one TOST in the family: its 90% interval
    assert row["verdict"] == verdict and float(row["p_tost_holm"]) == pytest.approx(p_tost, rel=1e-6)
    assert [c["verdict_vs_best"] for c in cells if c["series"] == "ln"] == [verdict]
    if verdict == "equivalent":
        assert (f"ln +0.0 points (equivalent within ±1 point: Holm-adjusted 90% CI {diff - half:.1f} to "
                f"{diff + half:.1f}, TOST Holm p < 0.001, n = 5 and 5)") in (out / "results.md").read_text()
        assert "≈ |" in (out / "results.md").read_text()


def test_cell_intervals_stay_in_0_100_and_a_baseline_that_is_the_best_is_compared_once(hydra_conf, tmp_path):
    values = {"bn": [10.0, 10.5, 11.0], "in": [12.0, 13.0, 80.0], "ln": [30.0]}  # one in seed diverging, one ln run
    runs_of(tmp_path, values)
    out, cells, comparisons = report(tmp_path, baseline="bn")
    x = np.array(values["in"])
    half = sps.t.ppf(0.975, 2) * x.std(ddof=1) / math.sqrt(3)
    cell = next(c for c in cells if c["series"] == "in")
    assert x.mean() + half > 100 and x.mean() - half < 0  # the plain t interval: impossible error rates
    assert (float(cell["test_error_ci_low"]), float(cell["test_error_ci_high"])) == (0.0, 100.0)
    md = (out / "results.md").read_text()
    printed = (re.findall(r"95% CI (-?[\d.]+) to (-?[\d.]+), n = \d+\)", md)  # Findings and tables: every cell
               + re.findall(r"\[(-?[\d.]+), (-?[\d.]+)\] \(n=", md))
    assert ("0.00", "100.00") in printed and all(0 <= float(lo) <= float(hi) <= 100 for lo, hi in printed)
    assert "Student t truncated to [0, 100]" in md
    # bn is best and baseline: each pair once, one Holm family of the one testable comparison
    assert sorted((r["kind"], r["a"], r["b"]) for r in comparisons) == [("vs best", "in", "bn"),
                                                                         ("vs best", "ln", "bn")]
    tested = next(r for r in comparisons if r["a"] == "in")
    assert float(tested["p_holm"]) == pytest.approx(welch(values["in"], values["bn"])[3], rel=1e-5)


def test_contrasts_across_columns_join_the_tables_holm_family(hydra_conf, tmp_path):
    values = {("bn", 2): [20.0, 21.0, 22.0], ("bn", 32): [15.0, 15.5, 16.5], ("gn", 2): [14.0, 14.5, 15.5],
              ("gn", 32): [17.0, 18.0, 18.5]}
    for (norm, batch), errs in values.items():
        for seed, e in enumerate(errs):
            fake_run(tmp_path, ["data=synthetic", f"data.batch_size={batch}", f"norm={norm}"], seed, e)
    # the second contrast is the vs-best pair at batch 2 again: counted once
    out, _, comparisons = report(tmp_path, contrasts=["gn@2 vs bn@32", "bn@2 vs gn@2"])
    family = [r for r in comparisons if r["kind"] != "column effect"]
    assert sorted((r["kind"], r["column"]) for r in family) == [("contrast", "2 vs 32"), ("vs best", "2"),
                                                                ("vs best", "32")]
    contrast = next(r for r in family if r["kind"] == "contrast")
    diff, low, high, p, _, _ = welch(values["gn", 2], values["bn", 32])
    assert (contrast["a"], contrast["b"], float(contrast["diff_mean"])) == ("gn", "bn", pytest.approx(diff, abs=1e-4))
    assert float(contrast["diff_ci_low"]) == pytest.approx(low, abs=1e-4)
    assert float(contrast["p_value"]) == pytest.approx(p, rel=1e-5)
    raw = sorted(float(r["p_value"]) for r in family)  # Holm by hand over the family of three
    k = raw.index(float(contrast["p_value"]))
    assert float(contrast["p_holm"]) == pytest.approx(min(1, max((3 - i) * raw[i] for i in range(k + 1))), rel=1e-5)
    md = (out / "results.md").read_text()
    assert f"Contrast gn@2 vs bn@32: gn batch 2 minus bn batch 32 = −{abs(diff):.1f} points (" in md


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
    ({"equivalence_margin": 0}, r"equivalence_margin=0: must be a positive number of points of test error"),
    ({"contrasts": ["ln@8 versus bn@8"]}, r"contrasts: 'ln@8 versus bn@8' is not a contrast; write "
                                          r"'<series>@<column> vs <series>@<column>'"),
    ({"contrasts": ["gn@8 vs bn@8"]}, r"contrasts: 'gn@8 vs bn@8': no table has both cells; series: bn, ln; columns: 8"),
    ({"contrasts": ["bn@8 vs bn@8"]}, r"contrasts: 'bn@8 vs bn@8' compares a cell with itself"),
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


def test_an_added_option_the_report_does_not_have_is_refused_by_name(tmp_path):
    """`+colz=norm` is what Hydra's own hint tells a user to type for an unknown key; Hydra would
    add it and the report would never read it."""
    proc = subprocess.run([sys.executable, str(REPO / "report.py"), str(tmp_path), "+colz=norm"], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    line = one_line_error(proc)
    assert line.startswith("error: +colz=norm: report.py has no option 'colz'; valid: runs_dir, out_dir, cols,")
