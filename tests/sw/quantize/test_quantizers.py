import math

import pytest
import torch

from common.errors import UserError
from sw.quantize import groups
from sw.quantize.config import parse_precision
from sw.quantize.quantizers import ActivationQuantizer, WeightQuantizer, clamp_ste, grad_scale, round_ste, ste_replace


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_levels_and_clamping(bits):
    quantizer = WeightQuantizer((1, 512), bits, group_size=16)
    with torch.no_grad():
        quantizer.step.fill_(0.2)
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    weight = torch.linspace(-40, 40, 512).reshape(1, 512)
    w_int, step = quantizer(weight)
    assert float(step.detach()) == pytest.approx(0.2)
    assert torch.equal(w_int, w_int.round())
    assert set(w_int.unique().tolist()) == set(range(low, high + 1))  # every level, nothing else
    assert w_int[0, 0] == low and w_int[0, -1] == high                # saturated ends


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_activation_levels_and_clamping(bits):
    quantizer = ActivationQuantizer(bits)
    with torch.no_grad():
        quantizer.step.fill_(0.5)
    codes, _ = quantizer(torch.linspace(-10, 1000, 4096).reshape(1, -1))
    assert set(codes.unique().tolist()) == set(range(0, (1 << bits)))
    assert codes.min() == 0 and codes.max() == (1 << bits) - 1


def test_rounding_ties_go_up():
    quantizer = WeightQuantizer((1, 6), 4, group_size=16)
    with torch.no_grad():
        quantizer.step.fill_(1.0)
    w_int, _ = quantizer(torch.tensor([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]]))
    assert w_int.tolist() == [[-2, -1, 0, 1, 2, 3]]
    activation = ActivationQuantizer(4)
    with torch.no_grad():
        activation.step.fill_(1.0)
    codes, _ = activation(torch.tensor([[0.5, 1.5, 2.5]]))
    assert codes.tolist() == [[1, 2, 3]]


def test_ste_gradients_and_lsq_step_gradient():
    bits, step_value = 3, 0.5
    quantizer = WeightQuantizer((1, 5), bits, group_size=16)
    with torch.no_grad():
        quantizer.step.fill_(step_value)
    weight = torch.tensor([[-9.0, -0.6, 0.2, 1.3, 9.0]], requires_grad=True)
    w_int, step = quantizer(weight)
    (w_int * step).sum().backward()
    # STE: gradient 1 inside the range, 0 where clamped.
    assert weight.grad.tolist() == [[0.0, 1.0, 1.0, 1.0, 0.0]]
    # LSQ: d(s*q)/ds = q - w/s inside, the clamp bound outside, times 1/sqrt(N*Qp).
    v = weight.detach() / step_value
    low, high = -4, 3
    inside = (v > low) & (v < high)
    expected = torch.where(inside, v.add(0.5).floor() - v, v.clamp(low, high)).sum()
    expected *= 1 / math.sqrt(5 * high)
    assert quantizer.step.grad.item() == pytest.approx(expected.item(), rel=1e-5)


def test_activation_lsq_gradient():
    quantizer = ActivationQuantizer(2)
    with torch.no_grad():
        quantizer.step.fill_(1.0)
    x = torch.tensor([[-1.0, 0.4, 1.6, 7.0]], requires_grad=True)
    codes, step = quantizer(x)
    (codes * step).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 1.0, 0.0]]
    expected = (0 + (0 - 0.4) + (2 - 1.6) + 3) / math.sqrt(4 * 3)
    assert quantizer.step.grad.item() == pytest.approx(expected, rel=1e-5)


def test_straight_through_helpers():
    x = torch.tensor([0.5, 1.2], requires_grad=True)
    y = round_ste(x)
    y.sum().backward()
    assert y.tolist() == [1.0, 1.0] and x.grad.tolist() == [1.0, 1.0]
    x.grad = None
    (grad_scale(x, 0.25) * 2).sum().backward()
    assert x.grad.tolist() == [0.5, 0.5]
    x.grad = None
    out = ste_replace(x * 3, torch.tensor([7.0, 8.0]))
    out.sum().backward()
    assert out.tolist() == [7.0, 8.0] and x.grad.tolist() == [3.0, 3.0]


def test_clamp_ste_is_ste_replace_of_the_clamp():
    """Forward the integer value; backward exactly torch.clamp's gradient,
    the bounds included (where the surrogate equals low or high)."""
    real = torch.tensor([-1.0, 0.0, 0.4, 2.9, 3.0, 3.5, 7.0])
    value = torch.tensor([0, 0, 0, 3, 3, 3, 3])
    weights = torch.arange(1.0, 8.0)
    ours, theirs = real.clone().requires_grad_(True), real.clone().requires_grad_(True)
    out = clamp_ste(ours * 2 / 2, 0, 3, value)
    (out * weights).sum().backward()
    (ste_replace(theirs.clamp(0, 3), value) * weights).sum().backward()
    assert out.dtype == torch.float32 and out.tolist() == value.float().tolist()
    assert ours.grad.tolist() == theirs.grad.tolist() == [0, 2, 3, 4, 5, 0, 0]


def test_groups_take_precision_and_shift():
    shape = (2, 20, 3, 3)
    assert groups.group_shape(shape, 8) == (2, 3, 3, 3)
    assert groups.group_shape((4, 17), 16) == (4, 2)
    quantizer = WeightQuantizer(shape, 4, group_size=8)
    with torch.no_grad():
        quantizer.step.fill_(1.0)
        quantizer.group_bits[0, 1, 2, 1] = 2      # channels 8..15 at (1, 2) of output 0
        quantizer.group_shift[0, 1, 2, 1] = 1
    weight = torch.full(shape, 5.0)
    w_int, _ = quantizer(weight)
    assert torch.all(w_int[0, 8:16, 1, 2] == 2)  # 2-bit q saturates at 1, shifted: 2
    w_int[0, 8:16, 1, 2] = 5
    assert torch.all(w_int == 5)
    q, bits, shift = quantizer.export(weight)
    assert torch.all(q[0, 8:16, 1, 2] == 1) and bits[0, 1, 2, 1] == 2 and shift[0, 1, 2, 1] == 1
    expanded = groups.expand_to_weights(bits, shape, 8)
    assert expanded.shape == shape and expanded[0, 16, 1, 2] == 4 and expanded[0, 15, 1, 2] == 2


def test_precision_config_is_data(tmp_path):
    config = parse_precision("w4a4,first=w8,last=w8,3=a2")
    assert config.layer(0, "conv1", 5).weight_bits == 8
    assert config.layer(2, "x", 5) == config.layer(1, "x", 5)
    assert config.layer(3, "x", 5).act_bits == 2
    assert config.layer(4, "fc", 5).weight_bits == 8 and config.layer(4, "fc", 5).act_bits is None
    assert parse_precision("float").is_float
    path = tmp_path / "p.json"
    path.write_text('{"weight_bits": 2, "act_bits": 3, "overrides": {"fc": {"weight_bits": 4}}}')
    config = parse_precision(str(path))
    assert config.layer(1, "fc", 3).weight_bits == 4 and config.layer(0, "c", 3).act_bits == 3
    for bad in ("w5a4", "w4", "x4a4", "w4a4,first"):
        with pytest.raises(UserError):
            parse_precision(bad)
