"""Train one configuration: python train.py norm=gn model=resnet20 data.batch_size=8

Hydra composes the config in conf/, this file wires norms/, models/ and data/ together,
PyTorch Lightning trains, W&B (online or offline) and a CSV file log the curves, and
summary.json in the run directory records the result.
"""
from __future__ import annotations

import inspect
import math
import numbers
import os
import signal
import sys
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

import data as datasets
import models
import norms
import tracking

tracking.register_resolvers()  # ${identity:} in conf/hydra/default.yaml

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
# conf/hydra/launcher/submitit_slurm.yaml replaces the plugin's config of the same name on purpose.
warnings.filterwarnings("ignore", message=r"(?s).*'hydra/launcher/submitit_slurm' is validated against ConfigStore schema")
# val/* and test/* are summed over every DDP process in _eval_end before they are logged;
# train/* epoch values are global rank 0's share (syncing them would all-reduce every step).
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test|train)/")


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


LR_SCALINGS = {"linear": lambda r: r, "sqrt": math.sqrt, "none": lambda r: 1.0}


# ---------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------
def _add_sums(total, loss_sum, logits, y):
    """total + (loss sum, correct, count) of a batch, all on the device. new_full fills on the
    device; torch.tensor(n, device="cuda") would be a blocking host-to-device copy."""
    loss_sum = loss_sum.float()
    sums = torch.stack([loss_sum, (logits.argmax(1) == y).sum().float(), loss_sum.new_full((), float(len(y)))])
    return sums if total is None else total + sums


class Classifier(pl.LightningModule):
    """Cross-entropy classification with SGD/AdamW and a warmup + cosine schedule."""

    def __init__(self, net: torch.nn.Module, optim: DictConfig, lr: float, channels_last: bool = False,
                 compile: bool = False):
        super().__init__()
        self.net, self.optim_cfg, self.lr = net, optim, lr
        self.channels_last = channels_last
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Compiled forward, kept out of the module tree so checkpoints hold the plain net's keys
        # (a compiled and a plain run resume from each other's checkpoints).
        object.__setattr__(self, "_net_fn", torch.compile(self.net) if compile else self.net)
        self.history: list[dict] = []  # one row per completed epoch; kept in checkpoints
        self.fit_seconds = 0.0  # time spent in fit by earlier attempts of this run
        self._eval = None  # (loss sum, correct, count) of the split being evaluated, on the device
        self._train = None  # the same for the training epoch so far
        self._show_progress = False
        self._logged_step = None

    def forward(self, x):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._net_fn(x)

    # Per-step bookkeeping stays on the device: the epoch's loss and accuracy are sums added to
    # on the device and read once per epoch (finish_train_epoch); the step curve is read and
    # written to the loggers every trainer.log_every_n_steps steps. Lightning's self.log costs
    # about 1 ms of Python per call (it moves its whole result collection to the value's
    # device each time), which at batch 2 on a CPU is a large share of a step.
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            self._train = _add_sums(self._train, loss.detach() * len(y), logits, y)
        step = self.global_step
        if (step + 1) % self.trainer.log_every_n_steps == 0 and step != self._logged_step:  # Lightning's logging steps
            self._logged_step = step  # once per optimizer step, with gradient accumulation too
            self._log_step(loss)
        if self._show_progress:
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        return loss

    def _log_step(self, loss):
        # Every DDP process takes the same decision, so none is left waiting for the others.
        if self.trainer.strategy.reduce_boolean_decision(not bool(torch.isfinite(loss)), all=False):
            raise Diverged(f"training loss is {loss.item()} at step {self.global_step}")
        metrics = {"train/loss_step": loss.item(), "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"],
                   "epoch": self.current_epoch}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def on_train_start(self):
        bar = self.trainer.progress_bar_callback
        self._show_progress = bar is not None and bar.is_enabled

    def on_train_epoch_start(self):
        self._train = None

    def _means(self, sums, loss_key: str, acc_key: str) -> dict:
        """Mean loss and accuracy from (loss sum, correct, count) summed over every process, logged;
        the one host-device sync of an epoch or split."""
        sums = sums if sums is not None else torch.zeros(3, device=self.device)
        loss, correct, count = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
        result = {loss_key: loss / max(count, 1), acc_key: correct / max(count, 1)}
        self.log_dict(result)
        return result

    def finish_train_epoch(self) -> dict:
        """The epoch's mean training loss and accuracy over every process."""
        return self._means(self._train, "train/loss_epoch", "train/acc")

    # Evaluation sums exact counts over the whole split (over every DDP process) rather than
    # averaging batch means; the sums stay on the device until the end of the split.
    def _eval_step(self, batch):
        x, y = batch
        logits = self(x)
        self._eval = _add_sums(self._eval, F.cross_entropy(logits, y, reduction="sum"), logits, y)

    def _eval_end(self, split: str) -> dict:
        sums, self._eval = self._eval, None
        return self._means(sums, f"{split}/loss", f"{split}/acc")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_validation_epoch_end(self):
        result = self._eval_end("val")
        if not self.trainer.sanity_checking:
            self.history.append({"epoch": self.current_epoch + 1, **result})

    def test_step(self, batch, batch_idx):
        self._eval_step(batch)

    def on_test_epoch_end(self):
        self._eval_end("test")

    def on_save_checkpoint(self, checkpoint):
        checkpoint["normlab"] = {"history": self.history, "fit_seconds": self.fit_seconds + self._fit_elapsed()}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("normlab", {})
        self.history, self.fit_seconds = list(state.get("history", [])), state.get("fit_seconds", 0.0)

    def on_fit_start(self):
        self._fit_t0 = time.perf_counter()

    def _fit_elapsed(self) -> float:
        return time.perf_counter() - getattr(self, "_fit_t0", time.perf_counter())

    def configure_optimizers(self):
        decay, no_decay = [], []
        for module in self.net.modules():
            is_norm = norms.kind_of(module) is not None
            for name, p in module.named_parameters(recurse=False):
                skip = not self.optim_cfg.weight_decay_norm and (is_norm or name == "bias")
                (no_decay if skip else decay).append(p)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = hydra.utils.instantiate(self.optim_cfg.optimizer)(groups, lr=self.lr)

        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = total / max(self.trainer.max_epochs, 1)
        warmup = int(self.optim_cfg.warmup_epochs * per_epoch)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EpochReport(pl.Callback):
    """Measures training images/s per epoch (validation excluded) and prints one line per epoch."""

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0, self.t1, self.images = time.perf_counter(), None, 0

    on_fit_start = on_train_epoch_start  # a run resumed mid-epoch starts counting here

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += len(batch[1])
        if batch_idx + 1 == trainer.num_training_batches:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        train = pl_module.finish_train_epoch()
        if not math.isfinite(train["train/loss_epoch"]):
            raise Diverged(f"mean training loss of epoch {trainer.current_epoch + 1} is {train['train/loss_epoch']}")
        # every process trains on as many images as this one
        ips = self.images * trainer.world_size / max((self.t1 or time.perf_counter()) - self.t0, 1e-9)
        pl_module.log("train/images_per_second", ips)
        m = {k: float(v) for k, v in trainer.callback_metrics.items()} | train
        row = pl_module.history[-1] if pl_module.history else {}
        row.update({"train/loss": m.get("train/loss_epoch"), "train/acc": m.get("train/acc"), "images_per_second": ips})
        if trainer.is_global_zero:
            print(
                f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
                f"train loss {m.get('train/loss_epoch', float('nan')):.4f} acc {m.get('train/acc', float('nan')):.2%} | "
                f"val loss {row.get('val/loss', float('nan')):.4f} acc {row.get('val/acc', float('nan')):.2%} | "
                f"{ips:.0f} img/s",
                flush=True,
            )


class LastCheckpoint(pl.Callback):
    """Writes checkpoints/last.ckpt at the end of every epoch and every `every_n_steps` steps.

    Written to a temporary file and renamed, so a crash never leaves a half-written checkpoint
    that a relaunch would trust. Loggers are flushed first, so the CSV log on disk is never
    behind the checkpoint a resumed run starts from.
    """

    def __init__(self, path: Path, every_n_steps: int | None):
        self.path, self.every_n_steps = Path(path), every_n_steps

    def save(self, trainer):
        for logger in trainer.loggers:
            logger.save()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, to resume from
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        last_of_epoch = batch_idx + 1 == trainer.num_training_batches  # saved at epoch end instead
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not last_of_epoch:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self.save(trainer)

    def on_exception(self, trainer, pl_module, exception):
        # SIGTERM (and a first Ctrl-C, see StopOnSignal) stop at a step boundary: save there.
        if isinstance(exception, SIGTERMException):
            self.save(trainer)
            print(f"checkpoint saved at step {trainer.global_step}: {self.path}", flush=True)


class StopOnSignal(pl.Callback):
    """A first Ctrl-C asks Lightning to stop at the end of the current step, as it does for
    SIGTERM, so a checkpoint is saved before exiting. A second Ctrl-C aborts at once."""

    def on_fit_start(self, trainer, pl_module):
        self.previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if trainer.received_sigterm:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM path: stop at the step boundary
            print("\ninterrupt: stopping after this step and saving a checkpoint (Ctrl-C again to abort)", flush=True)

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)

    def teardown(self, trainer, pl_module, stage):
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, getattr(self, "previous", signal.default_int_handler))


# ---------------------------------------------------------------------------------------
# W&B: online when possible, offline otherwise, never hanging or failing the run
# ---------------------------------------------------------------------------------------
BATCH_KEYS = ("per_device_batch_size", "world_size", "optimization_batch_size", "normalization_batch_size")
EPOCH_METRICS = ("train/loss_epoch", "train/acc", "train/images_per_second", "val/loss", "val/acc")


def make_wandb_logger(cfg: DictConfig, out_dir: Path) -> WandbLogger | None:
    wcfg = cfg.logger.wandb
    mode, why = tracking.wandb_mode(wcfg.mode)
    if mode == "disabled":
        return None
    import wandb

    tags = [f"norm:{cfg.norm.kind}", f"model:{cfg.model.name}", f"data:{cfg.data.name}",
            f"bs:{cfg.data.batch_size}", *wcfg.tags]
    # Flat keys to group and filter by in the W&B workspace; the whole resolved config under "cfg".
    config = {"norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name,
              "batch_size": cfg.data.batch_size, "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
              "experiment": cfg.experiment_name, "identity": tracking.identity(cfg),
              "cfg": tracking.redact(OmegaConf.to_container(cfg, resolve=True))}

    def attempt(m: str) -> WandbLogger:
        # The id derives from the run's identity and resume="allow": a relaunched run continues
        # the same W&B run (offline: one offline-run-* directory per attempt, same id).
        logger = WandbLogger(project=wcfg.project, entity=wcfg.entity, name=cfg.run_name, group=wcfg.group,
                             tags=tags, save_dir=str(out_dir), mode=m, config=config,
                             # A W&B agent chooses the run id itself (WANDB_RUN_ID).
                             id=None if os.environ.get("WANDB_SWEEP_ID") else tracking.wandb_run_id(cfg),
                             resume="allow",
                             settings=wandb.Settings(init_timeout=wcfg.init_timeout, silent=True))
        argv, sys.argv = sys.argv, tracking.scrub_argv(sys.argv)  # W&B records the command line
        try:
            run = logger.experiment  # start the run now, so a failure is caught here
        finally:
            sys.argv = argv
        run.define_metric("epoch")
        for key in EPOCH_METRICS:  # epoch-level curves use epochs on the x-axis
            run.define_metric(key, step_metric="epoch")
        return logger

    try:
        logger = attempt(mode)
    except Exception as err:  # noqa: BLE001 - W&B never fails the run: offline, else CSV only
        wandb.finish()
        if mode != "online":
            print(f"W&B: could not start ({type(err).__name__}: {tracking.scrub(str(err))}); logging to CSV only", flush=True)
            return None
        why = f"online start failed ({type(err).__name__}); falling back to offline"
        mode, logger = "offline", attempt("offline")
    print(f"W&B: {mode} ({why}); run dir {Path(logger.experiment.dir).parent}", flush=True)
    return logger


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def resolve_precision(precision):
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_trainer(cfg: DictConfig, out_dir: Path, loggers: list, callbacks: list, **fixed) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["precision"] = resolve_precision(kwargs.get("precision", "auto"))
    kwargs.setdefault("benchmark", cfg.perf.cudnn_benchmark)  # trainer.benchmark, if given, wins
    valid = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger", "callbacks", *fixed}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown Trainer argument(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return pl.Trainer(**kwargs, **fixed, logger=loggers, callbacks=callbacks, default_root_dir=str(out_dir))


def activation_mib(net: torch.nn.Module, dm, batch_size: int) -> float:
    """What a training batch's activations cost (models.activation_bytes), in MiB, measured on
    a copy of the model (bn's running statistics untouched) without drawing from the run's RNG."""
    import copy

    with torch.random.fork_rng(devices=[]):
        x = torch.randn(batch_size, dm.in_channels, dm.image_size, dm.image_size)
        return models.activation_bytes(copy.deepcopy(net).train(), x) / 2**20


def normalization_batch(cfg: DictConfig, world_size: int) -> int:
    """How many samples a norm's statistics average over: bn the per-device batch, its virtual
    batches, or (norm.sync) the batches of all processes; the other norms one sample."""
    if cfg.norm.kind != "bn":
        return 1
    if cfg.norm.get("sync"):
        return cfg.data.batch_size * world_size
    return min(cfg.norm.get("virtual_batch_size") or cfg.data.batch_size, cfg.data.batch_size)


def set_threads(cfg: DictConfig, hydra_cfg) -> None:
    """num_threads=auto: torch's default for one run; under hydra/launcher=joblib the cores
    shared among the n_jobs parallel jobs; under a submitit launcher its cpus_per_task. Runs in
    parallel that each take every core slow down many times over (measured: 1 epoch of a
    small run took 77 s instead of ~3 s with two 2-thread jobs on 2 cores)."""
    threads = cfg.num_threads
    if threads == "auto":
        launcher = hydra_cfg.get("launcher") or {}
        target = str(launcher.get("_target_", ""))
        if "joblib" in target and launcher.get("n_jobs"):
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


def check_config(cfg: DictConfig) -> None:
    """Reject impossible values before anything is loaded or trained, naming what was typed."""
    def positive(key, value, kind=numbers.Real):
        if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
            what = "a positive integer" if kind is numbers.Integral else "a positive number"
            raise ValueError(f"{key} must be {what}, got {value!r}")

    positive("data.batch_size", cfg.data.batch_size, numbers.Integral)
    positive("optim.lr", cfg.optim.lr)
    positive("optim.base_batch_size", cfg.optim.base_batch_size, numbers.Integral)
    positive("trainer.max_epochs", cfg.trainer.max_epochs, numbers.Integral)
    if cfg.optim.lr_scaling not in LR_SCALINGS:
        raise ValueError(f"optim.lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {cfg.optim.lr_scaling!r}")
    if cfg.trainer.get("sync_batchnorm"):
        raise ValueError("trainer.sync_batchnorm=true would convert NormLab's bn layers to nn.SyncBatchNorm, which "
                         "loses the ViT token layout and ghost batches and refuses CPU tensors; use norm.sync=true")
    if cfg.norm.kind == "bn" and cfg.data.batch_size == 1:
        raise ValueError("norm=bn with data.batch_size=1: batch statistics of one sample per device are "
                         "undefined; use a batch size of at least 2, or ln, in or gn")


def ddp_children_run_this_job(out_dir: Path) -> None:
    """Make the processes Lightning's DDP launcher starts train this job, in this directory.

    Lightning starts them by re-running this script with `sys.argv` plus
    `hydra.run.dir=<HydraConfig run.dir>`. Under `-m` that argv is the whole sweep (each child
    would start a multirun of its own), and the run dir template is not the sweep job's
    directory. So the children get this job's overrides and this job's directory.
    """
    hydra_cfg = HydraConfig.instance().cfg.hydra
    sys.argv = [sys.argv[0], *hydra_cfg.overrides.task]
    with open_dict(hydra_cfg), read_write(hydra_cfg):
        hydra_cfg.run.dir = str(out_dir)


def run(cfg: DictConfig, out_dir: Path, rank_zero: bool = True) -> dict:
    """Train and test one configuration; returns the summary written to out_dir/summary.json.

    In every DDP process but global rank 0 (`rank_zero=False`) it trains its share and writes
    nothing: no summary, no CSV or W&B run, no checkpoint.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    launch_env, argv = tracking.ddp_launch_environment(), list(sys.argv)
    summary = {
        "status": "running", "norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name,
        "batch_size": cfg.data.batch_size, "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
        "run_name": cfg.run_name, "experiment": cfg.experiment_name, "identity": tracking.identity(cfg),
        "output_dir": str(out_dir),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": tracking.redact(OmegaConf.to_container(cfg, resolve=True)),
    }
    wandb_logger = None
    module = None
    trainer = None
    try:
        check_config(cfg)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = datasets.build(cfg.data)
        dm.setup()  # reads and checks the data files now, before anything else starts
        net = models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
        summary["num_params"] = sum(p.numel() for p in net.parameters())
        summary["activation_mib"] = activation_mib(net, dm, cfg.data.batch_size)

        if cfg.logger.get("wandb") is not None and rank_zero:
            wandb_logger = make_wandb_logger(cfg, out_dir)
        # Resume a run that stopped part-way: from its last checkpoint, keeping its logs.
        ckpt = out_dir / "checkpoints" / "last.ckpt"
        resume_step = None
        if ckpt.is_file():
            resume_step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
            summary["resumed_from"] = {"checkpoint": str(ckpt), "global_step": resume_step}
            if rank_zero:
                print(f"resuming {cfg.run_name} from {ckpt} (step {resume_step})", flush=True)
        else:
            ckpt = None
        loggers = []
        if rank_zero:
            csv_logger = tracking.ResumableCSVLogger(out_dir, resume_step)
            loggers = [csv_logger] + ([wandb_logger] if wandb_logger else [])
            summary["csv_log"] = str(Path(csv_logger.log_dir) / "metrics.csv")
        if wandb_logger:
            summary["wandb"] = {"id": wandb_logger.experiment.id, "dir": str(Path(wandb_logger.experiment.dir).parent),
                                "mode": wandb_logger.experiment.settings.mode}
        callbacks = [EpochReport(), StopOnSignal()]
        if cfg.progress_bar == "auto" and not sys.stdout.isatty():
            callbacks.append(TQDMProgressBar(refresh_rate=0))  # logs and CI get the epoch lines instead
        elif cfg.progress_bar:
            callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar_refresh))
        if cfg.checkpoint.enabled:  # last in the list: it saves what the callbacks above recorded
            callbacks.append(LastCheckpoint(out_dir / "checkpoints" / "last.ckpt", cfg.checkpoint.every_n_steps))
        trainer = make_trainer(cfg, out_dir, loggers, callbacks, enable_checkpointing=False)

        # The learning rate follows the optimisation batch (per device x devices x accumulation).
        opt_batch = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        lr = cfg.optim.lr * LR_SCALINGS[cfg.optim.lr_scaling](opt_batch / cfg.optim.base_batch_size)
        summary.update(lr=lr, base_lr=cfg.optim.lr, per_device_batch_size=cfg.data.batch_size, torch_threads=torch.get_num_threads(),
                       world_size=trainer.world_size, optimization_batch_size=opt_batch,
                       normalization_batch_size=normalization_batch(cfg, trainer.world_size),
                       accelerator=trainer.accelerator.__class__.__name__.replace("Accelerator", "").lower(),
                       precision=str(trainer.precision))
        if wandb_logger:  # the three batch sizes, to group and filter by in the W&B workspace
            wandb_logger.experiment.config.update({k: summary[k] for k in BATCH_KEYS}, allow_val_change=True)
        module = Classifier(net, cfg.optim, lr, channels_last=cfg.perf.channels_last, compile=cfg.perf.compile)

        if trainer.world_size > 1 and rank_zero and HydraConfig.initialized():
            ddp_children_run_this_job(out_dir)
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
        summary["train_seconds"] = module.fit_seconds + module._fit_elapsed()
        test = trainer.test(module, datamodule=dm, verbose=False)[0]

        history = module.history
        val = [row["val/acc"] for row in history]
        best = max(range(len(val)), key=val.__getitem__) if val else None
        ips = [row["images_per_second"] for row in history if row.get("images_per_second")]
        summary.update(
            status="completed", epochs_completed=len(history),
            best_val_acc=val[best] if val else None, best_epoch=history[best]["epoch"] if val else None,
            final_val_acc=val[-1] if val else None, test_acc=test["test/acc"], test_loss=test["test/loss"],
            images_per_second=sum(ips) / len(ips) if ips else None, history=history,
        )
        if wandb_logger:
            wandb_logger.experiment.summary.update(
                {k: summary[k] for k in ("best_val_acc", "final_val_acc", "test_acc", "images_per_second", "num_params")})
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
    except BaseException as err:
        summary.update(status="failed", error=tracking.scrub(f"{type(err).__name__}: {err}"))
        if module is not None:
            summary["history"] = module.history
        raise
    finally:
        summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        summary["wall_seconds"] = time.time() - started
        if rank_zero:
            tracking.write_json(out_dir / tracking.SUMMARY_FILE, summary)
        tracking.end_ddp(launch_env if rank_zero else None)
        sys.argv = argv  # ddp_children_run_this_job rewrote it for this job's child processes
        if wandb_logger is not None:
            import wandb

            wandb.finish(exit_code=0 if summary["status"] == "completed" else 1)


# Errors a user can cause by what they typed or where their files are: one readable line,
# not a traceback (HYDRA_FULL_ERROR=1 shows the traceback).
USER_ERRORS = (ValueError, FileNotFoundError, OmegaConfBaseException, InstantiationException)
FAILED_RUNS: list[str] = []  # jobs of a multirun that failed, reported when the sweep ends


def train_other_rank(cfg: DictConfig, out_dir: Path) -> None:
    """A DDP process other than global rank 0 (started by Lightning's launcher, or a SLURM or
    torchrun task): trains its share; rank 0 holds the run lock and writes every output."""
    done = tracking.read_summary(out_dir)
    if done and done.get("status") == "completed":
        return None  # rank 0 (a SLURM task like this one) skips it too
    run(cfg, out_dir, rank_zero=False)
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    tracking.scrub_files((out_dir / hydra_cfg.output_subdir).glob("*.yaml") if hydra_cfg.output_subdir else [])
    try:
        set_threads(cfg, hydra_cfg)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    if not tracking.is_global_zero():
        return train_other_rank(cfg, out_dir)
    with tracking.RunLock(out_dir) as lock:
        if not lock.acquired:
            # Another launcher on the same sweep directory is training this run right now.
            print(f"{cfg.run_name}: skipping, being trained by another process (pid {lock.holder}) in {out_dir}", flush=True)
            if not multirun:
                sys.exit(3)
            return None
        done = tracking.read_summary(out_dir)
        if done and done.get("status") == "completed":
            # Same config, same directory: a relaunched sweep skips what it already did.
            print(f"{cfg.run_name}: already completed, test accuracy {done['test_acc']:.2%}; "
                  f"skipping (delete {out_dir} to train it again)", flush=True)
            return done["test_acc"]
        try:
            summary = run(cfg, out_dir)
        except USER_ERRORS as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {tracking.scrub(str(err))}", file=sys.stderr, flush=True)
            if not multirun:
                sys.exit(2)
            FAILED_RUNS.append(f"{cfg.run_name}: {tracking.scrub(str(err))}")
            return None
    if summary["status"] == "diverged":
        print(f"{cfg.run_name}: diverged ({summary['error']}); summary in {out_dir}", flush=True)
        return None
    print(f"{cfg.run_name}: test accuracy {summary['test_acc']:.2%} "
          f"(best val {summary['best_val_acc']:.2%}); outputs in {out_dir}", flush=True)
    return summary["test_acc"]


if __name__ == "__main__":
    main()
    if FAILED_RUNS:
        print(f"{len(FAILED_RUNS)} run(s) of the sweep failed:\n  " + "\n  ".join(FAILED_RUNS), file=sys.stderr)
        sys.exit(1)
