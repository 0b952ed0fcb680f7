"""The integer contract's arithmetic rules, written down once.

Everything downstream of export (the PyTorch integer reference, the compiler's
golden model, the RTL) computes requantization with exactly these rules. They
work on Python ints, numpy integer arrays and torch integer tensors alike,
because they use only `+`, `*`, `>>` and comparisons (`>>` on negative numbers
is an arithmetic shift, i.e. floor division by a power of two, in all three).

Rounding rule: round half up (towards +infinity), `(x + 2**(s-1)) >> s`.
It is the cheapest rounding in hardware (one adder, no sign logic) and it is
symmetric enough for requantization, where values are clamped at zero anyway.
"""

import math

# Requantization multiplier: a signed fixed-point integer (batch norm's gamma
# can be negative) with this many bits, sign included.
MULTIPLIER_BITS = 16
MULTIPLIER_MIN = -(1 << (MULTIPLIER_BITS - 1))
MULTIPLIER_MAX = (1 << (MULTIPLIER_BITS - 1)) - 1
# Largest right shift the requantization unit implements.
SHIFT_MAX = 47


def rounding_shift_right(x, shift):
    """`x / 2**shift` rounded half up. `shift` is a Python int >= 0."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    if shift == 0:
        return x
    return (x + (1 << (shift - 1))) >> shift


def clamp(x, low, high):
    """Clamp to [low, high] for ints, numpy arrays and torch tensors."""
    if hasattr(x, "clamp"):  # torch
        return x.clamp(low, high)
    if hasattr(x, "clip"):  # numpy
        return x.clip(low, high)
    return min(max(x, low), high)


def requantize(acc, bias, multiplier, shift, act_bits):
    """One output channel's requantization: bias add, fixed-point multiply,
    rounding right shift, clamp to the unsigned `act_bits` range (the ReLU).

    `bias`, `multiplier` may be per-channel arrays broadcast against `acc`;
    `shift` and `act_bits` are per-layer Python ints.
    """
    scaled = rounding_shift_right((acc + bias) * multiplier, shift)
    return clamp(scaled, 0, (1 << act_bits) - 1)


def activation_range(act_bits, signed=False):
    """`(low, high)` of `act_bits`-bit activation codes: unsigned after a ReLU
    (the clamp at zero is the ReLU), two's complement for a layer without one
    (a residual branch before the add)."""
    if signed:
        return -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
    return 0, (1 << act_bits) - 1


def requantize_sum(acc, bias, multiplier, shift, act_bits, residual=None,
                   residual_multiplier=None, residual_shift=0, signed=False):
    """Requantization with an optional residual branch added before rounding.

    `((acc + bias) * multiplier + ((residual * residual_multiplier) << residual_shift)
    + 2**(shift-1)) >> shift`, clamped to `activation_range(act_bits, signed)`.
    Both branches are scaled to the output step by their own fixed-point
    multiplier (`multiplier / 2**shift` and `residual_multiplier /
    2**(shift - residual_shift)`), summed exactly, and rounded once, so the
    residual add costs no extra rounding and no intermediate tensor. Without
    `residual` this is `requantize` (with the signed clamp if `signed`).
    """
    scaled = (acc + bias) * multiplier
    if residual is not None:
        scaled = scaled + ((residual * residual_multiplier) << residual_shift)
    low, high = activation_range(act_bits, signed)
    return clamp(rounding_shift_right(scaled, shift), low, high)


def requantize_sum_magnitude(acc_max, bias_max, multiplier_max, shift, residual_max=0,
                             residual_multiplier_max=0, residual_shift=0):
    """Largest magnitude any intermediate of `requantize_sum` can reach, given
    bounds on `|acc|`, `|bias|`, `|multiplier|`, `|residual|` and
    `|residual_multiplier|` (Python ints). An integer type that holds it
    computes the rule exactly: training picks a 32-bit carrier where this
    fits (twice as fast as int64 on a CPU), the same rule on narrower ints."""
    main = (acc_max + bias_max) * multiplier_max
    branch = (residual_max * residual_multiplier_max) << residual_shift
    rounding = (1 << (shift - 1)) if shift > 0 else 0
    return main + branch + rounding


def quantize_residual_multipliers(reals, shift):
    """`(multipliers, residual_shift)` for a residual branch whose real scale to
    the output step is `reals` (per channel), under the layer's `shift`:
    `multipliers / 2**(shift - residual_shift) ~= reals`, with the largest
    `|real|` keeping the full MULTIPLIER_BITS (`residual_shift` = 0 when the
    layer's shift leaves fewer). A scale too large for the multiplier even at
    that precision saturates to the multiplier's range (a degenerate branch;
    the export reports the error it makes)."""
    import numpy as np
    reals = np.asarray(reals, dtype=np.float64)
    if not np.all(np.isfinite(reals)):
        raise ValueError("residual scales must be finite")
    largest = float(np.max(np.abs(reals))) if reals.size else 0.0
    own = shift
    if largest > 0.0:
        exponent = math.frexp(largest)[1]
        own = min(max(MULTIPLIER_BITS - 1 - exponent, 0), shift)
    multipliers = np.round(reals * float(1 << own))
    multipliers = np.clip(multipliers, MULTIPLIER_MIN, MULTIPLIER_MAX).astype(np.int64)
    return multipliers, int(shift - own)


def quantize_multiplier(real):
    """Nearest `(multiplier, shift)` with `multiplier / 2**shift ~= real`.

    The multiplier uses the full MULTIPLIER_BITS of precision (|m| in
    [2**14, 2**15) unless the shift would leave [0, SHIFT_MAX]).
    """
    real = float(real)
    if not math.isfinite(real):
        raise ValueError(f"requantization scale must be finite, got {real}")
    if real == 0.0:
        return 0, 0
    mantissa_bits = MULTIPLIER_BITS - 1
    exponent = math.frexp(abs(real))[1]  # |real| = f * 2**exponent, f in [0.5, 1)
    shift = mantissa_bits - exponent
    shift = min(max(shift, 0), SHIFT_MAX)
    multiplier = round(real * (1 << shift))
    if multiplier > MULTIPLIER_MAX or multiplier < MULTIPLIER_MIN:
        if shift == 0 or abs(multiplier) > (1 << mantissa_bits) + 1:
            raise ValueError(f"requantization scale {real} is too large for a "
                             f"{MULTIPLIER_BITS}-bit multiplier")
        shift -= 1
        multiplier = round(real * (1 << shift))
    return int(multiplier), int(shift)


def round_half_up(x):
    """The same rounding rule on real values: nearest integer, ties towards
    +infinity (`floor(x + 0.5)`). Quantizers use it to turn a real value into an
    integer code, so a tie rounds the same way as in `rounding_shift_right`.
    Works on torch and numpy float arrays and Python floats."""
    if hasattr(x, "floor"):  # torch
        return (x + 0.5).floor()
    if hasattr(x, "dtype"):  # numpy
        import numpy as np
        return np.floor(x + 0.5)
    return math.floor(x + 0.5)


def quantize_multipliers(reals, ceiling=None):
    """Per-channel multipliers sharing one per-layer shift.

    Returns `(multipliers, shift, saturated)`: a numpy int64 array with
    `multipliers[i] / 2**shift ~= reals[i]`, a Python int, and a boolean array
    marking the channels whose multiplier saturated. The shift is the one
    `quantize_multiplier` picks for the largest `|real|`, so that channel
    keeps the full MULTIPLIER_BITS of precision; each multiplier is then
    rounded exactly as `quantize_multiplier` rounds.

    With `ceiling`, a `|real|` above it counts as `ceiling` when the shift is
    picked, and a multiplier that then does not fit saturates at
    MULTIPLIER_MIN or MULTIPLIER_MAX (at least `ceiling`'s own multiplier in
    magnitude; twice it when `ceiling` is a power of two, whose multiplier is
    2**(MULTIPLIER_BITS - 2)). One degenerate channel (batch norm's variance
    near zero, a collapsed step) then neither makes the layer
    unrepresentable nor takes every other channel's precision. Without a
    ceiling, a layer that would need a negative shift raises ValueError.
    """
    import numpy as np
    reals = np.asarray(reals, dtype=np.float64)
    if not np.all(np.isfinite(reals)):
        raise ValueError("requantization scales must be finite")
    magnitudes = np.abs(reals)
    if ceiling is not None:
        magnitudes = np.minimum(magnitudes, float(ceiling))
    largest = float(np.max(magnitudes)) if reals.size else 0.0
    if largest == 0.0:
        return np.zeros(reals.shape, dtype=np.int64), 0, np.zeros(reals.shape, dtype=bool)
    _, shift = quantize_multiplier(largest)
    # Scaling by a power of two is exact in float64; np.round rounds ties to
    # even exactly like Python's round() in quantize_multiplier.
    exact = np.round(reals * float(1 << shift))
    saturated = (exact > MULTIPLIER_MAX) | (exact < MULTIPLIER_MIN)
    if ceiling is None and saturated.any():
        raise ValueError("requantization multiplier out of range")  # cannot happen
    multipliers = np.clip(exact, MULTIPLIER_MIN, MULTIPLIER_MAX).astype(np.int64)
    return multipliers, int(shift), saturated
