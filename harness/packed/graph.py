"""perf.cuda_graphs=true: a pack's training step captured once in a CUDA graph and replayed.

What the graph holds (PyTorch's whole-network capture with torch.cuda.graph, at the step's static
shapes): the gather of every member's batch from the split on the device (its indices copied in
each step), the augmentation (its random draws made outside, from each member's generator, and
copied in), normalization, the stacked forward and the backward, with the running-statistics
updates of every batch-statistics norm (in place in the stacked buffers: the graph replays
them). Each member's optimizer step, its learning-rate schedule and the logging stay outside
(torch.optim's learning rates change every step; they are Python numbers a graph would freeze).
A GPU-only path: on a CPU the config refuses it in one line, and a run records whether its
graph was used (`cuda_graphs` in summary.json).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from data.device import apply_crop_flip, draw_crop_flip


def why_not(members) -> str | None:
    """Why this pack's step cannot be captured, or None."""
    for m in members:
        for module in m.net.modules():
            if getattr(module, "running_mean", None) is not None and getattr(module, "momentum", 0.1) is None:
                return "a norm with momentum=null counts its batches on the host (float(num_batches_tracked))"
    return None


class GraphStep:
    """The captured step of a pack. `run(idx, draws)` replays it for this step's indices (K, B)
    and augmentation draws; returns each member's loss (K,) and logits, static tensors the next
    replay overwrites."""

    def __init__(self, pack, batch_size: int, augment: bool):
        self.pack, self.augment = pack, augment and pack.dm.augment
        k, device = len(pack.alive), pack.device
        self.idx = torch.zeros(k, batch_size, dtype=torch.long, device=device)
        draws = draw_crop_flip(k * batch_size, pack.dm.crop_padding, pack.dm.hflip, device) if self.augment else None
        self.draws = [d.clone() if d is not None else None for d in draws] if draws else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # PyTorch's capture recipe: warm up on a side stream first
            for _ in range(3):
                self._body()
                self._zero()
        torch.cuda.current_stream().wait_stream(side)
        self._zero()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.losses, self.logits = self._body()

    def _zero(self):
        for m in self.pack.alive:
            m.net.zero_grad(set_to_none=True)
        if self.pack.stack is not None:
            self.pack.stack.zero_grad()

    def _body(self):
        pack = self.pack
        split, dm = pack.split, pack.dm
        x, y = split.x[self.idx], split.y[self.idx]
        k, b = self.idx.shape
        x = x.flatten(0, 1).float().div(255)
        if self.draws is not None:
            x = apply_crop_flip(x, dm.crop_padding, *self.draws)
        mean, std = dm._normalization(x.device)
        x = ((x - mean) / std).view(k, b, *x.shape[1:])
        with pack.autocast():
            logits = pack.alive[0].net(x[0]).unsqueeze(0) if pack.stack is None else pack.stack(x)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(k, b).mean(1)
        losses.sum().backward()
        return losses, logits

    def run(self, idx: torch.Tensor, draws) -> tuple[torch.Tensor, torch.Tensor]:
        self.idx.copy_(idx)
        if self.draws is not None:
            for static, value in zip(self.draws, draws):
                if static is not None:
                    static.copy_(value)
        self.graph.replay()
        if self.pack.stack is not None:
            self.pack.stack.take_grads()
        return self.losses, self.logits
