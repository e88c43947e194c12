"""Train one configuration: python train.py norm=gn model=resnet20 data.batch_size=8

Hydra composes the config in conf/. `main` decides whether this process trains at all
(another process may hold the run, or it may be done: harness/job.py). `run` is composition:
data and network, loggers, callbacks, Trainer, module; fit, test, evaluate; the record, whose
status harness/outcome.py sets and writes last, however the run ends.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from harness import build, evaluation, job, launch, packed, resume, schema, sweep
from harness.callbacks import EpochReport, LastCheckpoint, RngState, StopOnSignal
from harness.diagnostics import NormDiagnostics
from harness.loggers import ResumableCSVLogger
from harness.module import Classifier
from harness.outcome import RunEnd
from harness.packed.member import written_by_pack
from harness.wandb_run import WandbRun
from record import RunDir, RunRecord, RunSpec
from record.cli import one_line_errors
from record.secrets import ScrubbedStream, scrub_files

launch.prepare_process()  # before @hydra.main composes: the run directory's ${identity:}, conf/'s defaults
schema.register()


def callbacks_for(cfg: DictConfig, run_dir: RunDir, limit: pl.Callback | None) -> list[pl.Callback]:
    callbacks = [EpochReport(), StopOnSignal(), RngState(), *([limit] if limit else [])]
    if cfg.progress_bar == "auto" and not sys.stdout.isatty():
        callbacks.append(TQDMProgressBar(refresh_rate=0))  # logs and CI get the epoch lines instead
    elif cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar_refresh))
    if cfg.diagnostics.enabled:
        callbacks.append(NormDiagnostics(cfg.diagnostics.every_n_steps))
    if cfg.checkpoint.enabled:  # last in the list: it saves what the callbacks above recorded
        callbacks.append(LastCheckpoint(run_dir.checkpoint, cfg.checkpoint.every_n_steps))
    return callbacks


def run(cfg: DictConfig, spec: RunSpec, run_dir: RunDir, rank_zero: bool = True) -> RunRecord:
    """Train and test one configuration (validated by harness.schema); returns its record,
    written to <run dir>/summary.json.

    In every DDP process but global rank 0 (`rank_zero=False`) it trains its share and writes
    nothing: no summary, no CSV or W&B run, no checkpoint.
    """
    run_dir.path.mkdir(parents=True, exist_ok=True)
    record = RunRecord.begin(cfg, spec, run_dir.path)
    with launch.ddp_job(), RunEnd(run_dir, record, write=rank_zero) as end:
        debug = build.debug_settings(cfg)
        if debug:  # recorded, but never counted as a result
            record.result, record.debug = False, debug
            print(f"{spec.run_name}: debug run ({', '.join(f'{k}={v}' for k, v in debug.items())}): its summary "
                  "says result=false and reports leave it out", flush=True)
        ckpt, step = resume.resume_point(cfg.get("ckpt_path"), run_dir, spec, rank_zero)  # before anything is written
        if ckpt is not None:
            record.resumed_from = {"checkpoint": str(ckpt), "global_step": step}
            if rank_zero:
                print(f"resuming {spec.run_name} from {ckpt} (step {step})", flush=True)

        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm, net = build.data_and_net(cfg)
        record.what.num_params = sum(p.numel() for p in net.parameters())
        record.results.activation_mib = build.activation_mib(net, dm, cfg.data.batch_size)

        run_loggers = []
        if rank_zero:
            end.wandb = WandbRun.start(cfg, run_dir.path, spec)
            end.wandb.describe(record)
            csv_logger = ResumableCSVLogger(run_dir.path, step)
            record.csv_log = Path(csv_logger.log_dir) / "metrics.csv"
            run_loggers = [csv_logger, *end.wandb.loggers]
        end.limit = build.stop_limit(cfg)
        trainer = end.trainer = build.trainer(cfg, run_dir.path, run_loggers, callbacks_for(cfg, run_dir, end.limit),
                                              enable_checkpointing=False)
        build.describe_setup(record, cfg, trainer)  # the learning rate, the three batch sizes, the device
        end.wandb.setup(record)
        module = end.module = Classifier(net, cfg.optim, record.what.lr, channels_last=cfg.perf.channels_last,
                                         compile=cfg.perf.compile, identity=spec.identity)

        if trainer.world_size > 1 and rank_zero:
            launch.children_run_this_job(run_dir.path)
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        record.results.train_seconds = module.fit_seconds + module.fit_elapsed()
        test = trainer.test(module, datamodule=dm, verbose=False)[0]
        record.results.fill(module.history, test)
        if rank_zero:
            evaluation.record_statistics(record.results, cfg, module.net, dm, trainer.world_size, run_dir.path)
        record.status = "completed"
        end.wandb.results(record)
    return record


def train_other_rank(cfg: DictConfig, spec: RunSpec, run_dir: RunDir) -> None:
    """A DDP process other than global rank 0 (started by Lightning's launcher, or a SLURM or
    torchrun task): trains its share; rank 0 holds the run lock and writes every output."""
    schema.validate(cfg)  # as rank 0 did: run() takes a validated config
    if run_dir.state(spec.identity, spec.run_name).kind not in ("done", "stale"):  # rank 0 skips it too
        run(cfg, spec, run_dir, rank_zero=False)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = RunDir(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if not multirun and hydra_cfg.sweeper.get("params"):
        swept = ", ".join(f"{k}={v}" for k, v in hydra_cfg.sweeper.params.items())
        print(f"note: this config defines a sweep ({swept}); without -m it trains one configuration "
              f"({cfg.run_name}); add -m to run the sweep", flush=True)
    scrub_files([*((run_dir.path / hydra_cfg.output_subdir).glob("*.yaml") if hydra_cfg.output_subdir else []),
                 *([Path(hydra_cfg.sweep.dir) / "multirun.yaml"] if multirun else [])])
    with one_line_errors():
        launch.set_threads(cfg.num_threads, hydra_cfg.get("launcher"))
    spec = RunSpec.of(cfg)
    if not launch.is_global_zero():
        return train_other_rank(cfg, spec, run_dir)
    with run_dir.lock() as lock:
        if not lock.acquired:
            # Another launcher on the same sweep directory is training this run right now.
            print(f"{spec.run_name}: skipping, being trained by another process (pid {lock.holder}) in {run_dir.path}",
                  flush=True)
            if not multirun:
                sys.exit(3)
            return None
        # A user's error is one line; in a sweep the next run follows, and the sweep ends with the
        # list of its failed runs (harness/sweep.py).
        with one_line_errors(MisconfigurationException, go_on=multirun):
            skip = job.prepare(cfg, spec, run_dir)
            if skip is not None:
                return skip.record.results.test_acc
            if written_by_pack(run_dir) or cfg.perf.cuda_graphs:  # the pack's loop, alone (it captures its step)
                return job.announce(packed.train([(cfg, run_dir, launch.job_overrides() or [])])[0], run_dir)
            return job.announce(run(cfg, spec, run_dir), run_dir)
    return None


if __name__ == "__main__":
    sys.stdout, sys.stderr = ScrubbedStream(sys.stdout), ScrubbedStream(sys.stderr)
    main()
    if sweep.FAILED:
        print(f"{len(sweep.FAILED)} run(s) of the sweep failed:\n  " + "\n  ".join(sweep.FAILED), file=sys.stderr)
        sys.exit(1)
