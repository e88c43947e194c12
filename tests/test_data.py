"""DataModules: real loaders on real (or real-format) files, splits, augmentation, normalization."""
import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, CIFAR100

import data
from data.device import random_crop_flip
from data.fashion_mnist import DEBIAN_DIR

FMNIST_PRESENT = (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file()


def test_synthetic_is_deterministic_and_split():
    a, b = data.build({"name": "synthetic", "batch_size": 8}), data.build({"name": "synthetic", "batch_size": 8})
    assert a.split_sizes() == b.split_sizes() == {"train": 1024, "val": 256, "test": 256}
    for split in ("train", "val", "test"):
        xa, ya = a.dataset(split).tensors
        xb, yb = b.dataset(split).tensors
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.uint8 and xa.shape[1:] == (3, 16, 16)
        assert set(ya.tolist()) == {0, 1, 2, 3}


def test_train_loader_drops_the_last_partial_batch():
    dm = data.build({"name": "synthetic", "batch_size": 100})
    sizes = [len(y) for _, y in dm.train_dataloader()]
    assert sizes == [100] * 10  # 1024 images -> 10 full batches, the 24 left over dropped
    assert sum(len(y) for _, y in dm.val_dataloader()) == 256  # evaluation keeps every image


def test_batch_larger_than_training_set_is_a_clear_error():
    dm = data.build({"name": "synthetic", "batch_size": 2048})
    with pytest.raises(ValueError, match=r"data.batch_size=2048 is larger than the training set \(1024 images\)"):
        dm.setup()


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.arange(6 * 2 * 5 * 5, dtype=torch.float32).view(6, 2, 5, 5)
    out = random_crop_flip(x, pad=2, flip=False)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not all(torch.equal(out[i], x[i]) for i in range(6))  # some were shifted


def test_flip_mirrors_about_half_the_batch():
    torch.manual_seed(0)
    x = torch.randn(400, 1, 4, 4)
    out = random_crop_flip(x, pad=0, flip=True)
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 150 < sum(flipped) < 250


def test_evaluation_batches_are_normalized_not_augmented():
    dm = data.build({"name": "synthetic", "batch_size": 8})
    x, y = next(iter(dm.val_dataloader()))
    out, _ = dm.on_after_batch_transfer((x, y), 0)  # no trainer attached: evaluation path
    torch.testing.assert_close(out, (x.float() / 255 - 0.5) / 0.25)


def _write_cifar(root: Path, cls, n_train_per_batch=12, n_test=5, classes=10):
    """Write a tiny data set in the real CIFAR python-pickle format; return its images."""
    folder = root / cls.base_folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    label_key = "labels" if cls is CIFAR10 else "fine_labels"
    images = {}
    for name, _ in cls.train_list + cls.test_list:
        n = n_test if name in ("test_batch", "test") else n_train_per_batch
        arr = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, classes, size=n).tolist()
        images[name] = (arr, labels)
        with open(folder / name, "wb") as f:  # rows of 3072 = R plane, G plane, B plane
            pickle.dump({"data": arr.reshape(n, -1), label_key: labels}, f)
    meta_key = cls.meta["key"]
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, f)
    return images


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name,cls,classes", [("cifar10", CIFAR10, 10), ("cifar100", CIFAR100, 100)])
def test_cifar_loader_reads_the_real_on_disk_format(tmp_path, monkeypatch, name, cls, classes):
    images = _write_cifar(tmp_path, cls, classes=classes)
    folder = tmp_path / cls.base_folder
    # torchvision checks every file against its published checksums; point it at ours.
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})

    dm = data.build({"name": name, "root": str(tmp_path), "download": False, "batch_size": 4, "val_size": 5})
    dm.prepare_data()
    train_x, train_y, test_x, test_y = dm.load()
    expected_train = np.concatenate([images[n][0] for n, _ in cls.train_list])
    assert train_x.shape == (len(expected_train), 3, 32, 32) and train_x.dtype == torch.uint8
    assert np.array_equal(train_x.numpy(), expected_train)  # channels and pixels in the right place
    assert train_y.tolist() == sum((images[n][1] for n, _ in cls.train_list), [])
    test_name = cls.test_list[0][0]
    assert np.array_equal(test_x.numpy(), images[test_name][0]) and test_y.tolist() == images[test_name][1]
    assert dm.num_classes == classes and dm.split_sizes()["val"] == 5


def test_cifar_missing_offline_says_where_it_looked(tmp_path):
    dm = data.build({"name": "cifar10", "root": str(tmp_path), "download": False, "batch_size": 4})
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar-10-batches-py")):
        dm.prepare_data()


def test_fashion_mnist_missing_offline_says_where_it_looked(tmp_path):
    dm = data.build({"name": "fashion_mnist", "root": str(tmp_path / "root"), "download": False,
                     "system_dir": str(tmp_path / "nowhere"), "batch_size": 4})
    with pytest.raises(FileNotFoundError, match=r"looked in .*root/FashionMNIST/raw and .*nowhere.*apt-get install dataset-fashion-mnist"):
        dm.prepare_data()


@pytest.mark.skipif(not FMNIST_PRESENT, reason=f"Fashion-MNIST not installed in {DEBIAN_DIR} (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_package(tmp_path):
    dm = data.build({"name": "fashion_mnist", "root": str(tmp_path), "download": False, "batch_size": 32})
    assert dm.split_sizes() == {"train": 55000, "val": 5000, "test": 10000}
    train_x, train_y, test_x, test_y = dm.load()
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(test_y).tolist() == [1000] * 10  # the real test set is balanced
    assert abs(train_x.float().div(255).mean().item() - dm.mean[0]) < 0.01
    assert abs(train_x.float().div(255).std().item() - dm.std[0]) < 0.01
    assert sorted(p.name for p in (tmp_path / "FashionMNIST" / "raw").iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


def test_unknown_data_set_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; valid data sets: cifar10, cifar100, fashion_mnist, imagefolder, synthetic"):
        data.build({"name": "mnist"})


# ---------------------------------------------------------------------------------------
# data.pipeline=dataloader: torchvision's per-sample path, same images, same order
# ---------------------------------------------------------------------------------------
class _Augmented(data.SyntheticDataModule):
    crop_padding, hflip = 2, True


def _first_batch(dm):
    batch = next(iter(dm.train_dataloader()))
    return dm.on_after_batch_transfer(batch, 0)


def test_dataloader_pipeline_without_augmentation_gives_the_memory_pipelines_batches():
    batches = {}
    for pipeline in data.base.PIPELINES:
        torch.manual_seed(0)  # the shuffling generator
        batches[pipeline] = _first_batch(data.build({"name": "synthetic", "batch_size": 16, "augment": False,
                                                     "pipeline": pipeline}))
    (xm, ym), (xd, yd) = batches["memory"], batches["dataloader"]
    assert torch.equal(ym, yd)
    assert xd.dtype == xm.dtype == torch.float32 and xd.shape == xm.shape == (16, 3, 16, 16)
    torch.testing.assert_close(xd, xm)


def test_dataloader_pipeline_augments_each_image_with_a_crop_and_flip_of_its_own():
    dm = _Augmented(batch_size=64, pipeline="dataloader")
    torch.manual_seed(0)
    x, y = _first_batch(dm)
    # undo the normalization, and find each training image among the crops/flips of the originals
    images = (x * torch.tensor(dm.std).view(1, -1, 1, 1) + torch.tensor(dm.mean).view(1, -1, 1, 1)) * 255
    originals = dm.dataset("train").x.float()
    padded = torch.nn.functional.pad(originals, (2, 2, 2, 2))
    moved = 0
    for img in images.round():
        found = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                 if any(torch.equal(img, (w.flip(2) if f else w)) for w in padded[:, :, dy:dy + 16, dx:dx + 16])]
        assert found, "an augmented image is not a crop/flip of any training image"
        moved += (2, 2, False) not in found
    assert moved > 32  # most images were shifted or flipped


def test_unknown_pipeline_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown data.pipeline 'disk'; valid pipelines: memory, dataloader"):
        data.build({"name": "synthetic", "pipeline": "disk"})
