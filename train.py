"""Train one configuration: python train.py norm=gn model=resnet20 data.batch_size=8

Hydra composes the config in conf/; `run` builds the data, network and Trainer from it
(harness/), PyTorch Lightning trains and tests, the CSV and W&B loggers record the curves,
and summary.json in the run directory records the result. `main` decides first whether
this process should train at all: another process may hold the run, or it may be done.
"""
from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities.exceptions import MisconfigurationException, SIGTERMException

import norms
from harness import build, evaluation, launch, loggers, record, schema, sweep
from harness.callbacks import EpochReport, LastCheckpoint, RngState, StopOnSignal
from harness.diagnostics import NormDiagnostics
from harness.module import Classifier, Diverged
from harness.secrets import ScrubbedStream, scrub, scrub_files

launch.prepare_process()  # before @hydra.main composes: the run directory's ${identity:}
schema.register()

# Errors a user can cause by what they typed or where their files are: one readable line,
# not a traceback (HYDRA_FULL_ERROR=1 shows the traceback).
# OSError: a full disk, a read-only or unwritable directory, a file where a directory belongs.
USER_ERRORS = (ValueError, OSError, OmegaConfBaseException, InstantiationException, MisconfigurationException)


def callbacks_for(cfg: DictConfig, out_dir: Path) -> list[pl.Callback]:
    callbacks = [EpochReport(), StopOnSignal(), RngState()]
    if cfg.progress_bar == "auto" and not sys.stdout.isatty():
        callbacks.append(TQDMProgressBar(refresh_rate=0))  # logs and CI get the epoch lines instead
    elif cfg.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar_refresh))
    if cfg.diagnostics.enabled:
        callbacks.append(NormDiagnostics(cfg.diagnostics.every_n_steps))
    if cfg.checkpoint.enabled:  # last in the list: it saves what the callbacks above recorded
        callbacks.append(LastCheckpoint(out_dir / "checkpoints" / "last.ckpt", cfg.checkpoint.every_n_steps))
    return callbacks


def resume_point(cfg: DictConfig, out_dir: Path, rank_zero: bool, summary: dict) -> tuple[Path | None, int | None]:
    """The checkpoint a run that stopped part-way resumes from, and its step: `ckpt_path` when
    given, else the run's own last.ckpt. Only this configuration's (another's is refused); an
    unreadable last.ckpt is set aside and the run starts over, an unreadable ckpt_path refused."""
    given = cfg.get("ckpt_path")
    ckpt = Path(given).expanduser() if given else out_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        if given:
            raise FileNotFoundError(f"ckpt_path={given}: no such checkpoint file")
        return None, None
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        step = state["global_step"]
    except Exception as err:  # noqa: BLE001 - truncated, empty or not a checkpoint at all
        if given:
            raise ValueError(f"ckpt_path={given} is not a readable checkpoint ({type(err).__name__})") from None
        if rank_zero:
            record.set_aside(ckpt, f"unreadable checkpoint ({type(err).__name__}), starting over")
        return None, None
    record.check_checkpoint(state, cfg, ckpt)
    summary["resumed_from"] = {"checkpoint": str(ckpt), "global_step": step}
    if rank_zero:
        print(f"resuming {summary['run_name']} from {ckpt} (step {step})", flush=True)
    return ckpt, step


def statistics_evaluation(cfg: DictConfig, net, dm, world_size: int, out_dir: Path) -> dict:
    """PreciseBN and batch-statistics accuracies (harness.evaluation) for a network with batch
    statistics; the recalibrated statistics go beside the checkpoint, which keeps its own."""
    if world_size > 1:
        print("note: PreciseBN and batch-statistics evaluation run on one process only; "
              "python eval.py <run dir> computes them for this run", flush=True)
        return {}
    out = evaluation.evaluate(net, dm, cfg.data.batch_size, cfg.eval.precise_bn_batches)
    recalibrated = out.pop("_net", None)
    if recalibrated is not None:
        path = out_dir / "checkpoints" / "precise_bn.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        record.save_atomic(recalibrated.state_dict(), path)
        out["precise_bn_state"] = str(path)
    return out


def run(cfg: DictConfig, out_dir: Path, rank_zero: bool = True) -> dict:
    """Train and test one configuration (validated by harness.schema); returns the summary
    written to out_dir/summary.json.

    In every DDP process but global rank 0 (`rank_zero=False`) it trains its share and writes
    nothing: no summary, no CSV or W&B run, no checkpoint.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary = record.start_summary(cfg, out_dir)
    wandb_logger = module = trainer = None
    write = rank_zero  # never over the record of another configuration's run
    with launch.ddp_job():
        try:
            debug = build.debug_settings(cfg)
            if debug:  # recorded, but never counted as a result
                summary.update(result=False, debug=debug)
                print(f"{cfg.run_name}: debug run ({', '.join(f'{k}={v}' for k, v in debug.items())}): its summary "
                      "says result=false and reports leave it out", flush=True)
            ckpt, resume_step = resume_point(cfg, out_dir, rank_zero, summary)  # before anything is written
            pl.seed_everything(cfg.seed, workers=True, verbose=False)
            dm, net = build.data_and_net(cfg)
            summary["num_params"] = sum(p.numel() for p in net.parameters())
            summary["activation_mib"] = build.activation_mib(net, dm, cfg.data.batch_size)

            if cfg.logger.get("wandb") is not None and rank_zero:
                wandb_logger = loggers.wandb_logger(cfg, out_dir)
            run_loggers = []
            if rank_zero:
                csv_logger = loggers.ResumableCSVLogger(out_dir, resume_step)
                run_loggers = [csv_logger] + ([wandb_logger] if wandb_logger else [])
                summary["csv_log"] = str(Path(csv_logger.log_dir) / "metrics.csv")
            if wandb_logger:
                wrun = wandb_logger.experiment
                summary["wandb"] = {"id": wrun.id, "dir": str(Path(wrun.dir).parent), "mode": wrun.settings.mode}
                loggers.link_to_dashboard(out_dir, Path(wrun.dir).parent)
            trainer = build.trainer(cfg, out_dir, run_loggers, callbacks_for(cfg, out_dir), enable_checkpointing=False)

            # The learning rate follows the optimisation batch (per device x devices x accumulation).
            opt_batch = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
            lr = build.scaled_lr(cfg.optim, opt_batch)
            summary.update(lr=lr, base_lr=cfg.optim.lr, per_device_batch_size=cfg.data.batch_size,
                           torch_threads=torch.get_num_threads(), world_size=trainer.world_size,
                           optimization_batch_size=opt_batch,
                           normalization_batch_size=norms.normalization_batch(cfg.norm, cfg.data.batch_size,
                                                                              trainer.world_size),
                           accelerator=trainer.accelerator.__class__.__name__.replace("Accelerator", "").lower(),
                           precision=str(trainer.precision))
            if wandb_logger:  # the learning rate and batch sizes, to group and filter by in the W&B workspace
                wandb_logger.experiment.config.update({k: summary[k] for k in ("lr", "base_lr", *record.BATCH_KEYS)},
                                                      allow_val_change=True)
            module = Classifier(net, cfg.optim, lr, channels_last=cfg.perf.channels_last, compile=cfg.perf.compile,
                                identity=summary["identity"])

            if trainer.world_size > 1 and rank_zero:
                launch.children_run_this_job(out_dir)
            trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
            summary["train_seconds"] = module.fit_seconds + module.fit_elapsed()
            test = trainer.test(module, datamodule=dm, verbose=False)[0]
            results = record.results(module.history, test)
            if rank_zero:
                results.update(statistics_evaluation(cfg, module.net, dm, trainer.world_size, out_dir))
            summary.update(results)
            if wandb_logger:  # what the logged curves do not already hold (test/acc, val/acc: their last values)
                wandb_logger.experiment.summary.update(
                    {"train/images_per_second": summary["images_per_second"],  # the mean over epochs, as summary.json's
                     **{k: summary[k] for k in ("best_val_acc", "num_params", "activation_mib", *record.STATISTICS_KEYS)
                        if k in summary}})
            return summary
        except Diverged as err:
            # Not a bug: a finding. The summary says so and a sweep goes on with the next run.
            summary.update(status="diverged", error=str(err), diverged_at_step=trainer.global_step,
                           history=module.history, epochs_completed=len(module.history))
            return summary
        except SIGTERMException:
            summary.update(status="interrupted", error="stopped by a signal; relaunch to resume from the checkpoint",
                           history=module.history if module else [])
            raise SystemExit(128 + signal.SIGTERM)
        except record.NotThisRun:
            write = False
            raise
        except BaseException as err:
            summary.update(status="failed", error=scrub(f"{type(err).__name__}: {err}"))
            if module is not None:
                summary["history"] = module.history
            raise
        finally:
            # W&B first: the summary is the run's last word, so a kill before it leaves a run that
            # a relaunch trains (and logs) again, never a summary beside an unfinished W&B run.
            if wandb_logger is not None:
                import wandb

                wandb.finish(exit_code=0 if summary["status"] == "completed" else 1)
            if write:
                try:
                    record.write_summary(out_dir, summary, started)
                except OSError as err:
                    if summary["status"] not in ("failed", "interrupted"):
                        raise  # the run's only error: say it
                    print(f"note: {out_dir / record.SUMMARY_FILE} could not be written either ({err.strerror or err})",
                          file=sys.stderr, flush=True)


def train_other_rank(cfg: DictConfig, out_dir: Path) -> None:
    """A DDP process other than global rank 0 (started by Lightning's launcher, or a SLURM or
    torchrun task): trains its share; rank 0 holds the run lock and writes every output."""
    schema.validate(cfg)  # as rank 0 did: run() takes a validated config
    done = record.read_summary(out_dir)
    if not (done and done.get("status") == "completed"):  # rank 0 (a SLURM task like this one) skips it too
        run(cfg, out_dir, rank_zero=False)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if not multirun and hydra_cfg.sweeper.get("params"):
        swept = ", ".join(f"{k}={v}" for k, v in hydra_cfg.sweeper.params.items())
        print(f"note: this config defines a sweep ({swept}); without -m it trains one configuration "
              f"({cfg.run_name}); add -m to run the sweep", flush=True)
    scrub_files([*((out_dir / hydra_cfg.output_subdir).glob("*.yaml") if hydra_cfg.output_subdir else []),
                 *([Path(hydra_cfg.sweep.dir) / "multirun.yaml"] if multirun else [])])
    try:
        launch.set_threads(cfg.num_threads, hydra_cfg.get("launcher"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    if not launch.is_global_zero():
        return train_other_rank(cfg, out_dir)
    with record.RunLock(out_dir) as lock:
        if not lock.acquired:
            # Another launcher on the same sweep directory is training this run right now.
            print(f"{cfg.run_name}: skipping, being trained by another process (pid {lock.holder}) in {out_dir}", flush=True)
            if not multirun:
                sys.exit(3)
            return None
        try:
            try:
                schema.validate(cfg)  # before anything in the directory is read or trusted
            except ValueError as err:
                record.refused(out_dir, cfg, scrub(str(err)))
                raise
            done = record.own_summary(out_dir, cfg)  # refuses another configuration's directory
            stale = record.stale(done) if done and done.get("status") == "completed" else None
            if stale and cfg.rerun == "stale":
                for path in (out_dir / record.SUMMARY_FILE, out_dir / "checkpoints" / "last.ckpt"):
                    if path.is_file():
                        record.set_aside(path, f"{stale}; rerun=stale trains it again", tag="stale")
            elif done and done.get("status") == "completed":
                # Same config, same directory: a relaunched sweep skips what it already did.
                print(f"{cfg.run_name}: already completed, test accuracy {done['test_acc']:.2%}; skipping "
                      + (f"({stale}: rerun=stale trains it again)" if stale else f"(delete {out_dir} to train it again)"),
                      flush=True)
                return done["test_acc"]
            summary = run(cfg, out_dir)
        except USER_ERRORS as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {scrub(str(err))}", file=sys.stderr, flush=True)
            if not multirun:
                sys.exit(2)
            return None  # the sweep goes on; it ends with the list of failed runs (harness/sweep.py)
        except Exception:  # a bug, not a user error: in a sweep, its traceback, and the next run
            if not multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            traceback.print_exc()
            return None
    if summary["status"] == "diverged":
        print(f"{cfg.run_name}: diverged ({summary['error']}); summary in {out_dir}", flush=True)
        return None
    print(f"{cfg.run_name}: test accuracy {summary['test_acc']:.2%} "
          f"(best val {summary['best_val_acc']:.2%}); outputs in {out_dir}", flush=True)
    return summary["test_acc"]


if __name__ == "__main__":
    sys.stdout, sys.stderr = ScrubbedStream(sys.stdout), ScrubbedStream(sys.stderr)
    main()
    if sweep.FAILED:
        print(f"{len(sweep.FAILED)} run(s) of the sweep failed:\n  " + "\n  ".join(sweep.FAILED), file=sys.stderr)
        sys.exit(1)
