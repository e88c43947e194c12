"""K networks of one architecture trained as one: their parameters and buffers stacked along a
new first dimension, each member's own network a view into the stack.

`Stack(nets)` keeps the members' nn.Modules: member k's parameters and buffers become views of
row k of the stacked tensors, so a member is an ordinary network for everything done to one
run (its optimizer, its checkpoint, PreciseBN, evaluation) while the training step runs all of
them at once: torch.func.functional_call of the architecture on the stacked state, vectorized
over the members with torch.func.vmap, turns K small models into the kernels of one model K
times wider. The gradient of the sum of the members' losses is each member's own gradient
(the members share nothing), and it lands in row k of the stacked gradient, which member k's
parameters take as their .grad (a view, no copy). A batch-statistics norm's running statistics
are updated in place in the stacked buffers: each member's own.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, vmap


def _owner(net: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, leaf = name.split(".")
    module = net
    for part in path:
        module = getattr(module, part)
    return module, leaf


class Stack:
    """The members' networks, stacked. `forward(x)` takes (K, B, ...) inputs (or, with
    `shared=True`, one (B, ...) batch every member sees) and returns (K, B, ...) outputs."""

    def __init__(self, nets: list[nn.Module]):
        self.nets = list(nets)
        self.base = copy.deepcopy(self.nets[0]).to("meta")  # the architecture; its state comes from the stack
        names = [n for n, _ in self.nets[0].named_parameters()]
        buffers = [n for n, b in self.nets[0].named_buffers() if b is not None]
        with torch.no_grad():
            self.params = {n: torch.stack([dict(net.named_parameters())[n] for net in self.nets]).requires_grad_()
                           for n in names}
            self.buffers = {n: torch.stack([dict(net.named_buffers())[n] for net in self.nets]) for n in buffers}
        # (stacked name, [(module, attribute) of member k for each k]): where each row lives
        self._slots = [(n, [_owner(net, n) for net in self.nets]) for n in names]
        for n, owners in self._slots:  # member k's parameters: views of row k, sharing storage
            for k, (module, leaf) in enumerate(owners):
                module._parameters[leaf] = nn.Parameter(self.params[n].detach()[k])
        for n in buffers:
            for k, net in enumerate(self.nets):
                module, leaf = _owner(net, n)
                module._buffers[leaf] = self.buffers[n][k]

    def __len__(self) -> int:
        return len(self.nets)

    def train(self, mode: bool = True) -> Stack:
        self.base.train(mode)
        for net in self.nets:
            net.train(mode)
        return self

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        def one(params, buffers, xi):
            return functional_call(self.base, (params, buffers), (xi,))
        return vmap(one, in_dims=(0, 0, None if shared else 0), randomness="different")(self.params, self.buffers, x)

    __call__ = forward

    def take_grads(self) -> None:
        """Give each member's parameters their row of the stacked gradient (views, no copy)."""
        for n, owners in self._slots:
            grad = self.params[n].grad
            for k, (module, leaf) in enumerate(owners):
                module._parameters[leaf].grad = None if grad is None else grad[k]

    def zero_grad(self) -> None:
        for stacked in self.params.values():
            stacked.grad = None
        for net in self.nets:
            for p in net.parameters():
                p.grad = None
