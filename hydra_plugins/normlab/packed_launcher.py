"""hydra/launcher=packed: the jobs of a sweep that differ only in seed, learning rate and weight
decay train together, in one process, as one stacked model (harness/packed).

    python train.py -m experiment=quick                       # the quick study packs by default
    python train.py -m norm=gn seed=0,1,2 optim.lr=0.05,0.1 hydra/launcher=packed hydra.launcher.max_pack=3

`hydra.launcher.n_jobs` packs train at a time, each in its own process (as the joblib
launcher's jobs; -1: one per core); `hydra.launcher.max_pack` caps the members of a pack
(default: no cap on a GPU; on a CPU, batch size x members within what the measurements say pays,
harness.packed.CPU_PACK_IMAGES). A job that cannot pack (DDP, norm.sync, a debug run, a config
the checks refuse, a run resumed from a checkpoint it wrote alone, ...) runs alone through
train.py, with one line saying why. Every member gets its own run directory, with Hydra's files
in it, as if it had run alone; a relaunch skips completed members and packs the rest.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.normlab.packed_launcher.PackedLauncher"
    n_jobs: int = -1  # packs training at once, one process each; -1: one per core (as hydra/launcher=joblib)
    max_pack: Optional[int] = None  # members per pack at most (default: harness.packed.max_members)


ConfigStore.instance().store(group="hydra/launcher", name="packed", node=PackedLauncherConf, provider="normlab")


def _job_config(hydra_context: HydraContext, config: DictConfig, idx: int, overrides: Sequence[str]) -> DictConfig:
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return sweep_config


def _task_config(sweep_config: DictConfig) -> DictConfig:
    return OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])


def _alone(idx, overrides, hydra_context, config, task_function, singleton_state) -> JobReturn:
    """One job through train.py's task function, as Hydra's own launchers run it."""
    setup_globals()
    Singleton.set_state(singleton_state)
    from harness import launch

    launch.register_resolvers()
    sweep_config = _job_config(hydra_context, config, idx, overrides)
    return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def _pack(jobs, hydra_context, config, singleton_state, n_jobs) -> list[JobReturn]:
    """One pack: each member's directory and Hydra files (Hydra's run_job, with a task that
    collects the member), then the members that are to train, trained together."""
    import contextlib

    setup_globals()
    Singleton.set_state(singleton_state)
    from harness import job, launch, packed
    from record import RunDir, RunSpec
    from record.cli import one_line_errors

    launch.prepare_process()
    launch.set_threads("auto", OmegaConf.create({"_target_": PackedLauncherConf._target_, "n_jobs": n_jobs}))
    members, returns = [], []
    for idx, overrides in jobs:
        collected = {}

        def collect(task_cfg, collected=collected):
            collected["cfg"] = task_cfg
            collected["dir"] = HydraConfig.get().runtime.output_dir

        sweep_config = _job_config(hydra_context, config, idx, overrides)
        ret = run_job(hydra_context=hydra_context, task_function=collect, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        returns.append(ret)
        members.append((collected["cfg"], RunDir(collected["dir"]), list(overrides), ret))
    to_train = []
    with contextlib.ExitStack() as locks:
        for cfg, run_dir, overrides, ret in members:
            spec = RunSpec.of(cfg)
            lock = locks.enter_context(run_dir.lock())
            if not lock.acquired:
                print(f"{spec.run_name}: skipping, being trained by another process (pid {lock.holder}) in "
                      f"{run_dir.path}", flush=True)
                continue
            with one_line_errors(go_on=True):
                skip = job.prepare(cfg, spec, run_dir)
                if skip is not None:
                    ret.return_value = skip.record.results.test_acc
                else:
                    to_train.append((cfg, run_dir, overrides, ret))
        if to_train:
            with one_line_errors(go_on=True):
                records = packed.train([(c, d, o) for c, d, o, _ in to_train])
                for (_, run_dir, _, ret), record in zip(to_train, records):
                    ret.return_value = job.announce(record, run_dir)
    return returns


class PackedLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, max_pack: int | None = None, **_other) -> None:
        super().__init__()
        self.n_jobs, self.max_pack = n_jobs, max_pack
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> tuple[list, list]:
        """(packs: lists of (idx, overrides); jobs that run alone: (idx, overrides)), with one
        line per job that cannot pack."""
        from harness import packed, schema
        from harness.packed import member
        from record import RunDir

        groups: dict[str, list] = {}
        alone = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = _job_config(self.hydra_context, self.config, idx, overrides)
            cfg = _task_config(sweep_config)
            run_dir = RunDir(Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir))
            try:
                schema.validate(cfg)
                why = packed.why_alone(cfg)
            except ValueError:
                why = "the config checks refuse it (train.py says why)"
            if why is None and run_dir.checkpoint.is_file() and not member.written_by_pack(run_dir):
                why = "it resumes from a checkpoint it wrote training alone"
            if why is not None:
                print(f"#{idx} trains alone: {why}", flush=True)
                alone.append((idx, overrides))
                continue
            groups.setdefault(packed.pack_key(cfg), (cfg, []))[1].append((idx, overrides))
        packs = []
        for cfg, jobs in groups.values():  # each cell's runs, split as the measured rule says
            for size in packed.pack_sizes(cfg, packed.device_of(cfg), len(jobs), self.max_pack):
                packs.append(jobs[:size])
                jobs = jobs[size:]
        return packs, alone

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from joblib import Parallel, delayed

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        from harness import launch

        launch.register_resolvers()
        packs, alone = self.plan(job_overrides, initial_job_idx)
        sizes = sorted((len(p) for p in packs), reverse=True)
        print(f"packed launcher: {len(job_overrides)} job(s) in {len(packs)} pack(s) of {sizes}"
              f"{f' and {len(alone)} alone' if alone else ''}; {self.n_jobs} at a time", flush=True)
        state = Singleton.get_state()
        tasks = [delayed(_pack)(pack, self.hydra_context, self.config, state, self.n_jobs) for pack in packs]
        tasks += [delayed(_alone)(idx, ov, self.hydra_context, self.config, self.task_function, state)
                  for idx, ov in alone]
        results = Parallel(n_jobs=self.n_jobs, backend="loky")(tasks) if tasks else []
        returns = [r for result in results for r in (result if isinstance(result, list) else [result])]
        return sorted(returns, key=lambda r: r.hydra_cfg.hydra.job.num)

