"""Small synthetic data the quantize tests make themselves."""

import pytest
import torch
from torch import nn

from sw.quantize.data import Dataset
from sw.quantize.models import Normalize

torch.set_num_threads(2)


def synthetic_images(count, channels=3, size=8, seed=0, classes=4):
    """uint8 images whose class is which quadrant is bright: learnable quickly."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (count,), generator=generator)
    images = torch.randint(0, 90, (count, channels, size, size), generator=generator)
    half = size // 2
    for index, label in enumerate(labels.tolist()):
        y, x = divmod(label, 2)
        images[index, :, y * half:(y + 1) * half, x * half:(x + 1) * half] += 140
    return images.clamp(0, 255).to(torch.uint8), labels


@pytest.fixture
def make_images():
    return synthetic_images


@pytest.fixture
def make_cnn():
    return small_cnn


@pytest.fixture
def synthetic_dataset():
    train_x, train_y = synthetic_images(256, seed=1)
    test_x, test_y = synthetic_images(64, seed=2)
    return Dataset("synthetic", train_x, train_y, test_x, test_y,
                   (0.4, 0.4, 0.4), (0.25, 0.25, 0.25), 4, "synthetic")


def small_cnn(channels=3, classes=4):
    return nn.Sequential(
        Normalize((0.4, 0.4, 0.4), (0.25, 0.25, 0.25)),
        nn.Conv2d(channels, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Linear(32, classes))
