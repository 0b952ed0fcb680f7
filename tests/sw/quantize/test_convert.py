import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from sw.quantize.config import parse_precision
from sw.quantize.convert import quantize_network
from sw.quantize.models import Normalize, digits_cnn, vgg9

W4A4 = parse_precision("w4a4")


class CustomForward(nn.Module):
    """A user's network written with its own forward and functional calls."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.bn(self.conv(x))))
        return self.fc(x.view(x.size(0), -1))


def test_maps_a_users_own_network():
    network = quantize_network(CustomForward(), W4A4, (3, 8, 8), input_mean=0.5, input_std=0.25)
    assert [layer.name for layer in network.layers] == ["conv", "fc"]
    assert network.layers[0].pool is not None and network.layers[1].flatten_input
    assert network.layers[1].is_last
    logits = network(torch.randint(0, 256, (2, 3, 8, 8)).float())
    assert logits.shape == (2, 5)


def test_maps_the_named_models():
    assert len(quantize_network(vgg9(width=0.0625), W4A4, (3, 32, 32)).layers) == 9
    network = quantize_network(digits_cnn(), parse_precision("w4a4,first=w8,last=w8"), (1, 8, 8))
    bits = [layer.weight_quantizer.max_bits for layer in network.layers]
    assert bits == [8, 4, 4, 8]
    assert [layer.input_bits for layer in network.layers] == [8, 4, 4, 4]


def test_a_precision_override_must_name_a_layer_of_the_network():
    for spec in ("w4a4,1=w2", "w4a4,fc=w2", "w4a4,last=w2"):
        network = quantize_network(CustomForward(), parse_precision(spec), (3, 8, 8))
        assert network.layers[1].weight_quantizer.max_bits == 2
    for key in ("2", "fc1", "-1"):    # a mistyped index or name is not silently ignored
        with pytest.raises(UserError) as error:
            quantize_network(CustomForward(), parse_precision(f"w4a4,{key}=w2"), (3, 8, 8))
        assert f"precision: '{key}' names no layer" in str(error.value)
        assert "0..1 (first, last) or by name: conv, fc" in str(error.value)


def _expect_error(model, *fragments):
    with pytest.raises(UserError) as error:
        quantize_network(model, W4A4, (3, 8, 8))
    for fragment in fragments:
        assert fragment in str(error.value)


def test_unmappable_module_is_named_with_its_position():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 2))
    _expect_error(model, "position 3", "`2`", "AvgPool2d")


def test_missing_relu_and_bad_orders_are_rejected():
    _expect_error(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2)), "no ReLU")
    _expect_error(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU(),
                                nn.Flatten(), nn.Linear(36, 2)), "max-pooling", "position 2")
    _expect_error(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2),
                                nn.ReLU()), "last layer")
    _expect_error(nn.Sequential(nn.Conv2d(3, 4, 3, groups=1, dilation=2), nn.ReLU(), nn.Flatten(),
                                nn.Linear(64, 2)), "dilation")


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(192, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)) + x, 1))


def test_branches_are_rejected():
    _expect_error(Residual(), "position 3", "`add`")


def test_batch_norm_after_the_last_layer_is_folded():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[4].running_mean.uniform_(-1, 1)
        model[4].running_var.uniform_(0.5, 2)
        model[4].weight.uniform_(0.5, 2)
    model.eval()
    network = quantize_network(model, W4A4, (3, 8, 8))
    x = torch.randn(4, 144)
    last = network.layers[-1].op
    assert torch.allclose(last(x), model[4](model[3](x)), atol=1e-5)


def test_pixel_unit_normalisation_is_refused_with_the_fractions_to_use():
    """CIFAR-10's constants as many codebases write them (pixel units): the
    network would see an almost constant input and never learn."""
    with pytest.raises(UserError, match=r"pixel units.*divide by 255 \(mean \[0\.4914, 0\.4824, 0\.4467\]"):
        quantize_network(CustomForward(), W4A4, (3, 8, 8), input_mean=[125.3, 123.0, 113.9],
                         input_std=[63.0, 62.1, 66.7])
    with pytest.raises(UserError, match="pixel units"):
        quantize_network(nn.Sequential(Normalize(125.3, 63.0), CustomForward()), W4A4, (3, 8, 8))
    with pytest.raises(UserError, match="positive stds"):
        quantize_network(CustomForward(), W4A4, (3, 8, 8), input_mean=0.5, input_std=0.0)
    with pytest.raises(UserError, match="both input_mean and input_std"):
        quantize_network(CustomForward(), W4A4, (3, 8, 8), input_mean=0.5)
    quantize_network(CustomForward(), W4A4, (3, 8, 8), input_mean=[0.4914, 0.4822, 0.4465],
                     input_std=[0.247, 0.243, 0.261])


def test_batch_norm_reestimation_recomputes_only_the_running_statistics():
    """Re-estimated over two copies of one batch, every running mean and
    variance is that batch's (as a momentum-1 training forward leaves them);
    weights, steps, momenta and the training flag are as they were."""
    import copy

    from sw.quantize.convert import calibrate, reestimate_batch_norm
    torch.manual_seed(0)
    network = quantize_network(vgg9(width=0.125), parse_precision("w4a4,first=w8,last=w8"), (3, 32, 32),
                               input_mean=0.5, input_std=0.25)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    calibrate(network, images)
    norms = [layer.bn for layer in network.layers if layer.bn is not None]
    for bn in norms:
        bn.running_mean.add_(5.0)       # statistics that match no state of the weights
    reference = copy.deepcopy(network).train()
    for bn in (layer.bn for layer in reference.layers if layer.bn is not None):
        bn.reset_running_stats()
        bn.momentum = 1.0
    with torch.no_grad():
        reference(images.float())
    before = {name: value.clone() for name, value in network.named_parameters()}
    network.eval()
    reestimate_batch_norm(network, [images, images])
    assert not network.training and all(bn.momentum == 0.1 for bn in norms)
    assert all(torch.equal(value, before[name]) for name, value in network.named_parameters())
    for ours, theirs in zip(norms, (layer.bn for layer in reference.layers if layer.bn is not None)):
        assert torch.allclose(ours.running_mean, theirs.running_mean, rtol=1e-5, atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, rtol=1e-5, atol=1e-6)
        assert int(ours.num_batches_tracked) == 2
