"""sw/quantize/layers.py: the quantized layer's batch norm keeps PyTorch's
running statistics exactly, whatever the momentum; a degenerate channel's
requantization saturates to its real step."""

import numpy as np
import pytest
import torch
from torch import nn

from common import fixedpoint
from sw.quantize.layers import QuantLayer, batch_statistics, update_running_statistics


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("shape", [(8, 5, 4, 4), (16, 5)])
def test_running_statistics_follow_pytorch(momentum, shape):
    generator = torch.Generator().manual_seed(0)
    kind = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    reference, ours = kind(5, momentum=momentum).train(), kind(5, momentum=momentum)
    for step in range(4):
        y = torch.randn(shape, generator=generator) * (step + 1) + step
        reference(y)
        mean, var = batch_statistics(y)
        update_running_statistics(ours, mean, var, y.numel() // y.shape[1])
    assert torch.equal(ours.num_batches_tracked, reference.num_batches_tracked)
    assert torch.allclose(ours.running_mean, reference.running_mean, rtol=0, atol=1e-6)
    assert torch.allclose(ours.running_var, reference.running_var, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 5, 4, 4), (16, 5)])
def test_batch_statistics_and_their_gradients_are_torch_s(shape):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 3 + 2).double()
    dims = [d for d in range(x.dim()) if d != 1]
    ours = x.clone().requires_grad_(True)
    theirs = x.clone().requires_grad_(True)
    mean, var = batch_statistics(ours)
    weights = torch.arange(1.0, 6.0, dtype=torch.float64)
    ((mean * weights).sum() + (var * weights.flip(0)).sum()).backward()
    expected = ((theirs.mean(dim=dims) * weights).sum()
                + (theirs.var(dim=dims, unbiased=False) * weights.flip(0)).sum())
    expected.backward()
    assert torch.allclose(mean, x.mean(dim=dims)) and torch.allclose(var, x.var(dim=dims, unbiased=False))
    assert torch.allclose(ours.grad, theirs.grad)


@pytest.mark.parametrize("act_bits", [2, 4])
def test_a_steep_channel_steps_where_its_real_map_does(act_bits):
    """A channel steeper than 2**a codes per accumulator unit (the scales of a
    collapsed batch norm or step, up to the 592016 that once crashed a
    VGG-11's training) saturates its multiplier; the integer map then differs
    from the real one at no more than one accumulator value, the step's, and
    the ordinary channels beside it keep the shift of the ceiling."""
    qmax = (1 << act_bits) - 1
    generator = np.random.default_rng(act_bits)
    steep = np.sign(generator.uniform(-1, 1, 48)) * 10 ** generator.uniform(np.log10(qmax + 1), 7, 48)
    threshold = generator.uniform(-100, 100, 48)
    level = generator.uniform(-2, qmax + 2, 48)        # the real map's value at the threshold
    ordinary = generator.uniform(-0.05, 0.05, 16)
    r = np.concatenate([steep, ordinary, [592016.5625]])
    c = np.concatenate([level - steep * threshold, generator.uniform(-5, 5, 16), [-77618432.0]])
    layer = QuantLayer(nn.Linear(4, r.size), None, None, 4, act_bits, 4, 8)
    multiplier, shift, bias = layer.integer_requant(torch.from_numpy(r), torch.from_numpy(c))
    assert shift == fixedpoint.quantize_multiplier(float(qmax + 1))[1]
    assert (multiplier.abs() >= fixedpoint.MULTIPLIER_MAX).sum() >= 40    # most steep ones saturate
    acc = torch.arange(-400, 401, dtype=torch.int64).reshape(-1, 1)
    got = fixedpoint.requantize(acc, bias, multiplier, shift, act_bits)
    real = fixedpoint.round_half_up(torch.from_numpy(r) * acc.double() + torch.from_numpy(c)).clamp(0, qmax)
    differing = (got != real.to(torch.int64)).sum(dim=0)
    steep_channels = torch.from_numpy(np.abs(r) >= qmax + 1)
    assert differing[steep_channels].max() <= 1, differing


def test_the_requantization_carrier_is_int32_only_where_every_intermediate_fits():
    """64 inputs of 4 bits, 4-bit weights: |acc| <= 64 * 15 * 8 = 7680. A
    16-bit multiplier leaves room in int32 for a bias up to ~57,000; a larger
    bias, or a residual branch shifted far enough, needs int64."""
    layer = QuantLayer(nn.Linear(64, 3), None, None, 4, 4, 4, 4)
    assert layer.accumulator_bound() == 7680
    multiplier = torch.tensor([32767, -32768, 100])
    assert layer.integer_carrier(torch.tensor([5, -50000, 0]), multiplier, 16) == torch.int32
    assert layer.integer_carrier(torch.tensor([5, -60000, 0]), multiplier, 16) == torch.int64
    residual = torch.tensor([[3.0, -8.0, 7.0]])
    assert layer.integer_carrier(torch.tensor([5, 0, 0]), multiplier, 16, residual, multiplier, 2) == torch.int32
    assert layer.integer_carrier(torch.tensor([5, 0, 0]), multiplier, 16, residual, multiplier, 14) == torch.int64
