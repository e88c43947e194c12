"""An image-classification DataModule that holds the whole data set in memory as uint8.

Two pipelines (`data.pipeline`):
- "memory" (default): images are uint8 (N, C, H, W) tensors; a single-device run keeps each
  split on its device and gathers its batches there (data.device); batches are augmented and
  normalized on the device (`on_after_batch_transfer`), so there is no per-sample PIL
  decoding, no worker process and no copy between the data and the next step.
- "dataloader": torchvision's classic per-sample path, for comparison and for data that does
  not fit in memory: each image becomes a PIL image and goes through torchvision transforms
  (RandomCrop with padding, RandomHorizontalFlip, ToTensor, Normalize) in `data.num_workers`
  worker processes.
Both see the same images in the same order (`EpochSampler`); the random crops and flips are
drawn from different generators (memory: the run's own, data.device.augment_generator). The training order is a function of the run's seed and the
epoch only, and the DataModule's state (saved in every checkpoint) says how far into its epoch
a run got: a run resumed mid-epoch sees the rest of that epoch's images, in order, as an
uninterrupted run would. In the dataloader pipeline each image's crop and flip are drawn from
a generator seeded by (seed, epoch, position), so they do not depend on data.num_workers.
"""
from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .device import (
    DeviceLoader,
    DeviceSplit,
    apply_crop_flip,
    augment_generator,
    draw_crop_flip,
)
from .order import EpochSampler, _mix

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
        self.seed = None  # the run's seed (torch's, at setup): its training order and augmentation
        self._on_device: dict = {}  # (split, device) -> DeviceSplit
        self._augment_rng, self._augment_state = None, None

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (train_x, train_y, test_x, test_y); x uint8 (N, C, H, W), y int64 (N,)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        self.seed = torch.initial_seed()  # pl.seed_everything(cfg.seed) came first
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

    def device_split(self, split: str, device) -> DeviceSplit:
        """A split of the memory pipeline on `device`, moved there once."""
        self.setup()
        key = (split, str(torch.device(device)))
        if key not in self._on_device:
            self._on_device[key] = DeviceSplit(self._splits[split], device)
        return self._on_device[key]

    def _device(self):
        """The device of a single-process run whose batches are gathered there, or None (the
        dataloader pipeline, several processes, or no Trainer yet: a DataLoader serves them)."""
        trainer = self.trainer
        if self.pipeline != "memory" or trainer is None or trainer.world_size > 1:
            return None
        return trainer.strategy.root_device

    def _loader(self, split: str, batch_size: int, train: bool):
        """Every loader has its own generator: none draws from torch's global one, which only
        the model uses (and which checkpoints carry)."""
        self.setup()
        seed, device = self.seed, self._device()
        if device is not None:
            loader = DeviceLoader(self.device_split(split, device), batch_size, seed if train else None, drop_last=train)
            sampler = loader.sampler
        else:
            sampler = EpochSampler(len(self._splits[split]), seed, sample_seeds=self.pipeline != "memory") if train else None
        if train and self._resume is not None:
            sampler.resume(*self._resume)
            self._resume = None
        if device is not None:
            return loader
        return DataLoader(self._splits[split], batch_size=batch_size, sampler=sampler, drop_last=train,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pipeline != "memory" and torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(_mix(seed, SPLITS.index(split))))

    def train_dataloader(self):
        return self._loader("train", self.batch_size, train=True)

    def batches(self, split: str, batch_size: int, device, seed: int | None = None, drop_last: bool = False,
                limit: int | None = None, rng: torch.Generator | None = None):
        """Batches of a split on `device`, as the model sees them: in the training order of `seed`
        (its first epoch), else in order; augmented from the generator `rng` when one is given.
        What the evaluations after training read (harness.evaluation), for a run alone or in a
        pack (each member with its own seed)."""
        self.setup()
        if self.pipeline == "memory":
            source = DeviceLoader(self.device_split(split, device), batch_size, seed, drop_last)
        else:
            source = DataLoader(self._splits[split], batch_size=batch_size, drop_last=drop_last,
                                sampler=EpochSampler(len(self._splits[split]), seed, sample_seeds=True) if seed is not None
                                else None, num_workers=self.num_workers)
        for i, (x, y) in enumerate(source):
            if limit is not None and i >= limit:
                return
            x, y = x.to(device), y.to(device)
            draws = (draw_crop_flip(len(y), self.crop_padding, self.hflip, x.device, rng)
                     if rng is not None and self.augment else None)
            yield self.preprocess((x, y), train=rng is not None, draws=draws)

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
        state = {"epoch": trainer.current_epoch, "samples_done": done * self.batch_size}
        if self._augment_rng is not None:
            state["augment_rng"] = self._augment_rng.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        if state.get("epoch") is not None:
            self._resume = (state["epoch"], state["samples_done"])
        self._augment_state = state.get("augment_rng")

    def augment_rng(self, device) -> torch.Generator:
        """The run's augmentation generator on `device` (resumed from a checkpoint's state)."""
        if self._augment_rng is None or self._augment_rng.device != torch.device(device):
            self.setup()
            self._augment_rng = augment_generator(self.seed, device)
            if self._augment_state is not None:
                self._augment_rng.set_state(self._augment_state)
                self._augment_state = None
        return self._augment_rng

    def val_dataloader(self):
        return self._loader("val", self.eval_batch_size, train=False)

    def test_dataloader(self):
        return self._loader("test", self.eval_batch_size, train=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        return self.preprocess(batch, train=self.trainer is not None and self.trainer.training)

    def preprocess(self, batch, train: bool, draws=None):
        """A batch on its device, as the model sees it: uint8 to float, augmented when `train`
        (and data.augment) with the run's generator (or the given `draws`: data.device's
        draw_crop_flip for these images), normalized. The dataloader pipeline did all this in its
        workers."""
        if self.pipeline != "memory":
            return batch
        x, y = batch
        x = x.float().div_(255)
        if self.augment and train:
            if draws is None:
                draws = draw_crop_flip(x.shape[0], self.crop_padding, self.hflip, x.device, self.augment_rng(x.device))
            x = apply_crop_flip(x, self.crop_padding, *draws)
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
