"""Adaptive gradient clipping (Brock et al. 2021, "High-Performance Large-Scale Image Recognition
Without Normalization"; timm's utils/agc.py): optim.agc_clip=<lambda>.

Unit-wise, each output unit of a weight (its row along dim 0; the whole tensor for a bias, a gain
or a scalar) on its own: where ||G_i|| / max(||W_i||, 1e-3) > lambda, the unit's gradient is
scaled to norm lambda * max(||W_i||, 1e-3):
    G_i <- lambda * max(||W_i||, 1e-3) / max(||G_i||, 1e-6) * G_i.
Every parameter but the classifier's (the network's last Linear layer) is clipped: the NFNets
paper finds clipping the final layer hurts, and timm's training script leaves the head out too.
Applied to the gradients an optimizer step is about to use (after unscaling, after
accumulation): harness/module.py's Classifier and harness/packed/loop.py's optimize.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

WEIGHT_FLOOR = 1e-3  # ||W_i|| is at least this: a unit initialised at zero can still move
GRAD_FLOOR = 1e-6


def unitwise_norm(t: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each output unit (dim 0) of a tensor of 2 or more dims, kept broadcastable;
    of the whole tensor for one of 0 or 1 dims."""
    if t.dim() <= 1:
        return torch.linalg.vector_norm(t)
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim())), keepdim=True)


@torch.no_grad()
def clip_(params: Iterable[nn.Parameter], clip: float) -> None:
    """Clip the gradients of `params` in place, unit-wise, at ratio `clip` (lambda)."""
    for p in params:
        if p.grad is None:
            continue
        max_norm = unitwise_norm(p.detach().float()).clamp_min(WEIGHT_FLOOR) * clip
        grad_norm = unitwise_norm(p.grad.float())
        scale = torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp_min(GRAD_FLOOR), 1.0)
        p.grad.mul_(scale.to(p.grad.dtype))


def clipped_parameters(net: nn.Module) -> list[nn.Parameter]:
    """Every parameter of the network but its classifier's (its last nn.Linear)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    head = {id(p) for p in linears[-1].parameters()} if linears else set()
    return [p for p in net.parameters() if id(p) not in head]


def clipper(net: nn.Module, clip: float | None) -> Callable[[], None] | None:
    """The clipping of `net`'s gradients at optim.agc_clip (None when it is null: off). Reads
    the parameters each call, so a network whose parameters are replaced (a packed run's, when
    its pack is restacked) is clipped as it is now."""
    if clip is None:
        return None
    return lambda: clip_(clipped_parameters(net), float(clip))
