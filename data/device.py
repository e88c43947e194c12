"""The in-memory data sets on the device, as airbench keeps CIFAR-10 on its GPU.

A split's uint8 tensor moves to the device once (`DeviceSplit`); a batch is an index gather
there, in the training order a run's seed and epoch give (`DeviceLoader`, the same order as
data.base.EpochSampler, whose state a checkpoint carries); augmentation and normalization
follow on the device. No DataLoader, no worker, no host-to-device copy per step. Several runs
of one pack gather their batches in one operation, each in its own order (`gather`).

Batch augmentation (random crop after zero padding, horizontal flip) draws from a generator
of the run's own (`augment_generator`), never from torch's global one, so a run's images are
the same whether it trains alone or in a pack, and a checkpoint carries the generator's state.
"""
from __future__ import annotations

import torch

from .order import EpochSampler, _mix

AUGMENT_STREAM = 3  # the stream of a run's seed its augmentation draws from (the splits' loaders use 0, 1, 2)


def augment_generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(_mix(seed, AUGMENT_STREAM))


def draw_crop_flip(n: int, pad: int, flip: bool, device, generator: torch.Generator | None = None):
    """The random draws of `apply_crop_flip` for n images: row and column offsets of the crop
    (n, 1, 1, 1) and the flip mask, in that order (None where unused)."""
    dy = dx = mask = None
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=device, generator=generator)
    if flip:
        mask = torch.rand(n, 1, 1, 1, device=device, generator=generator) < 0.5
    return dy, dx, mask


def apply_crop_flip(x: torch.Tensor, pad: int, dy, dx, mask) -> torch.Tensor:
    """Per-image crop of the zero-padded image at (dy, dx), then the flip where `mask`."""
    n, c, h, w = x.shape
    if dy is not None:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (dy + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(n, c, h, w + 2 * pad)
        cols = (dx + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(n, c, h, w)
        x = padded.gather(2, rows).gather(3, cols)
    if mask is not None:
        x = torch.where(mask, x.flip(3), x)
    return x


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random crop after zero padding, and random horizontal flip, in batch."""
    return apply_crop_flip(x, pad, *draw_crop_flip(x.shape[0], pad, flip, x.device, generator))


class DeviceSplit:
    """A split's images (uint8) and labels, on one device."""

    def __init__(self, dataset, device):
        x, y = dataset.tensors
        self.x, self.y = x.to(device), y.to(device)
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: torch.Tensor):
        return self.x[index], self.y[index]


class DeviceLoader:
    """Batches of a DeviceSplit as a DataLoader would give them: in the EpochSampler order of
    `seed` (training: drop_last) or in order (evaluation). Lightning finds the sampler as
    `loader.sampler` and sets its epoch, as for a DataLoader."""

    batch_sampler = None  # as a DataLoader's with a sampler, for Lightning's checks

    def __init__(self, split: DeviceSplit, batch_size: int, seed: int | None, drop_last: bool):
        self.split, self.batch_size, self.drop_last = split, batch_size, drop_last
        self.sampler = EpochSampler(len(split), seed) if seed is not None else None

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def indices(self) -> torch.Tensor:
        """This epoch's order on the device (the rest of it after a resume)."""
        order = list(self.sampler) if self.sampler is not None else range(len(self.split))
        return torch.as_tensor(order, dtype=torch.long).to(self.split.device)

    def __iter__(self):
        order = self.indices()
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield self.split[order[start:start + self.batch_size]]
