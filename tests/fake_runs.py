"""Run directories as finished runs leave them, written by the tests from real composed configs
with known test errors, so every number the report prints can be checked; and the report on them."""
import csv
import json

import pytest
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from record import identity
from results import make_report
from results.config import ReportConfig, register


@pytest.fixture(scope="module")
def hydra_conf():
    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


def fake_run(sweep, overrides, seed, test_error, val_error=None, status="completed"):
    """A run directory as a finished run leaves it: summary.json with its resolved config."""
    composed = compose("config", overrides=[*overrides, f"seed={seed}"])
    cfg = OmegaConf.to_container(composed, resolve=True)
    run_dir = sweep / f"run{len(list(sweep.glob('run*')))}"
    run_dir.mkdir(parents=True)
    val_error = test_error if val_error is None else val_error
    summary = {"status": status, "identity": identity(composed), "norm": cfg["norm"]["kind"], "model": cfg["model"]["name"], "data": cfg["data"]["name"],
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
