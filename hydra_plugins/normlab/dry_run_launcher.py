"""hydra/launcher=dry_run: what a sweep would do, before it does it.

    python train.py -m experiment=quick hydra/launcher=dry_run

For every job of the sweep, one line: its run directory (name and identity) and whether it is
done (with its test accuracy), part-way (the step of its checkpoint), failed, still to run, or
refused by the config schema (with the one-line reason), then a count. Nothing is trained and
no run directory is created; Hydra itself writes the sweep's multirun.yaml, as for any sweep.
"""

from pathlib import Path
from typing import Sequence

import torch
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict


def _launcher_node() -> DictConfig:
    """Open to other keys: a recipe that sets its own launcher's options (experiment=quick sets
    hydra.launcher.n_jobs) can be dry-run as it is."""
    node = OmegaConf.create({"_target_": "hydra_plugins.normlab.dry_run_launcher.DryRunLauncher"})
    OmegaConf.set_struct(node, False)
    return node


ConfigStore.instance().store(group="hydra/launcher", name="dry_run", node=_launcher_node(), provider="normlab")


def job_status(cfg: DictConfig, run_dir: Path) -> tuple[str, str]:
    """(state, detail) of one job: its run directory's state (record.RunDir.state: done, stale,
    partial, failed, foreign, to run), or refused by the checks train.py makes first."""
    import data
    import models
    from harness import schema
    from record import RunDir, RunSpec

    try:  # what train.py checks before training: the schema, then the model the norm must fit
        schema.validate(cfg)
        dm = data.build(cfg.data)  # reads no files
        models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
    except (ValueError, OSError) as err:  # as train.py: a user's error, one line
        return "refused", f"error: {err}"
    spec, run = RunSpec.of(cfg), RunDir(run_dir)
    state = run.state(spec.identity, spec.run_name)
    if state.kind == "partial":
        try:
            step = torch.load(run.checkpoint, map_location="cpu", weights_only=True)["global_step"]
            return "partial", f"resumes from step {step}"
        except Exception:  # noqa: BLE001 - the run sets an unreadable checkpoint aside and starts over
            return "to run", "its checkpoint is unreadable: it starts over"
    return state.kind, state.detail


class DryRunLauncher(Launcher):
    def __init__(self, **_other_launchers_options) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from harness import launch

        launch.register_resolvers()
        counts: dict[str, int] = {}
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.num = idx
            run_dir = Path(sweep_config.hydra.sweep.dir) / str(sweep_config.hydra.sweep.subdir)
            cfg = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
            status, detail = job_status(cfg, run_dir)
            counts[status] = counts.get(status, 0) + 1
            print(f"#{idx} [{status}] {run_dir}  {' '.join(filter_overrides(overrides))}"
                  + (f"\n      {detail}" if detail else ""), flush=True)
        total = sum(counts.values())
        print(f"dry run: {total} run(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())
              + "; nothing trained", flush=True)
        return []
