"""Train one configuration: python train.py norm=gn model=resnet20 data.batch_size=8

Hydra composes the config in conf/, this file wires norms/, models/ and data/ together,
PyTorch Lightning trains, W&B (online or offline) and a CSV file log the curves, and
summary.json in the run directory records the result.
"""
from __future__ import annotations

import inspect
import json
import math
import os
import socket
import sys
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

import hydra
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger, WandbLogger

import data as datasets
import models
import norms

# A short random id, drawn once per config (Hydra copies resolver caches to every job of a
# sweep), so run directories started in the same second never collide.
OmegaConf.register_new_resolver("uid", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True)

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")

LR_SCALINGS = {"linear": lambda r: r, "sqrt": math.sqrt, "none": lambda r: 1.0}


# ---------------------------------------------------------------------------------------
# The LightningModule
# ---------------------------------------------------------------------------------------
class Classifier(pl.LightningModule):
    """Cross-entropy classification with SGD/AdamW and a warmup + cosine schedule."""

    def __init__(self, net: torch.nn.Module, optim: DictConfig, lr: float):
        super().__init__()
        self.net, self.optim_cfg, self.lr = net, optim, lr
        self.history: list[dict] = []  # one row per completed epoch
        self._eval = {"correct": 0, "loss": 0.0, "count": 0}

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(y))
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    # Evaluation sums exact counts over the whole split rather than averaging batch means.
    def _eval_step(self, batch):
        x, y = batch
        logits = self(x)
        self._eval["loss"] += F.cross_entropy(logits, y, reduction="sum").item()
        self._eval["correct"] += (logits.argmax(1) == y).sum().item()
        self._eval["count"] += len(y)

    def _eval_end(self, split: str) -> dict:
        n = max(self._eval["count"], 1)
        result = {f"{split}/loss": self._eval["loss"] / n, f"{split}/acc": self._eval["correct"] / n}
        self._eval = {"correct": 0, "loss": 0.0, "count": 0}
        self.log_dict(result)
        return result

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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.images += len(batch[1])
        if batch_idx + 1 == trainer.num_training_batches:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        ips = self.images / max((self.t1 or time.perf_counter()) - self.t0, 1e-9)
        pl_module.log("train/images_per_second", ips)
        m = {k: float(v) for k, v in trainer.callback_metrics.items()}
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


# ---------------------------------------------------------------------------------------
# W&B: online when possible, offline otherwise, never hanging or failing the run
# ---------------------------------------------------------------------------------------
def _wandb_key_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(requested: str) -> tuple[str, str]:
    """Decide the W&B mode before wandb.init, so an offline machine never waits on retries."""
    if requested in ("online", "offline", "disabled"):
        return requested, f"logger.wandb.mode={requested}"
    if requested != "auto":
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled, got {requested!r}")
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"], "WANDB_MODE is set"
    if not _wandb_key_present():
        return "offline", "no W&B API key (run `wandb login` to log online)"
    base_url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if not _reachable(base_url):
        return "offline", f"{urlparse(base_url).hostname} is not reachable"
    return "online", "logged in"


def make_wandb_logger(cfg: DictConfig, out_dir: Path) -> WandbLogger | None:
    wcfg = cfg.logger.wandb
    mode, why = wandb_mode(wcfg.mode)
    if mode == "disabled":
        return None
    import wandb

    tags = [f"norm:{cfg.norm.kind}", f"model:{cfg.model.name}", f"data:{cfg.data.name}",
            f"bs:{cfg.data.batch_size}", *wcfg.tags]
    # Flat keys to group and filter by in the W&B workspace; the whole resolved config under "cfg".
    config = {"norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name,
              "batch_size": cfg.data.batch_size, "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
              "cfg": OmegaConf.to_container(cfg, resolve=True)}

    def attempt(m: str) -> WandbLogger:
        logger = WandbLogger(project=wcfg.project, entity=wcfg.entity, name=cfg.run_name, group=wcfg.group,
                             tags=tags, save_dir=str(out_dir), mode=m, config=config,
                             settings=wandb.Settings(init_timeout=wcfg.init_timeout, silent=True))
        logger.experiment  # start the run now, so a failure is caught here
        return logger

    try:
        logger = attempt(mode)
    except Exception as err:  # noqa: BLE001 - any W&B failure falls back to offline
        if mode != "online":
            raise
        wandb.finish()
        why = f"online start failed ({type(err).__name__}); falling back to offline"
        mode, logger = "offline", attempt("offline")
    print(f"W&B: {mode} ({why}); run dir {logger.experiment.dir}", flush=True)
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


def make_trainer(cfg: DictConfig, out_dir: Path, loggers: list, callbacks: list) -> pl.Trainer:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs["precision"] = resolve_precision(kwargs.get("precision", "auto"))
    valid = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self", "logger", "callbacks"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise ValueError(f"unknown Trainer argument(s) {unknown}; valid: {', '.join(sorted(valid))}")
    return pl.Trainer(**kwargs, logger=loggers, callbacks=callbacks, default_root_dir=str(out_dir))


def write_json(path: Path, obj: dict) -> None:
    """Write atomically: a crash never leaves a half-written file behind."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Train and test one configuration; returns the summary written to out_dir/summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary = {
        "status": "running", "norm": cfg.norm.kind, "model": cfg.model.name, "data": cfg.data.name,
        "batch_size": cfg.data.batch_size, "seed": cfg.seed, "epochs": cfg.trainer.max_epochs,
        "run_name": cfg.run_name, "output_dir": str(out_dir),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    wandb_logger = None
    module = None
    try:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        dm = datasets.build(cfg.data)
        net = models.build(cfg.model, cfg.norm, dm.in_channels, dm.num_classes, dm.image_size)
        summary["num_params"] = sum(p.numel() for p in net.parameters())

        if cfg.logger.get("wandb") is not None:
            wandb_logger = make_wandb_logger(cfg, out_dir)
        csv_logger = CSVLogger(str(out_dir), name="", version="")
        loggers = [csv_logger] + ([wandb_logger] if wandb_logger else [])
        summary["csv_log"] = str(Path(csv_logger.log_dir) / "metrics.csv")
        if wandb_logger:
            summary["wandb"] = {"id": wandb_logger.experiment.id, "dir": str(Path(wandb_logger.experiment.dir).parent),
                                "mode": wandb_logger.experiment.settings.mode}
        callbacks = [EpochReport()]
        if cfg.progress_bar == "auto" and not sys.stdout.isatty():
            callbacks.append(TQDMProgressBar(refresh_rate=0))  # logs and CI get the epoch lines instead
        elif cfg.progress_bar:
            callbacks.append(TQDMProgressBar(refresh_rate=cfg.progress_bar_refresh))
        if cfg.checkpoint:
            callbacks.append(ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0))
        trainer = make_trainer(cfg, out_dir, loggers, callbacks)

        # The learning rate follows the optimisation batch (per device x devices x accumulation).
        opt_batch = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches
        if cfg.optim.lr_scaling not in LR_SCALINGS:
            raise ValueError(f"optim.lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {cfg.optim.lr_scaling!r}")
        lr = cfg.optim.lr * LR_SCALINGS[cfg.optim.lr_scaling](opt_batch / cfg.optim.base_batch_size)
        summary.update(lr=lr, base_lr=cfg.optim.lr, optimization_batch_size=opt_batch,
                       accelerator=trainer.accelerator.__class__.__name__.replace("Accelerator", "").lower(),
                       precision=str(trainer.precision))
        module = Classifier(net, cfg.optim, lr)

        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        summary["train_seconds"] = time.perf_counter() - t0
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
    except BaseException as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}")
        if module is not None:
            summary["history"] = module.history
        raise
    finally:
        summary["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        summary["wall_seconds"] = time.time() - started
        write_json(out_dir / "summary.json", summary)
        if wandb_logger is not None:
            import wandb

            wandb.finish(exit_code=0 if summary["status"] == "completed" else 1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run(cfg, out_dir)
    print(f"{cfg.run_name}: test accuracy {summary['test_acc']:.2%} "
          f"(best val {summary['best_val_acc']:.2%}); outputs in {out_dir}", flush=True)
    return summary["test_acc"]


if __name__ == "__main__":
    main()
