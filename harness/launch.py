"""Every change NormLab makes to its own process, in one place, each saved and restored.

- `prepare_process`: the Hydra resolvers conf/ uses (the run-directory names, the defaults
  of a choice's code), and the warning filters for Lightning messages that do not apply to
  NormLab. Called by the entry points, never on import.
- `set_threads`: torch threads per run when a launcher runs several runs at once.
- `is_global_zero`: which DDP process writes a run's outputs, known before any Trainer exists.
- `ddp_job`: what Lightning's DDP launcher needs to start this job's child processes, and
  what it leaves behind (argv, environment, process group), undone when the run ends.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict, read_write

import resolvers
from record.identity import dir_name, identity

# Set by Lightning's DDP launcher in the launching process. Left behind, LOCAL_RANK makes the
# next run of a multirun believe its processes were started externally, and it waits forever.
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def slurm_gpus_per_node(devices):
    """hydra/launcher=submitit_slurm asks SLURM for trainer.devices GPUs (and tasks) per node."""
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"hydra/launcher=submitit_slurm needs trainer.devices to be the number of GPUs per node "
                         f"(a positive integer), got {devices!r}; e.g. trainer=ddp trainer.devices=4")
    return devices


def register_resolvers() -> None:
    """${identity:} and ${dir_name:...} (conf/hydra/default.yaml), ${slurm_gpus_per_node:...}
    (the SLURM launcher), and the defaults of a choice's code (resolvers.py)."""
    OmegaConf.register_new_resolver("identity", lambda *, _root_: identity(_root_), replace=True)
    OmegaConf.register_new_resolver("dir_name", dir_name, replace=True)
    OmegaConf.register_new_resolver("slurm_gpus_per_node", slurm_gpus_per_node, replace=True)
    resolvers.register()


def prepare_process() -> None:
    register_resolvers()
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    # conf/hydra/launcher/submitit_slurm.yaml replaces the plugin's config of the same name on purpose.
    warnings.filterwarnings("ignore", message=r"(?s).*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema")
    # A run resumed mid-epoch continues its epoch's order from the DataModule's state in the
    # checkpoint (data.base.EpochSampler), not from a stateful DataLoader that Lightning looks for.
    warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch ended")
    # val/* and test/* are summed over every DDP process before they are logged; train/* epoch
    # values are too (harness.module); syncing through self.log would all-reduce every step.
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test|train)/")


def set_threads(num_threads, launcher) -> None:
    """num_threads=auto: torch's default for one run; under hydra/launcher=joblib the cores
    shared among the n_jobs parallel jobs; under a submitit launcher its cpus_per_task. Runs in
    parallel that each take every core slow down many times over (measured: 1 epoch of a
    small run took 77 s instead of ~3 s with two 2-thread jobs on 2 cores)."""
    threads = num_threads
    if threads == "auto":
        launcher = launcher or {}
        target = str(launcher.get("_target_", ""))
        if ("joblib" in target or "packed" in target) and launcher.get("n_jobs"):
            cores = os.cpu_count() or 1
            n_jobs = launcher.n_jobs
            n_jobs = cores if n_jobs < 0 else min(n_jobs, cores)  # joblib: -1 means one job per core
            threads = max(1, cores // n_jobs)
        elif "submitit" in target and launcher.get("cpus_per_task"):
            threads = launcher.cpus_per_task
        else:
            return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"num_threads must be a positive integer or auto, got {threads!r}")
    torch.set_num_threads(threads)


def is_global_zero() -> bool:
    """Whether this process is global rank 0 by what its launcher set: False in the processes
    Lightning's DDP launcher starts (LOCAL_RANK > 0), on the other nodes of a multi-node run
    (NODE_RANK > 0) and in SLURM / torchrun tasks but the first. (Lightning's own
    rank_zero_only.rank is fixed at import and ignores NODE_RANK.)"""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK"))


@contextlib.contextmanager
def ddp_job():
    """Around one run: whatever DDP changed in this process is undone when the run ends. The
    process group ends (the next run of a multirun starts its own, with its own children);
    argv (see `children_run_this_job`) and the launch environment are what they were."""
    argv, env = list(sys.argv), {var: os.environ.get(var) for var in DDP_LAUNCH_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        sys.argv = argv
        for var, value in env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def children_run_this_job(out_dir: Path) -> None:
    """Make the processes Lightning's DDP launcher starts train this job, in this directory.

    Lightning starts them by re-running `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`.
    Under `-m` that argv is the whole sweep (each child would start a multirun of its own), and
    the run-dir template is not this job's directory. So the children get this job's overrides
    and directory. Only inside `ddp_job`, which gives argv back.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.instance().cfg.hydra
    sys.argv = [sys.argv[0], *job_overrides()]
    with open_dict(hydra_cfg), read_write(hydra_cfg):
        hydra_cfg.run.dir = str(out_dir)


def job_overrides() -> list[str] | None:
    """This job's own overrides (under -m, its point of the sweep, not the sweep command), or
    None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)
