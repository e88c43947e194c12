"""An image-classification DataModule that holds the whole data set in memory as uint8.

Two pipelines (`data.pipeline`):
- "memory" (default): images are uint8 (N, C, H, W) tensors; batches are augmented and
  normalized after they reach the device (`on_after_batch_transfer`), so there is no
  per-sample PIL decoding and no worker process between the data and the next step.
- "dataloader": torchvision's classic per-sample path, for comparison and for data that does
  not fit in memory: each image becomes a PIL image and goes through torchvision transforms
  (RandomCrop with padding, RandomHorizontalFlip, ToTensor, Normalize) in `data.num_workers`
  worker processes.
Both see the same images in the same order (`EpochSampler`); the random crops and flips are
drawn from different generators. The training order is a function of the run's seed and the
epoch only, and the DataModule's state (saved in every checkpoint) says how far into its epoch
a run got: a run resumed mid-epoch sees the rest of that epoch's images, in order, as an
uninterrupted run would. In the dataloader pipeline each image's crop and flip are drawn from
a generator seeded by (seed, epoch, position), so they do not depend on data.num_workers.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset

DEFAULT_ROOT = Path.home() / ".cache" / "normlab" / "data"  # where downloaded or unpacked data sets go
PIPELINES = ("memory", "dataloader")
SPLITS = ("train", "val", "test")


def seeded(item, get):
    """`get(i)` for a sampler's item: an index, or (index, seed) from EpochSampler(sample_seeds),
    in which case torchvision's random transforms (which draw from torch's global generator)
    draw from that seed."""
    i, seed = item if isinstance(item, tuple) else (item, None)
    if seed is None:
        return get(i)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get(i)


class PILImages(Dataset):
    """uint8 (N, C, H, W) images served one at a time as PIL images through torchvision transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.y)

    def _get(self, i):
        from PIL import Image

        img = self.x[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
        return self.transform(img), self.y[i]

    def __getitem__(self, item):
        return seeded(item, self._get)


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


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
    """Per-sample random crop after zero padding, and random horizontal flip, in batch."""
    n, c, h, w = x.shape
    if pad:
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * pad + 1, (n, 1, 1, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device).view(1, 1, h, 1)).expand(n, c, h, w + 2 * pad)
        cols = (dx + torch.arange(w, device=x.device).view(1, 1, 1, w)).expand(n, c, h, w)
        x = padded.gather(2, rows).gather(3, cols)
    if flip:
        mask = torch.rand(n, 1, 1, 1, device=x.device) < 0.5
        x = torch.where(mask, x.flip(3), x)
    return x


class ImageDataModule(pl.LightningDataModule):
    """Subclasses set the class attributes below and implement `load()`."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple
    crop_padding: int = 0
    hflip: bool = False

    def __init__(self, batch_size: int = 32, eval_batch_size: int = 256, val_size: int = 5000,
                 train_subset: int | None = None, augment: bool = True, split_seed: int = 0,
                 num_workers: int = 0, pipeline: str = "memory"):
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown data.pipeline {pipeline!r}; valid pipelines: {', '.join(PIPELINES)}")
        self.pipeline = pipeline
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{key} must be a positive integer, got {value!r}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_size, self.train_subset = val_size, train_subset
        self.augment, self.split_seed, self.num_workers = augment, split_seed, num_workers
        self._splits, self._resume = None, None

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (train_x, train_y, test_x, test_y); x uint8 (N, C, H, W), y int64 (N,)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        train_x, train_y, test_x, test_y = self.load()
        if not 0 < self.val_size < len(train_x):
            raise ValueError(f"data.val_size={self.val_size} must be between 1 and the training set size - 1 ({len(train_x) - 1})")
        # The validation split is fixed by split_seed, not by the run's seed, so every run of a
        # sweep is validated on the same images.
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[: self.val_size], order[self.val_size:]
        if self.train_subset is not None:
            train_idx = train_idx[: self.train_subset]
        if len(train_idx) < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the training set ({len(train_idx)} "
                "images): with drop_last=True no training batch would remain"
            )
        splits = {"train": (train_x[train_idx], train_y[train_idx]), "val": (train_x[val_idx], train_y[val_idx]),
                  "test": (test_x, test_y)}
        if self.pipeline == "memory":
            self._splits = {k: TensorDataset(*v) for k, v in splits.items()}
        else:
            self._splits = {k: PILImages(*v, self._transform(train=k == "train")) for k, v in splits.items()}

    def _transform(self, train: bool):
        from torchvision import transforms as T

        steps = []
        if train and self.augment:
            steps += [T.RandomCrop(self.image_size, padding=self.crop_padding)] if self.crop_padding else []
            steps += [T.RandomHorizontalFlip()] if self.hflip else []
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def dataset(self, split: str) -> Dataset:
        """The "train", "val" or "test" split, as the loaders serve it."""
        self.setup()
        return self._splits[split]

    def split_sizes(self) -> dict[str, int]:
        self.setup()
        return {k: len(v) for k, v in self._splits.items()}

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        """Every loader has its own generator: none draws from torch's global one, which only
        the model and the batch augmentation use (and which checkpoints carry)."""
        self.setup()
        seed = torch.initial_seed()  # the run's seed (pl.seed_everything)
        sampler = None
        if train:
            sampler = EpochSampler(len(self._splits[split]), seed, sample_seeds=self.pipeline != "memory")
            if self._resume is not None:
                sampler.resume(*self._resume)
                self._resume = None
        return DataLoader(self._splits[split], batch_size=batch_size, sampler=sampler, drop_last=train,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pipeline != "memory" and torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(_mix(seed, SPLITS.index(split))))

    def train_dataloader(self):
        return self._loader("train", self.batch_size, train=True)

    def eval_loader(self, split: str, batch_size: int, drop_last: bool = False) -> DataLoader:
        """A split in order, in batches of `batch_size` (evaluation at another batch size:
        harness.evaluation)."""
        self.setup()
        return DataLoader(self._splits[split], batch_size=batch_size, drop_last=drop_last, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(_mix(torch.initial_seed(), SPLITS.index(split))))

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the epoch and how many of its training samples this
        process has trained on (the batches whose optimizer step is done)."""
        trainer = self.trainer
        if trainer is None:
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "samples_done": done * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("epoch") is not None:
            self._resume = (state["epoch"], state["samples_done"])

    def val_dataloader(self):
        return self._loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.preprocess(batch, train=self.trainer is not None and self.trainer.training)

    def preprocess(self, batch, train: bool):
        """A batch on its device, as the model sees it: uint8 to float, augmented when `train`
        (and data.augment), normalized. The dataloader pipeline did all this in its workers."""
        if self.pipeline != "memory":
            return batch
        x, y = batch
        x = x.float().div_(255)
        if self.augment and train:
            x = random_crop_flip(x, self.crop_padding, self.hflip)
        mean, std = self._normalization(x.device)
        return (x - mean) / std, y

    def _normalization(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std as (1, C, 1, 1) tensors on `device`, made once: a tensor built from
        Python values on a GPU is a blocking host-to-device copy, which every step would wait on."""
        cached = getattr(self, "_norm_cache", None)
        if cached is None or cached[0].device != device:
            cached = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std))
            self._norm_cache = cached
        return cached
