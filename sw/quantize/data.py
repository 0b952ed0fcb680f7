"""Data sets as raw uint8 images: scikit-learn's 8x8 digits (embedded) and
CIFAR-10 in the official python layout.

Images stay uint8 `(N, C, H, W)` all the way to the network (the integer
contract's input); augmentation works on them too, so a crop's padding is a
black pixel, the same zero the integer model pads with.
"""

import dataclasses
import os
import pickle

import numpy as np
import torch

from common.errors import UserError

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DIGITS_TEST = 360  # images in the fixed digits test split (of 1797)
DIGITS_SEED = 0


@dataclasses.dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple
    std: tuple
    num_classes: int
    source: str
    augment: bool = False

    @property
    def input_shape(self):
        return tuple(self.train_x.shape[1:])


def load_digits():
    """scikit-learn's digits, 0..16 scaled to uint8 as `x * 255 // 16`, with a
    fixed split: a permutation by `numpy.random.default_rng(0)`, the first 360
    images for testing."""
    from sklearn.datasets import load_digits as sklearn_digits
    bunch = sklearn_digits()
    images = (bunch.images.astype(np.int64) * 255 // 16).astype(np.uint8)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SEED).permutation(len(labels))
    test, train = order[:DIGITS_TEST], order[DIGITS_TEST:]
    train_x = torch.from_numpy(images[train])
    mean = float(train_x.float().mean() / 255)
    std = float((train_x.float() / 255).std())
    return Dataset("digits", train_x, torch.from_numpy(labels[train]),
                   torch.from_numpy(images[test]), torch.from_numpy(labels[test]),
                   (mean,), (std,), 10, "sklearn.datasets.load_digits (embedded)")


def _cifar_folder(path):
    path = os.path.abspath(os.path.expanduser(str(path)))
    for candidate in (os.path.join(path, CIFAR_FOLDER), path):
        if os.path.isfile(os.path.join(candidate, "test_batch")):
            return candidate
    return None


def _read_batch(path):
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {error}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"CIFAR-10 batch {path} has data of shape {data.shape}, expected (N, 3072)")
    return data.reshape(-1, 3, 32, 32), labels


def _download_cifar(path):
    try:
        import torchvision
    except ImportError:
        raise UserError("--download needs torchvision, which is not installed; unpack CIFAR-10 "
                        f"into {path}/{CIFAR_FOLDER}/ yourself") from None
    try:
        torchvision.datasets.CIFAR10(path, train=True, download=True)
    except Exception as error:  # network errors come in many types
        raise UserError(f"downloading CIFAR-10 into {path} failed: {error}") from None


def load_cifar10(path, download=False, limit_train=None, limit_test=None):
    """CIFAR-10 from `path/cifar-10-batches-py/` (or `path` being that folder):
    `data_batch_1..5` and `test_batch`, read with a plain pickle loader."""
    if path is None:
        raise UserError("CIFAR-10 needs --data DIR (holding cifar-10-batches-py/)")
    folder = _cifar_folder(path)
    if folder is None and download:
        _download_cifar(path)
        folder = _cifar_folder(path)
    if folder is None:
        raise UserError(f"no CIFAR-10 data set at {path}: expected {CIFAR_FOLDER}/ with data_batch_1..5 "
                        "and test_batch (the official python layout). Unpack the python version "
                        "of CIFAR-10 (https://www.cs.toronto.edu/~kriz/cifar.html) there, or let "
                        "`mpq train --download` fetch it (needs torchvision)")
    parts = []
    for index in range(1, 6):
        batch_path = os.path.join(folder, f"data_batch_{index}")
        if not os.path.isfile(batch_path):
            raise UserError(f"CIFAR-10 at {folder} lacks data_batch_{index}")
        parts.append(_read_batch(batch_path))
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(os.path.join(folder, "test_batch"))
    if limit_train:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    if limit_test:
        test_x, test_y = test_x[:limit_test], test_y[:limit_test]
    return Dataset("cifar10", torch.from_numpy(train_x), torch.from_numpy(train_y),
                   torch.from_numpy(test_x), torch.from_numpy(test_y),
                   CIFAR_MEAN, CIFAR_STD, 10, folder, augment=True)


def load_dataset(name, path=None, download=False, limit_train=None, limit_test=None):
    for option, limit in (("--limit-train", limit_train), ("--limit-test", limit_test)):
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise UserError(f"{option} must be a positive number of images, got {limit!r}")
    if name == "digits":
        data = load_digits()
        if limit_train:
            data.train_x, data.train_y = data.train_x[:limit_train], data.train_y[:limit_train]
        if limit_test:
            data.test_x, data.test_y = data.test_x[:limit_test], data.test_y[:limit_test]
        return data
    if name == "cifar10":
        return load_cifar10(path, download, limit_train, limit_test)
    raise UserError(f"unknown data set {name!r}; choose digits or cifar10")


def augment(images, generator, padding=4):
    """Random crop with zero padding and random horizontal flip, on uint8
    images, drawn from `generator` (so a resumed run draws the same)."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(height)[None])          # (n, H)
    cols = (dx[:, None] + torch.arange(width)[None])           # (n, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = torch.arange(n)[:, None, None, None]
    channel = torch.arange(images.shape[1])[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]


def epoch_batches(data, batch_size, epoch, seed, rank=0, world=1, train=True):
    """The batches of one epoch: a permutation and augmentation drawn from a
    generator seeded by `(seed, epoch)`, so any epoch can be replayed after a
    resume. With `world` processes, rank `r` takes every `world`-th image of
    the permutation (trimmed to equal counts) and `batch_size // world` per step."""
    if not train:
        for start in range(0, len(data.test_y), batch_size):
            yield data.test_x[start:start + batch_size], data.test_y[start:start + batch_size]
        return
    generator = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(len(data.train_y), generator=generator)
    per_rank = batch_size // world
    if per_rank < 1:
        raise UserError(f"batch size {batch_size} is smaller than the {world} processes")
    # A last partial batch runs if every process gets two images (batch norm
    # needs more than one value per channel).
    steps = len(order) // batch_size + (1 if len(order) % batch_size >= 2 * world else 0)
    for step in range(steps):
        chunk = order[step * batch_size:(step + 1) * batch_size]
        chunk = chunk[:len(chunk) // world * world][rank::world]
        images = data.train_x[chunk]
        if data.augment:
            images = augment(images, generator)
        yield images, data.train_y[chunk]
