"""The published studies' recipes (studies/): each composes, passes the config checks, and
packs as its README says, on this CPU machine (the GPU study is run only where a GPU is)."""
import itertools
import re

import pytest
from conftest import REPO, run_train
from hydra import compose, initialize_config_dir

from harness import packed, schema


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        yield


@pytest.mark.parametrize("experiment,runs", [
    ("norm_batch_cpu", 35),
    pytest.param("batch_study_gpu", 360, marks=pytest.mark.slow),  # ~8 min: 360 configurations checked
])
def test_each_study_recipe_is_one_command_whose_runs_all_pass_the_checks(tmp_path, experiment, runs):
    proc = run_train("-m", f"experiment={experiment}", "hydra/launcher=dry_run", f"hydra.sweep.dir={tmp_path}")
    assert f"dry run: {runs} run(s): {runs} to run; nothing trained" in proc.stdout


def test_the_gpu_study_trains_as_40_packs_of_9_on_a_gpu(hydra_conf):
    """A cell's 3 learning rates x 3 seeds are one pack on a GPU: 8 norms x 5 batch sizes = 40
    packs; the projection in its README counts pack steps from these cells."""
    cells = {}
    for batch, lr, seed in itertools.product((2, 4, 8, 32, 128), (0.05, 0.1, 0.2), (0, 1, 2)):
        cfg = compose("config", overrides=["experiment=batch_study_gpu", "norm=gn", f"data.batch_size={batch}",
                                           f"optim.lr={lr}", f"seed={seed}"])
        schema.validate(cfg)
        assert packed.why_alone(cfg) is None
        cells.setdefault(packed.pack_key(cfg), []).append(cfg)
    assert len(cells) == 5
    for members in cells.values():
        assert packed.pack_sizes(members[0], "cuda", len(members)) == [9]
        assert packed.pack_sizes(members[0], "cpu", len(members)) == ([9] if members[0].data.batch_size == 2 else [1] * 9)
    recipe = (REPO / "conf" / "experiment" / "batch_study_gpu.yaml").read_text()
    assert re.search(r"norm: bn,ln,in,gn,none,gn_ws,brn,frn\n", recipe)
