"""data=imagefolder: a torchvision ImageFolder tree, `data.root` holding `train/` and `val/`
with one folder of images per class (ImageNet, Imagenette, Tiny-ImageNet, a user's own set).

Images are decoded from disk in `data.num_workers` worker processes (the per-sample
"dataloader" pipeline), with pinned memory on a GPU and persistent workers, through the
standard ImageNet transforms: RandomResizedCrop(crop_size) and a horizontal flip for training,
Resize(resize_size) and CenterCrop(crop_size) for evaluation, then ImageNet's mean and std.
`val/` is the test split (the number the GN paper reports); the validation split is
`data.val_size` images held out of `train/` by `data.split_seed`, as for every data set.

A missing `train/` or `val/`, a class folder without images, class folders that differ between
`train/` and `val/`, or an image that cannot be decoded is one line naming the path: a corrupt
file is never trained on as something else (PIL refuses truncated files, and they stay refused).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .base import ImageDataModule, seeded

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UnreadableImage(ValueError):
    """An image file that cannot be decoded. Raised in a DataLoader worker, it reaches the main
    process rebuilt from the worker's traceback text; str() keeps the one line that names the file."""

    def __str__(self) -> str:
        text = super().__str__()
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split(f"{type(self).__name__}: ", 1)[-1]


def _load_rgb(path: str):
    from PIL import Image

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")  # decodes the whole file now: a truncated one raises here
    except (OSError, ValueError) as err:
        raise UnreadableImage(f"data.root: cannot decode image {path} ({type(err).__name__}: {err})") from None


def check_decodable(paths) -> None:
    """Decode every image of a split (JPEGs at 1/8 scale, PIL's draft mode: about a millisecond
    each), so a corrupt file in val/ is one line before training, not after it."""
    from PIL import Image

    for path in paths:
        try:
            with open(path, "rb") as f:
                image = Image.open(f)
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()  # a truncated file raises here
        except (OSError, ValueError) as err:
            raise UnreadableImage(f"data.root: cannot decode image {path} ({type(err).__name__}: {err})") from None


def _count_images(folder: Path, seen: set, extensions: tuple) -> int:
    """The image files under `folder`, walked as ImageFolder walks (following directory links),
    refusing a directory reached twice: a link that loops back (ImageFolder would walk it until
    the path is too long, and train on thousands of copies under the wrong class) or that
    duplicates a folder of the tree."""
    count = 0
    for root, _, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            raise ValueError(f"data.root: {root} is {real} again (a directory link loops or duplicates part of the "
                             "tree); remove the link")
        seen.add(real)
        count += sum(1 for f in files if f.lower().endswith(extensions))
    return count


class Folder(Dataset):
    """Images of an ImageFolder at `indices` (all when None), each through `transform`; accepts
    EpochSampler's (index, seed) items."""

    def __init__(self, folder, transform, indices=None):
        self.folder, self.transform = folder, transform
        self.indices = list(range(len(folder))) if indices is None else [int(i) for i in indices]

    def __len__(self):
        return len(self.indices)

    def _get(self, i):
        path, label = self.folder.samples[self.indices[i]]
        return self.transform(_load_rgb(path)), label

    def __getitem__(self, item):
        return seeded(item, self._get)


class ImageFolderDataModule(ImageDataModule):
    name = "imagefolder"
    in_channels = 3
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, root: str, crop_size: int = 224, resize_size: int = 256, num_classes: int | None = None,
                 pipeline: str = "dataloader", num_workers: int = 8, val_size: int = 10000, **kwargs):
        # per-sample decoding in worker processes (the only pipeline for files on disk); 10,000
        # validation images held out of train/ (ImageNet has 1.28M)
        super().__init__(pipeline=pipeline, num_workers=num_workers, val_size=val_size, **kwargs)
        if self.pipeline != "dataloader":
            raise ValueError(f"data=imagefolder decodes images in worker processes: data.pipeline must be "
                             f"dataloader, got {self.pipeline!r}")
        if resize_size < crop_size:
            raise ValueError(f"data.resize_size={resize_size} must be at least data.crop_size={crop_size}")
        self.root = Path(root).expanduser()
        self.image_size, self.resize_size = crop_size, resize_size
        self._num_classes = num_classes

    @property
    def num_classes(self) -> int:
        """data.num_classes, else the number of class folders in train/ (read from disk)."""
        if self._num_classes is None:
            self._num_classes = len(self._classes(self._split_dir("train")))
        return self._num_classes

    def _split_dir(self, split: str) -> Path:
        path = self.root / split
        if not path.is_dir():
            raise FileNotFoundError(f"data.root={self.root}: no {split}/ folder ({path}); an ImageFolder tree has "
                                    f"train/<class>/<image> and val/<class>/<image>")
        return path

    @staticmethod
    def _classes(path: Path) -> list[str]:
        classes = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise FileNotFoundError(f"data.root: {path} has no class folders")
        return classes

    def _folder(self, split: str, classes: list[str] | None = None):
        from torchvision.datasets import ImageFolder
        from torchvision.datasets.folder import IMG_EXTENSIONS

        path = self._split_dir(split)
        found = self._classes(path)
        if classes is not None and found != classes:
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            raise ValueError(f"data.root: the class folders of {path} differ from train/'s (missing: {missing[:5]}, "
                             f"not in train/: {extra[:5]})")
        seen, images = {os.path.realpath(path)}, 0
        for name in found:
            folder = path / name
            count = _count_images(folder, seen, IMG_EXTENSIONS)
            if not count:
                raise FileNotFoundError(f"data.root: class folder {folder} holds no images "
                                        f"({', '.join(IMG_EXTENSIONS)})")
            images += count
        dataset = ImageFolder(str(path), loader=_load_rgb)  # it follows directory links
        if len(dataset.samples) != images:
            raise ValueError(f"data.root: {path} holds {images} images but ImageFolder found {len(dataset.samples)} "
                             "samples; check the tree for links")
        return dataset

    def _transform(self, train: bool):
        from torchvision import transforms as T

        if train and self.augment:
            steps = [T.RandomResizedCrop(self.image_size), T.RandomHorizontalFlip()]
        else:
            steps = [T.Resize(self.resize_size), T.CenterCrop(self.image_size)]
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def setup(self, stage: str | None = None) -> None:
        if self._splits is not None:
            return
        self.seed = torch.initial_seed()  # as ImageDataModule.setup: pl.seed_everything(cfg.seed) came first
        train = self._folder("train")
        test = self._folder("val", train.classes)
        if self._num_classes is not None and self._num_classes != len(train.classes):
            raise ValueError(f"data.num_classes={self._num_classes}, but {self.root / 'train'} has "
                             f"{len(train.classes)} class folders")
        self._num_classes = len(train.classes)
        n = len(train)
        if not 0 < self.val_size < n:
            raise ValueError(f"data.val_size={self.val_size} must be between 1 and the training set size - 1 ({n - 1})")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[: self.val_size], order[self.val_size:]
        if self.train_subset is not None:
            train_idx = train_idx[: self.train_subset]
        if len(train_idx) < self.batch_size:
            raise ValueError(f"data.batch_size={self.batch_size} is larger than the training set ({len(train_idx)} "
                             "images): with drop_last=True no training batch would remain")
        check_decodable(path for path, _ in test.samples)  # the split read only after training
        self._splits = {"train": Folder(train, self._transform(True), train_idx),
                        "val": Folder(train, self._transform(False), val_idx),
                        "test": Folder(test, self._transform(False))}
