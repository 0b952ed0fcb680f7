import os
import pickle

import numpy as np
import pytest
import torch

from common.errors import UserError
from sw.quantize import data


def write_fake_cifar(root, per_batch=20, seed=0):
    """A tiny CIFAR-10 in the official python layout."""
    folder = os.path.join(root, data.CIFAR_FOLDER)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist(),
                 "filenames": [f"{i}.png" for i in range(per_batch)], "batch_label": name}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar_official_layout(tmp_path):
    folder = write_fake_cifar(str(tmp_path))
    for path in (str(tmp_path), folder):   # the parent or the folder itself
        dataset = data.load_cifar10(path)
        assert dataset.train_x.shape == (100, 3, 32, 32) and dataset.train_x.dtype == torch.uint8
        assert dataset.test_x.shape == (20, 3, 32, 32) and dataset.augment
    with open(os.path.join(folder, "test_batch"), "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert np.array_equal(dataset.test_x[3].numpy().reshape(-1), raw["data"][3])  # R, G, B planes


def test_missing_cifar_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no CIFAR-10 data set"):
        data.load_cifar10(str(tmp_path))
    with pytest.raises(UserError, match="--data"):
        data.load_cifar10(None)


def test_download_without_torchvision_is_a_clear_error(tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision":
            raise ImportError("no torchvision")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(UserError, match="torchvision"):
        data.load_cifar10(str(tmp_path), download=True)


def test_digits_fixed_split():
    first, second = data.load_digits(), data.load_digits()
    assert len(first.test_y) == data.DIGITS_TEST and len(first.train_y) == 1797 - data.DIGITS_TEST
    assert torch.equal(first.test_x, second.test_x) and first.train_x.dtype == torch.uint8
    assert first.train_x.max() == 255 and first.input_shape == (1, 8, 8)


def test_augmentation_crops_and_flips():
    images = torch.arange(2 * 3 * 32 * 32).reshape(2, 3, 32, 32).remainder(251).to(torch.uint8)
    a = data.augment(images, torch.Generator().manual_seed(1))
    b = data.augment(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    # Every output row is a (possibly flipped, shifted, zero-padded) input row.
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for n in range(2):
        row = a[n, 0, 10]
        candidates = [padded[n, 0, y, x:x + 32] for y in range(40) for x in range(9)]
        assert any(torch.equal(row, c) or torch.equal(row, c.flip(0)) for c in candidates)


def test_epoch_batches_are_replayable_and_sharded(synthetic_dataset):
    one = [y for _, y in data.epoch_batches(synthetic_dataset, 32, epoch=3, seed=5)]
    two = [y for _, y in data.epoch_batches(synthetic_dataset, 32, epoch=3, seed=5)]
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    ranks = [list(data.epoch_batches(synthetic_dataset, 32, 3, 5, rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    assert all(len(a[1]) == len(b[1]) == 16 for a, b in zip(*ranks))
