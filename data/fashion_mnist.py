"""Fashion-MNIST (60k train / 10k test, 28x28 grey) through torchvision's real FashionMNIST class.

Where the files come from, in order: `root` (torchvision's layout, root/FashionMNIST/raw/),
then the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist/*.gz,
unpacked into root), then torchvision's download when `download` is true.
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from torchvision.datasets import FashionMNIST

from .base import DEFAULT_ROOT, ImageDataModule

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# IDX header (magic number, item count) and total size of each file, from the format's spec.
EXPECTED = {
    "train-images-idx3-ubyte": (2051, 60000, 16 + 60000 * 28 * 28),
    "train-labels-idx1-ubyte": (2049, 60000, 8 + 60000),
    "t10k-images-idx3-ubyte": (2051, 10000, 16 + 10000 * 28 * 28),
    "t10k-labels-idx1-ubyte": (2049, 10000, 8 + 10000),
}
HOW_TO_GET = ("Install the Debian package (apt-get install dataset-fashion-mnist), or run online with "
              "data.download=true")


def check_idx(path: Path) -> None:
    """Raise if an IDX file is truncated or is not the Fashion-MNIST file it is named after."""
    magic, count, size = EXPECTED[path.name]
    actual = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(8)
    found = (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")) if len(header) == 8 else None
    if actual != size or found != (magic, count):
        raise ValueError(
            f"Fashion-MNIST file {path} is corrupt or truncated ({actual} bytes, header {found}; expected "
            f"{size} bytes, header {(magic, count)}). Delete it to unpack or download it again. {HOW_TO_GET}."
        )


class FashionMNISTDataModule(ImageDataModule):
    name = "fashion_mnist"
    num_classes = 10
    in_channels = 1
    image_size = 28
    mean = (0.2860,)
    std = (0.3530,)
    crop_padding = 2
    hflip = True  # garments are left-right symmetric classes

    def __init__(self, root: str | None = None, download: bool = True, system_dir: str = str(DEBIAN_DIR), **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).expanduser() if root else DEFAULT_ROOT
        self.download, self.system_dir = download, Path(system_dir)

    @property
    def raw_dir(self) -> Path:
        return self.root / "FashionMNIST" / "raw"

    def prepare_data(self) -> None:
        self._locate()
        for f in FILES:
            check_idx(self.raw_dir / f)

    def _locate(self) -> None:
        if all((self.raw_dir / f).is_file() for f in FILES):
            return
        if all((self.system_dir / f"{f}.gz").is_file() for f in FILES):
            self.raw_dir.mkdir(parents=True, exist_ok=True)
            for f in FILES:
                tmp = self.raw_dir / f".{f}.tmp{os.getpid()}"
                try:
                    with gzip.open(self.system_dir / f"{f}.gz") as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                except (OSError, EOFError) as err:
                    tmp.unlink(missing_ok=True)
                    raise ValueError(f"cannot unpack {self.system_dir / f'{f}.gz'}: {err}. Reinstall the package "
                                     "(apt-get install --reinstall dataset-fashion-mnist).") from err
                tmp.replace(self.raw_dir / f)
            return
        if self.download:
            try:
                FashionMNIST(self.root, train=True, download=True)
                FashionMNIST(self.root, train=False, download=True)
                return
            except Exception as err:  # noqa: BLE001 - any download failure gets the same advice
                reason = f"download failed ({type(err).__name__}: {err})"
        else:
            reason = "download is off (data.download=false)"
        raise FileNotFoundError(
            f"Fashion-MNIST not found: looked in {self.raw_dir} and {self.system_dir}; {reason}. "
            f"{HOW_TO_GET}, or put the four IDX files in {self.raw_dir}."
        )

    def load(self):
        self.prepare_data()
        train, test = FashionMNIST(self.root, train=True), FashionMNIST(self.root, train=False)
        return train.data.unsqueeze(1), train.targets, test.data.unsqueeze(1), test.targets
