"""Lightning DataModules. `build` turns the `data` config group into one."""
from __future__ import annotations

import inspect

from .base import PIPELINES as PIPELINES
from .base import ImageDataModule
from .cifar import CIFAR10DataModule, CIFAR100DataModule
from .fashion_mnist import FashionMNISTDataModule
from .imagefolder import ImageFolderDataModule
from .synthetic import SyntheticDataModule

DATASETS = {m.name: m for m in (FashionMNISTDataModule, CIFAR10DataModule, CIFAR100DataModule, SyntheticDataModule,
                                 ImageFolderDataModule)}


def _accepted(cls) -> set[str]:
    names = set()
    for klass in cls.__mro__:
        if issubclass(klass, ImageDataModule):
            names |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "kwargs")}
    return names


def defaults(name: str) -> dict:
    """The options a data set's DataModule (and its base classes) take and their defaults
    (conf/ refers to them as ${data_default:<option>}); the subclass's default wins."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid data sets: {', '.join(sorted(DATASETS))}")
    out = {}
    for klass in DATASETS[name].__mro__:
        if issubclass(klass, ImageDataModule):
            for k, p in inspect.signature(klass.__init__).parameters.items():
                if k not in ("self", "kwargs") and p.default is not p.empty:
                    out.setdefault(k, p.default)
    return out


def build(data: dict) -> ImageDataModule:
    """Build the DataModule named by `data["name"]` with the rest of `data` as options."""
    data = dict(data)
    name = data.pop("name", None)
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid data sets: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    unknown = sorted(set(data) - _accepted(cls))
    if unknown:
        raise ValueError(f"data set {name!r} does not take option(s) {unknown}; valid options: {sorted(_accepted(cls))}")
    return cls(**data)
