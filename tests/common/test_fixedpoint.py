import math

import numpy as np
import pytest
import torch

from common import fixedpoint


def test_rounding_shift_right_rounds_half_up():
    assert fixedpoint.rounding_shift_right(5, 1) == 3     # 2.5 -> 3
    assert fixedpoint.rounding_shift_right(-5, 1) == -2   # -2.5 -> -2
    assert fixedpoint.rounding_shift_right(7, 0) == 7


def test_round_half_up_matches_the_integer_rule():
    values = np.arange(-64, 65)
    for shift in range(0, 5):
        integer = fixedpoint.rounding_shift_right(torch.tensor(values), shift)
        real = fixedpoint.round_half_up(torch.tensor(values, dtype=torch.float64) / 2 ** shift)
        assert torch.equal(integer, real.to(torch.int64))
        assert np.array_equal(fixedpoint.round_half_up(values / 2.0 ** shift), integer.numpy())
    assert fixedpoint.round_half_up(-0.5) == 0 and fixedpoint.round_half_up(0.5) == 1


def test_quantize_multipliers_share_the_largest_channels_shift():
    rng = np.random.default_rng(1)
    reals = rng.uniform(-0.02, 0.02, size=64)
    multipliers, shift = fixedpoint.quantize_multipliers(reals)
    largest = np.argmax(np.abs(reals))
    assert (int(multipliers[largest]), shift) == fixedpoint.quantize_multiplier(reals[largest])
    assert multipliers.max() <= fixedpoint.MULTIPLIER_MAX
    assert multipliers.min() >= fixedpoint.MULTIPLIER_MIN
    for real, multiplier in zip(reals, multipliers):
        assert multiplier == round(real * (1 << shift))
        assert abs(multiplier / 2 ** shift - real) <= 2 ** -(shift + 1)


def test_quantize_multipliers_edge_cases():
    multipliers, shift = fixedpoint.quantize_multipliers([0.0, 0.0])
    assert shift == 0 and list(multipliers) == [0, 0]
    with pytest.raises(ValueError):
        fixedpoint.quantize_multipliers([math.inf])
