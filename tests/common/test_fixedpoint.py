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
    multipliers, shift, saturated = fixedpoint.quantize_multipliers(reals)
    assert not saturated.any()
    largest = np.argmax(np.abs(reals))
    assert (int(multipliers[largest]), shift) == fixedpoint.quantize_multiplier(reals[largest])
    assert multipliers.max() <= fixedpoint.MULTIPLIER_MAX
    assert multipliers.min() >= fixedpoint.MULTIPLIER_MIN
    for real, multiplier in zip(reals, multipliers):
        assert multiplier == round(real * (1 << shift))
        assert abs(multiplier / 2 ** shift - real) <= 2 ** -(shift + 1)


def test_quantize_multipliers_edge_cases():
    multipliers, shift, saturated = fixedpoint.quantize_multipliers([0.0, 0.0])
    assert shift == 0 and list(multipliers) == [0, 0] and not saturated.any()
    with pytest.raises(ValueError):
        fixedpoint.quantize_multipliers([math.inf])
    with pytest.raises(ValueError, match="too large"):   # no ceiling: as before
        fixedpoint.quantize_multipliers([0.01, 592016.5625])


def test_a_channel_above_the_ceiling_saturates_and_leaves_the_shift_to_the_others():
    """The scale that crashed a VGG-11's training: with a ceiling, the shift
    is the ceiling's, that channel's multiplier saturates, and every other
    channel is rounded exactly as without it."""
    reals = [0.01, -3.0, 15.9, 592016.5625, -1e9, 0.0]
    multipliers, shift, saturated = fixedpoint.quantize_multipliers(reals, ceiling=16.0)
    assert shift == fixedpoint.quantize_multiplier(16.0)[1] == 10
    assert list(saturated) == [False, False, False, True, True, False]
    assert multipliers[3] == fixedpoint.MULTIPLIER_MAX and multipliers[4] == fixedpoint.MULTIPLIER_MIN
    assert multipliers[3] / 2 ** shift >= 2 * 16 - 2 ** -shift    # still twice the ceiling
    for real, multiplier in zip(reals[:3] + reals[5:], list(multipliers[:3]) + list(multipliers[5:])):
        assert multiplier == round(real * (1 << shift))
    # Below the ceiling nothing changes: the largest channel sets the shift.
    small = np.random.default_rng(2).uniform(-3, 3, size=16)
    with_ceiling, without = (fixedpoint.quantize_multipliers(small, ceiling=16.0),
                             fixedpoint.quantize_multipliers(small))
    assert np.array_equal(with_ceiling[0], without[0]) and with_ceiling[1] == without[1]
