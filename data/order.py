"""The training order: a permutation of the training set per epoch that depends on a run's
seed and the epoch only, and where an interrupted run resumes in it."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence mixes them well)."""
    import numpy as np

    return int(np.random.SeedSequence([v % 2**32 for v in values]).generate_state(2, np.uint64)[0] >> 1)


class EpochSampler(Sampler):
    """The training order: a permutation of the training set per epoch that depends on the
    seed and the epoch only (Lightning calls `set_epoch`, under DDP through its sampler
    wrapper). `resume(epoch, samples)` skips the samples an interrupted run had trained on in
    that epoch. With `sample_seeds`, it yields (index, seed) pairs for per-sample augmentation."""

    def __init__(self, n: int, seed: int, sample_seeds: bool = False):
        self.n, self.seed, self.sample_seeds = n, seed, sample_seeds
        self.epoch, self._resume = 0, None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, samples: int) -> None:
        self._resume = (epoch, samples)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch))).tolist()
        start = 0
        if self._resume is not None:
            epoch, samples = self._resume
            start = samples if epoch == self.epoch and samples < self.n else 0
            self._resume = None
        if self.sample_seeds:
            return iter([(i, _mix(self.seed, self.epoch, pos)) for pos, i in enumerate(order)][start:])
        return iter(order[start:])
