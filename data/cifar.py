"""CIFAR-10 and CIFAR-100 through torchvision's real CIFAR10/CIFAR100 classes.

Files are read from `root` in torchvision's layout (root/cifar-10-batches-py/,
root/cifar-100-python/), checked against torchvision's checksums, and downloaded by
torchvision when `download` is true and the machine is online.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100

from .base import DEFAULT_ROOT, ImageDataModule


class CIFAR10DataModule(ImageDataModule):
    name = "cifar10"
    dataset_class = CIFAR10
    num_classes = 10
    in_channels = 3
    image_size = 32
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    crop_padding = 4
    hflip = True

    def __init__(self, root: str | None = None, download: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser() if root else DEFAULT_ROOT
        self.download = download

    def _open(self, train: bool, download: bool):
        try:
            return self.dataset_class(self.root, train=train, download=download)
        except Exception as err:  # noqa: BLE001 - torchvision raises RuntimeError or URLError
            folder = self.root / self.dataset_class.base_folder
            hint = "check the network" if download else "run online with data.download=true"
            raise FileNotFoundError(
                f"{self.name} not found or corrupt in {folder} ({type(err).__name__}: {err}); "
                f"{hint}, or put the extracted python-version archive there."
            ) from err

    def prepare_data(self) -> None:
        for train in (True, False):
            self._open(train, self.download)

    def load(self):
        train, test = self._open(True, False), self._open(False, False)

        def tensors(ds):
            return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

        return (*tensors(train), *tensors(test))


class CIFAR100DataModule(CIFAR10DataModule):
    name = "cifar100"
    dataset_class = CIFAR100
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
