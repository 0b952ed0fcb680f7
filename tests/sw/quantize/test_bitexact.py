"""The contract of the project: the fake-quant forward and the integer
reference compute the same integers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from common.errors import UserError
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import write_model_file
from sw.quantize.reference import IntegerModel


def _retrain(network, dataset, steps=30, lr=0.02):
    optimizer = torch.optim.SGD(network.parameters(), lr=lr, momentum=0.9)
    network.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(dataset.train_y), (32,), generator=generator)
        loss = F.cross_entropy(network(dataset.train_x[index].float()), dataset.train_y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return network.eval()


def _quantized(make_cnn, dataset, precision, mixed_groups=False):
    torch.manual_seed(0)
    network = quantize_network(make_cnn(), parse_precision(precision, group_size=4), dataset.input_shape)
    if mixed_groups:  # what the mixed-precision pass will do: per-group precision and shift
        generator = torch.Generator().manual_seed(3)
        for layer in network.layers:
            quantizer = layer.weight_quantizer
            choice = torch.randint(0, 3, quantizer.group_bits.shape, generator=generator)
            quantizer.group_bits.copy_(torch.tensor([2, 3, 4])[choice])
            quantizer.group_shift.copy_((choice == 0).long())   # 2-bit groups on the coarse grid
    calibrate(network, dataset.train_x[:128])
    return _retrain(network, dataset)


@pytest.mark.parametrize("precision,mixed", [("w4a4", False), ("w2a2", False), ("w3a3", False),
                                             ("w4a4,first=w8,last=w8,1=a2", False), ("w4a3", True)])
def test_fake_quant_and_integer_reference_agree(make_cnn, synthetic_dataset, tmp_path, precision, mixed):
    network = _quantized(make_cnn, synthetic_dataset, precision, mixed)
    images = synthetic_dataset.test_x
    with torch.no_grad():
        logits, codes, logits_int = network(images.float(), return_codes=True)
    path = tmp_path / "model.mpq"
    write_model_file(network, str(path))
    reference = IntegerModel.load(str(path))
    ref_logits, ref_codes = reference(images, return_codes=True)
    assert len(codes) == len(ref_codes) == 3
    for layer, (fake, exact) in enumerate(zip(codes, ref_codes)):
        assert torch.equal(fake, exact), f"activation codes differ after layer {layer}"
        assert exact.max() > 0, "a dead layer would make this test vacuous"
    assert torch.equal(logits_int, ref_logits)
    assert torch.equal(logits.argmax(1), ref_logits.argmax(1))   # same prediction on every image
    accuracy = (ref_logits.argmax(1) == synthetic_dataset.test_y).float().mean()
    assert accuracy > 0.5


class _DtypeRecorder(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in (result if isinstance(result, (tuple, list)) else (result,)):
            if isinstance(value, torch.Tensor):
                self.dtypes.add(value.dtype)
        return result


def test_integer_reference_uses_integer_tensors_only(make_cnn, synthetic_dataset, tmp_path):
    network = _quantized(make_cnn, synthetic_dataset, "w4a4")
    path = tmp_path / "model.mpq"
    write_model_file(network, str(path))
    reference = IntegerModel.load(str(path))
    for layer in reference.layers:
        tensors = [layer.weight, layer.bias] + ([layer.multiplier] if not layer.is_last else [])
        assert all(t.dtype == torch.int64 for t in tensors)
    with _DtypeRecorder() as recorder:
        reference(synthetic_dataset.test_x)
    assert recorder.dtypes and not any(d.is_floating_point for d in recorder.dtypes), recorder.dtypes


def test_requantized_codes_track_the_real_activation(make_cnn, synthetic_dataset):
    """The integers are the quantization of the float network's activation."""
    network = _quantized(make_cnn, synthetic_dataset, "w4a4")
    layer = network.layers[0]
    images = synthetic_dataset.test_x[:8].float()
    with torch.no_grad():
        codes, step = layer(images, torch.ones(()))
        weight, bias = layer.folded_weight_bias()
        w_int, w_step = layer.weight_quantizer(weight)
        real = F.conv2d(images, w_int * w_step, bias, padding=1)
        real = layer.bn(real).relu() / step
    expected = real.add(0.5).floor().clamp(0, 15)
    # Equal except where the 16-bit multiplier moves a value across a rounding tie.
    assert (codes != expected).float().mean() < 0.01
    assert (codes - expected).abs().max() <= 1


def _vgg_like(classes=4):
    """The kind of network whose training once crashed (a plain VGG: conv with
    bias, batch norm, ReLU, max-pooling, a linear classifier), in miniature."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, classes))


@torch.no_grad()
def _degenerate(network):
    """Channels whose requantization scale is far beyond any 16-bit multiplier:
    a huge gamma of either sign, a variance of 1e-12 with an eps as small, a
    channel whose weights are all zero (its variance is exactly zero in
    training)."""
    first, second = network.layers[0], network.layers[1]
    first.bn.weight[0], first.bn.weight[1] = 1e6, -1e6
    second.bn.eps = 1e-12
    second.bn.running_var[2] = 1e-12
    second.op.weight[3] = 0.0
    second.bn.running_var[3] = 1e-12


def test_degenerate_channels_train_and_export_bit_exact(make_images, tmp_path):
    images, labels = make_images(64, size=8)
    torch.manual_seed(0)
    network = quantize_network(_vgg_like(), parse_precision("w4a4", group_size=4), (3, 8, 8),
                               input_mean=0.4, input_std=0.25)
    calibrate(network, images)
    _degenerate(network)
    with torch.no_grad():   # an activation step that SGD has carried through zero
        network.layers[1].act_quantizer.step.fill_(-1e-4)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    network.train()
    for _ in range(3):
        loss = F.cross_entropy(network(images.float()), labels)
        optimizer.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert network.layers[1].act_quantizer.step.grad != 0     # the step can come back
        optimizer.step()
    network.eval()
    _degenerate(network)
    with torch.no_grad():
        _, codes, logits_int = network(images.float(), return_codes=True)
    path = tmp_path / "model.mpq"
    write_model_file(network, str(path))
    reference = IntegerModel.load(str(path))
    ref_logits, ref_codes = reference(images, return_codes=True)
    for layer, (fake, exact) in enumerate(zip(codes, ref_codes)):
        assert torch.equal(fake, exact), f"activation codes differ after layer {layer}"
    assert torch.equal(logits_int, ref_logits)
    saturated = [set(layer.multiplier[:4].abs().tolist()) for layer in reference.layers[:2]]
    assert saturated[0] & {32767, 32768} and saturated[1] & {32767, 32768}, saturated


def test_a_layer_past_the_int32_carrier_trains_and_exports_bit_exact(make_images, tmp_path, monkeypatch):
    """A channel with an offset of a million codes (a huge batch-norm beta)
    needs a bias beyond what int32 holds beside a 16-bit multiplier: that
    layer's requantization runs in int64, the others' in int32, and training,
    export and the integer reference still agree on every code."""
    from sw.quantize.layers import QuantLayer
    carriers = []
    pick = QuantLayer.integer_carrier
    monkeypatch.setattr(QuantLayer, "integer_carrier",
                        lambda self, *args, **kwargs: carriers.append(pick(self, *args, **kwargs)) or carriers[-1])
    images, labels = make_images(64, size=8)
    torch.manual_seed(0)
    network = quantize_network(_vgg_like(), parse_precision("w4a4", group_size=4), (3, 8, 8),
                               input_mean=0.4, input_std=0.25)
    calibrate(network, images)
    second = network.layers[1]
    with torch.no_grad():
        second.bn.bias[4] = 1e6 * second.act_quantizer.step.abs()
        second.bn.bias[5] = -1e6 * second.act_quantizer.step.abs()
    network.train()
    network(images.float())
    network.eval()
    with torch.no_grad():
        _, codes, logits_int = network(images.float(), return_codes=True)
    assert torch.int64 in carriers and torch.int32 in carriers, carriers
    path = tmp_path / "model.mpq"
    write_model_file(network, str(path))
    ref_logits, ref_codes = IntegerModel.load(str(path))(images, return_codes=True)
    for layer, (fake, exact) in enumerate(zip(codes, ref_codes)):
        assert torch.equal(fake, exact), f"activation codes differ after layer {layer}"
    assert torch.equal(logits_int, ref_logits)
    assert (ref_codes[1][:, 4] == 15).all() and (ref_codes[1][:, 5] == 0).all()


def test_a_diverged_channel_is_named_at_export(make_images, tmp_path):
    """NaN has no integer: export names the layer and channel and what to do."""
    network = quantize_network(_vgg_like(), parse_precision("w4a4", group_size=4), (3, 8, 8))
    calibrate(network, make_images(16, size=8)[0])
    with torch.no_grad():
        network.layers[1].bn.running_var[5] = float("nan")
    with pytest.raises(UserError, match=r"cannot export: layer '4' channel 5: .*not finite.*diverged"):
        write_model_file(network, str(tmp_path / "model.mpq"))
    assert not (tmp_path / "model.mpq").exists()
