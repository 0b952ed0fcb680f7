"""Networks: VGG-9 for CIFAR-10, a small CNN for scikit-learn's 8x8 digits,
and the residual networks of `resnet.py` (ResNet-8, ResNet-20).

VGG-9 and the digits CNN are plain `nn.Sequential` chains of the modules `convert.py` maps, behind
a `Normalize` module, so they take raw 0..255 pixels as floats in float
training and are converted by the same path as a user's own network.
"""

from collections import OrderedDict

import torch
from torch import nn

from common.errors import UserError


class Normalize(nn.Module):
    """`(x / 255 - mean) / std` per channel: raw pixels in, normalised out.
    Folded into the first layer on quantization."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x.float() / 255.0 - self.mean.reshape(shape)) / self.std.reshape(shape)


def _conv_block(cin, cout, pool):
    block = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        block.append(nn.MaxPool2d(2))
    return block


def _width(channels, width):
    return max(1, int(round(channels * width)))


def vgg9(width=1.0, num_classes=10, in_channels=3):
    """VGG-9 of the quantization literature (BinaryConnect/LQ-Nets' VGG-Small
    family): 128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-FC1024-FC1024-FC10,
    batch norm after every hidden layer, channel counts times `width`. The
    classifier FC10 keeps its bias and has no batch norm (its logits are the
    integer accumulators)."""
    c1, c2, c3, fc = (_width(c, width) for c in (128, 256, 512, 1024))
    layers = (_conv_block(in_channels, c1, False) + _conv_block(c1, c1, True)
              + _conv_block(c1, c2, False) + _conv_block(c2, c2, True)
              + _conv_block(c2, c3, False) + _conv_block(c3, c3, True)
              + [nn.Flatten(),
                 nn.Linear(c3 * 4 * 4, fc, bias=False), nn.BatchNorm1d(fc), nn.ReLU(),
                 nn.Linear(fc, fc, bias=False), nn.BatchNorm1d(fc), nn.ReLU(),
                 nn.Linear(fc, num_classes)])
    return nn.Sequential(*layers)


def digits_cnn(width=1.0, num_classes=10, in_channels=1):
    """A small CNN for 8x8 digits: 32C3-32C3-MP2-64C3-MP2-FC10 (times `width`)."""
    c1, c2 = _width(32, width), _width(64, width)
    layers = (_conv_block(in_channels, c1, False) + _conv_block(c1, c1, True)
              + _conv_block(c1, c2, True)
              + [nn.Flatten(), nn.Linear(c2 * 2 * 2, num_classes)])
    return nn.Sequential(*layers)


def _resnet(name):
    def build(**options):
        from sw.quantize import resnet
        return getattr(resnet, name)(**options)
    build.__doc__ = f"sw.quantize.resnet.{name}"
    return build


MODELS = {"vgg9": vgg9, "digits-cnn": digits_cnn, "resnet8": _resnet("resnet8"),
          "resnet20": _resnet("resnet20")}
# Models for 32x32 images (CIFAR-10).
CIFAR_MODELS = ("vgg9", "resnet8", "resnet20")


def build_model(name, width, dataset_info):
    """The float network `Normalize -> body` for a data set's image shape,
    classes and normalisation. `name`: a built-in network or the user's
    `PATH.py:NAME` (sw/quantize/user_model.py)."""
    from sw.quantize import user_model
    if user_model.is_user_model(name):
        body = user_model.build(name, dataset_info.num_classes, dataset_info.input_shape[0], width)
        # Named children, so that messages and layer names read `tiny_resnet.layer1.0.conv1`.
        return nn.Sequential(OrderedDict([
            ("normalize", Normalize(dataset_info.mean, dataset_info.std)),
            (user_model.locate(name).name, body)]))
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {sorted(MODELS)} or give your own "
                        "as PATH.py:NAME")
    if name in CIFAR_MODELS and tuple(dataset_info.input_shape[1:]) != (32, 32):
        raise UserError(f"{name} takes 32x32 images (CIFAR-10)")
    if name == "digits-cnn" and tuple(dataset_info.input_shape[1:]) != (8, 8):
        raise UserError("digits-cnn takes 8x8 images (scikit-learn digits)")
    body = MODELS[name](width=width, num_classes=dataset_info.num_classes,
                        in_channels=dataset_info.input_shape[0])
    layers = list(body) if isinstance(body, nn.Sequential) else [body]
    return nn.Sequential(Normalize(dataset_info.mean, dataset_info.std), *layers)
