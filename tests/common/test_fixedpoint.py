import itertools
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


def _intermediates(acc, bias, multiplier, shift, residual, residual_multiplier, residual_shift):
    main = (acc + bias) * multiplier
    branch = (residual * residual_multiplier) << residual_shift
    total = main + branch
    return [acc + bias, main, residual * residual_multiplier, branch, total, total + (1 << (shift - 1))]


def test_requantize_sum_magnitude_bounds_every_intermediate_and_is_reached():
    bounds = dict(acc=7680, bias=4000, multiplier=32768, residual=15, residual_multiplier=32768)
    shift, residual_shift = 20, 3
    magnitude = fixedpoint.requantize_sum_magnitude(7680, 4000, 32768, shift, 15, 32768, residual_shift)
    reached = 0
    for signs in itertools.product((-1, 1), repeat=5):
        values = {name: sign * bound for sign, (name, bound) in zip(signs, bounds.items())}
        steps = _intermediates(values["acc"], values["bias"], values["multiplier"], shift,
                               values["residual"], values["residual_multiplier"], residual_shift)
        reached = max(reached, *map(abs, steps))
    assert reached == magnitude


@pytest.mark.parametrize("seed", range(3))
def test_int32_computes_the_rule_exactly_where_the_magnitude_fits(seed):
    """The training forward's 32-bit carrier: wherever `requantize_sum_magnitude`
    is at most 2**31 - 1, int32 gives int64's codes, extremes included; one
    step past it, int32 wraps (the bound is what keeps it exact)."""
    generator = torch.Generator().manual_seed(seed)
    acc_max, bias_max, residual_max, shift, residual_shift = 16000, 40000, 15, 24, 2
    multiplier_max = 32767
    assert fixedpoint.requantize_sum_magnitude(acc_max, bias_max, multiplier_max, shift, residual_max,
                                               multiplier_max, residual_shift) <= (1 << 31) - 1
    def draw(bound, shape):
        values = torch.randint(-bound, bound + 1, shape, generator=generator)
        values.view(-1)[:4] = torch.tensor([bound, -bound, bound, -bound])   # the extremes
        return values
    acc, residual = draw(acc_max, (64, 8)), draw(residual_max, (64, 8))
    bias, multiplier = draw(bias_max, (1, 8)), draw(multiplier_max, (1, 8))
    residual_multiplier = draw(multiplier_max, (1, 8))
    def codes(dtype):
        return fixedpoint.requantize_sum(acc.to(dtype), bias.to(dtype), multiplier.to(dtype), shift, 4,
                                         residual=residual.to(dtype),
                                         residual_multiplier=residual_multiplier.to(dtype),
                                         residual_shift=residual_shift, signed=True)
    assert torch.equal(codes(torch.int32).to(torch.int64), codes(torch.int64))
    past = torch.tensor([[(1 << 31) // 32767 + 1]])
    assert fixedpoint.requantize_sum_magnitude(int(past), 0, 32767, 0) > (1 << 31) - 1
    wrapped = (past.to(torch.int32) * 32767).to(torch.int64)
    assert not torch.equal(wrapped, past * 32767)
