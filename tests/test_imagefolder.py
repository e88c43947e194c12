"""data=imagefolder on a small tree of real JPEG files the test writes (train/ and val/)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import clean_env, run_train
from PIL import Image

import data
from data.imagefolder import UnreadableImage

CLASSES = ("ant", "bee", "cat")
SMALL = {"crop_size": 32, "resize_size": 36, "val_size": 6, "batch_size": 4, "eval_batch_size": 8}


def write_tree(root: Path, train_per_class=10, val_per_class=3) -> Path:
    """JPEGs of 40x48 pixels whose colour says the class (plus noise), in ImageFolder's layout."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (40, 48, 3)) + np.eye(3, dtype=int)[c] * 180
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i:03d}.JPEG", quality=90)
    return root


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "tree")


def test_the_tree_is_split_decoded_and_transformed_as_imagenet_is(tree):
    dm = data.build({"name": "imagefolder", "root": str(tree), "num_workers": 2, **SMALL})
    assert dm.num_classes == 3 and dm.image_size == 32 and dm.pipeline == "dataloader"
    assert dm.split_sizes() == {"train": 24, "val": 6, "test": 9}  # val/ is the test split
    loader = dm.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and loader.drop_last
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1, 2}
    # evaluation: Resize(36) then CenterCrop(32) of the file itself, normalized with ImageNet's statistics
    from torchvision import transforms as T

    path, label = dm.dataset("test").folder.samples[0]
    expected = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize(dm.mean, dm.std)])(
        Image.open(path).convert("RGB"))
    image, got_label = dm.dataset("test")[0]
    torch.testing.assert_close(image, expected)
    assert got_label == label == 0
    # training: a random resized crop of each image, drawn from the sample's own seed
    first, again = dm.dataset("train")[(0, 7)], dm.dataset("train")[(0, 7)]
    torch.testing.assert_close(first[0], again[0])
    assert not torch.equal(first[0], dm.dataset("train")[(0, 8)][0])


@pytest.mark.parametrize("breakage,message", [
    (lambda t: __import__("shutil").rmtree(t / "val"), r"data.root=.*tree: no val/ folder \(.*tree/val\)"),
    (lambda t: [p.unlink() for p in (t / "train" / "bee").iterdir()], r"data.root: class folder .*train/bee holds no images"),
    (lambda t: (t / "val" / "bee").rename(t / "val" / "bat"), r"the class folders of .*tree/val differ from train/'s"),
    # a link back up the tree: torchvision's walk would turn 24 images into thousands, some under the wrong class
    (lambda t: (t / "train" / "cat" / "loop").symlink_to(t / "train", target_is_directory=True),
     r"data.root: .*tree/train/cat/loop is .*tree/train again \(a directory link loops"),
    (lambda t: (t / "train" / "cat" / "bees").symlink_to(t / "train" / "bee", target_is_directory=True),
     r"data.root: .*tree/train/cat/bees is .*tree/train/bee again \(a directory link loops or duplicates"),
])
def test_a_broken_tree_is_one_line_naming_the_path(tree, breakage, message):
    breakage(tree)
    dm = data.build({"name": "imagefolder", "root": str(tree), "num_workers": 0, **SMALL})
    with pytest.raises((FileNotFoundError, ValueError), match=message) as info:
        dm.setup()
    assert "\n" not in str(info.value)


def test_a_corrupt_image_is_never_trained_on_and_named_in_one_line(tree, tmp_path):
    victim = tree / "train" / "cat" / "004.JPEG"
    victim.write_bytes(victim.read_bytes()[: 200])  # truncated: PIL refuses it
    dm = data.build({"name": "imagefolder", "root": str(tree), "num_workers": 2, **{**SMALL, "val_size": 1}})
    with pytest.raises(UnreadableImage) as info:  # raised in a worker, rebuilt in this process
        for _ in dm.train_dataloader():
            pass
    assert str(info.value).startswith(f"data.root: cannot decode image {victim} (OSError")
    assert "\n" not in str(info.value)
    # through the CLI: one line, a failed summary, nothing trained on the broken file
    proc = run_train("data=imagefolder", f"data.root={tree}", "data.crop_size=32", "data.resize_size=36",
                     "data.val_size=1", "data.batch_size=4", "data.num_workers=2", "model=resnet8", "model.width=8",
                     "logger=csv", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}", check=False,
                     env=clean_env(HYDRA_FULL_ERROR="0"))
    assert proc.returncode == 2
    assert f"error: data.root: cannot decode image {victim} (OSError" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_a_corrupt_image_in_val_is_found_before_training(tree):
    victim = tree / "val" / "bee" / "001.JPEG"
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 2])  # truncated after its header
    dm = data.build({"name": "imagefolder", "root": str(tree), "num_workers": 0, **SMALL})
    with pytest.raises(UnreadableImage, match=f"data.root: cannot decode image {victim} \\(OSError"):
        dm.setup()  # val/ is read only after training: checked here, before it


def test_a_run_trains_on_an_imagefolder_tree_through_the_cli(tree, tmp_path):
    run_train("data=imagefolder", f"data.root={tree}", "data.crop_size=32", "data.resize_size=36", "data.val_size=6",
              "data.batch_size=4", "data.num_workers=2", "model=resnet8", "model.width=8", "norm=gn",
              "logger=csv", "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["data"] == "imagefolder"
    assert summary["config"]["data"]["root"] == str(tree) and summary["epochs_completed"] == 2
    assert 0 <= summary["test_acc"] <= 1


def test_a_tree_whose_image_count_and_sample_count_disagree_is_refused(tree, monkeypatch):
    """The backstop behind the link checks: whatever makes torchvision's walk find other files
    than NormLab's count (here each class folder is counted one short), the tree is refused, not trained on."""
    import data.imagefolder as imagefolder

    counted = imagefolder._count_images
    monkeypatch.setattr(imagefolder, "_count_images", lambda *args: counted(*args) - 1)
    dm = data.build({"name": "imagefolder", "root": str(tree), "num_workers": 0, **SMALL})
    with pytest.raises(ValueError, match=r"tree/train holds 27 images but ImageFolder found 30 samples"):
        dm.setup()
