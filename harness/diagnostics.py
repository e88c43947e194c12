"""Why a norm wins or loses, measured during training at every norm site.

Every `diagnostics.every_n_steps` optimizer steps, for every norm layer of the network (the
sites of `none` too), from the layer's input in that step's forward pass:
- batch_mean_noise, batch_var_noise (norms with running statistics): how far the batch's
  statistics, over the samples the layer normalizes together (a ghost batch's own), are from
  the running ones: the mean over channels of |batch mean - running mean| / sqrt(running var
  + eps), and of |log(batch var / running var)|. Expected to grow as the batch shrinks
  (roughly as 1/sqrt(batch)).
- input_drift: how far the input's distribution moved since the previous measurement (the
  seed's "internal covariate shift", measured): the mean over channels of (|change of the
  per-channel mean| + |change of the per-channel standard deviation|) / the previous standard
  deviation, per-channel statistics over the batch and positions.
- input_std: the input's standard deviation; grad_norm: the L2 norm of the gradient of the
  layer's parameters (absent for layers without parameters). Together, the signal's scale by
  depth: what a network without normalization loses.
- saturation (dyt, derf: the layers with a `saturation(x)`): the fraction of the input's values
  the layer's tanh (erf) maps beyond 0.99 in absolute value, where it passes almost no gradient.
The sums stay on the device and are read once per epoch; the epoch's means go to the history
row (`norm_diagnostics`) and to the loggers as `diag/<layer>/<metric>`. The hooks read
detached inputs and draw no random numbers: training is the same with or without them.
"""
from __future__ import annotations

from functools import partial

import pytorch_lightning as pl
import torch

import norms

METRICS = ("batch_mean_noise", "batch_var_noise", "input_drift", "input_std", "grad_norm", "saturation")


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, C, *) from a norm's input: CNN maps already are; ViT tokens (N, L, C) are transposed."""
    return x.transpose(1, 2) if x.dim() == 3 else x


def norm_layers(net) -> list[tuple[str, "torch.nn.Module"]]:
    """(name, module) of every norm layer of a network (the sites of `none` too), in order."""
    return [(name, m) for name, m in net.named_modules() if norms.kind_of(m) is not None]


class NormStats:
    """One network's measurements over an epoch, without Lightning: `start()` hooks the layers
    (`layers`, the network the forward pass runs through) for the next forward pass,
    `grad_norms(layers)` adds the gradient norms of a network's layers (the same architecture:
    the one whose parameters have the gradients), `stop()`, then `epoch_means()` once an epoch.
    The sums stay on the device."""

    def __init__(self, layers: list, device):
        self._layers, self._handles = layers, []
        self._previous = [None] * len(layers)
        self.reset(device)

    def reset(self, device) -> None:
        self._sums = torch.zeros(len(self._layers), len(METRICS), device=device)
        self._counts = torch.zeros(len(self._layers), len(METRICS), device=device)
        self._pending, self._index = [], {}

    @property
    def device(self):
        return self._sums.device

    def start(self) -> None:
        """Measure the next forward pass. The hooks exist only for measured steps: a registered
        hook, even one that returns at once, puts every call of its module on PyTorch's slower
        path (measured: +0.2 to 1 ms a step on a GPU, BENCHMARKS.md)."""
        if not self._handles:
            self._handles = [m.register_forward_pre_hook(partial(self._measure, i))
                             for i, (_, m) in enumerate(self._layers)]

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._pending:
            self._flush()

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def _add(self, i: int, metric: str, value: torch.Tensor):
        self._pending.append((i * len(METRICS) + METRICS.index(metric), value))

    def _flush(self):
        """The step's measurements into the sums: one stack and two scatter-adds, not one small
        operation per value."""
        if not self._pending:
            return
        key = tuple(i for i, _ in self._pending)  # the same layers and metrics step after step: made once
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = torch.tensor(key).to(self._sums.device)
        values = torch.stack([v.reshape(()) for _, v in self._pending]).to(self._sums.dtype)
        self._sums.view(-1).index_add_(0, index, values)
        self._counts.view(-1).index_add_(0, index, torch.ones_like(values))
        self._pending = []

    @torch.no_grad()
    def _measure(self, i: int, module, args):
        if not module.training:
            return
        x = _channels_first(args[0].detach().float())
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dims, correction=0)  # the one pass over the input
        std = var.sqrt()
        self._add(i, "input_std", (var.mean() + mean.var(correction=0)).sqrt())  # the whole input's, from its channels
        previous = self._previous[i]
        if previous is not None:
            p_mean, p_std = previous
            self._add(i, "input_drift", (((mean - p_mean).abs() + (std - p_std).abs()) / p_std.clamp_min(1e-6)).mean())
        self._previous[i] = (mean, std)
        if hasattr(module, "saturation"):  # the point-wise norms (dyt, derf)
            self._add(i, "saturation", module.saturation(args[0].detach()))
        if getattr(module, "running_mean", None) is not None and norms.get(norms.kind_of(module)).batch_statistics:
            k = getattr(module, "example_group", None) or x.shape[0]  # a ghost batch's, bgn's k examples
            if k >= x.shape[0]:  # the whole batch: its statistics are the ones above
                n = x.numel() // x.shape[1]
                b_var, b_mean = var * (n / max(n - 1, 1)), mean  # unbiased, as the running variance
            else:  # a ghost batch normalizes its first k samples together
                b_var, b_mean = torch.var_mean(x[:k], dims, correction=1)
            r_var = module.running_var.float()
            self._add(i, "batch_mean_noise", ((b_mean - module.running_mean.float()).abs()
                                              / (r_var + module.eps).sqrt()).mean())
            self._add(i, "batch_var_noise", torch.log(b_var.clamp_min(1e-12) / r_var.clamp_min(1e-12)).abs().mean())

    def grad_norms(self, layers: list | None = None) -> None:
        """The L2 norm of each layer's parameter gradients (of `layers`: another network of the
        same architecture, whose parameters hold the gradients; by default the hooked ones)."""
        for i, (_, module) in enumerate(layers if layers is not None else self._layers):
            grads = [p.grad for p in module.parameters(recurse=False) if p.grad is not None]
            if grads:
                self._add(i, "grad_norm", torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])))

    def state(self) -> dict:
        """The epoch's sums so far and the last measurement of each layer (what input_drift
        compares with), for a checkpoint: a run resumed mid-epoch ends the epoch with the
        means of the run that never stopped."""
        self._flush()
        return {"sums": self._sums.cpu(), "counts": self._counts.cpu(),
                "previous": [None if p is None else torch.stack(p).cpu() for p in self._previous]}

    def load(self, state: dict) -> None:
        device = self.device
        self._sums, self._counts = state["sums"].to(device), state["counts"].to(device)
        self._previous = [None if p is None else (p[0].to(device), p[1].to(device)) for p in state["previous"]]

    def epoch_means(self) -> dict:
        """{layer: {metric: mean over the epoch's measurements}}: one read from the device."""
        self._flush()
        sums, counts = self._sums.tolist(), self._counts.tolist()
        out = {}
        for (name, _), s_row, c_row in zip(self._layers, sums, counts):
            out[name] = {m: s / c for m, s, c in zip(METRICS, s_row, c_row) if c}
        return out


def flat(means: dict) -> dict:
    """The epoch's means as the loggers take them: {"diag/<layer>/<metric>": value}."""
    return {f"diag/{layer}/{metric}": value for layer, row in means.items() for metric, value in row.items()}


class NormDiagnostics(pl.Callback):
    """NormStats over a Lightning run: every `every_n_steps` optimizer steps, the module's network."""

    def __init__(self, every_n_steps: int):
        self.every_n_steps = every_n_steps
        self.stats: NormStats | None = None

    def setup(self, trainer, pl_module, stage):
        if stage == "fit" and self.stats is None:
            self.stats = NormStats(norm_layers(pl_module.net), pl_module.device)
        if getattr(self, "_loaded", None) is not None and self.stats is not None:
            self.stats.load(self._loaded)
            self._loaded = None

    def state_dict(self) -> dict:  # in every checkpoint (Lightning's callback state)
        return self.stats.state() if self.stats is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        self._loaded = state_dict
        if self.stats is not None:
            self.stats.load(state_dict)
            self._loaded = None

    def teardown(self, trainer, pl_module, stage):
        if self.stats is not None:
            self.stats.stop()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.stats.device != pl_module.device:
            self.stats.reset(pl_module.device)
        if trainer.global_step % self.every_n_steps == 0:
            self.stats.start()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.stats.active:
            self.stats.grad_norms()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.stats.stop()

    def on_train_epoch_end(self, trainer, pl_module):
        means = self.stats.epoch_means()
        self.stats.reset(pl_module.device)
        pl_module.epoch_row()["norm_diagnostics"] = means
        if means and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**flat(means), "epoch": pl_module.epoch_number()}, step=trainer.global_step)
