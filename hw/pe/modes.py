"""PE precision modes and how operands are packed into the PE's input ports.

Both operand ports carry four 2-bit slices (`OPERAND_LAYOUT`). A 2-bit
operand takes one slice; a 4-bit operand takes two consecutive slices, low
slice first. A mode `WxAy` names the weight and activation widths; the PE
computes the sum of `lanes` products per cycle:

    mode   lanes   weight lanes (slices)    activation lanes (slices)
    W4A4   1       w0 = s0,s1               a0 = s0,s1
    W4A2   2       w0 = s0,s1  w1 = s2,s3   a0 = s0      a1 = s1
    W2A4   2       w0 = s0     w1 = s1      a0 = s0,s1   a1 = s2,s3
    W2A2   4       wi = si                  ai = si

Weights are signed (two's complement), activations unsigned. 3-bit operands
run in a 4-bit mode. Slices a mode does not use are ignored.

`pack_operands` / `unpack_operands` here are the one definition of that
packing, used by the testbenches, the compiler and the reference model.
"""

from amaranth.lib import data, enum



SLICE_BITS = 2
SLICES = 4
OPERAND_LAYOUT = data.ArrayLayout(SLICE_BITS, SLICES)


class PeMode(enum.Enum, shape=2):
    W4A4 = 0
    W4A2 = 1
    W2A4 = 2
    W2A2 = 3

    @property
    def weight_bits(self):
        return 4 if self in (PeMode.W4A4, PeMode.W4A2) else 2

    @property
    def activation_bits(self):
        return 4 if self in (PeMode.W4A4, PeMode.W2A4) else 2

    @property
    def lanes(self):
        """Products per cycle (multiply-accumulates the PE does in this mode)."""
        return {PeMode.W4A4: 1, PeMode.W4A2: 2, PeMode.W2A4: 2, PeMode.W2A2: 4}[self]

    @classmethod
    def for_bits(cls, weight_bits, activation_bits):
        """The narrowest mode that holds operands of these widths (2, 3 or 4)."""
        for bits, name in ((weight_bits, "weight_bits"), (activation_bits, "activation_bits")):
            if bits not in (2, 3, 4):
                raise ValueError(f"{name} must be 2, 3 or 4, got {bits!r}")
        w = 2 if weight_bits == 2 else 4
        a = 2 if activation_bits == 2 else 4
        return cls[f"W{w}A{a}"]


def weight_range(bits):
    """Inclusive range of a signed `bits`-bit weight."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def activation_range(bits):
    """Inclusive range of an unsigned `bits`-bit activation."""
    return 0, (1 << bits) - 1


def pack_operands(values, lane_bits, signed):
    """Pack `values` (one per lane) into the 8-bit operand word of the PE.

    `lane_bits` is 2 or 4; there are 8 // lane_bits lanes. Returns an int.
    """
    if lane_bits not in (2, 4):
        raise ValueError(f"lane_bits must be 2 or 4, got {lane_bits!r}")
    lanes = SLICES * SLICE_BITS // lane_bits
    values = list(values)
    if len(values) > lanes:
        raise ValueError(f"{len(values)} values do not fit {lanes} lanes of {lane_bits} bits")
    low, high = weight_range(lane_bits) if signed else activation_range(lane_bits)
    word = 0
    for lane, value in enumerate(values):
        value = int(value)
        if not low <= value <= high:
            raise ValueError(f"lane {lane} value {value} is outside [{low}, {high}]")
        word |= (value & ((1 << lane_bits) - 1)) << (lane * lane_bits)
    return word


def unpack_operands(word, lane_bits, signed):
    """Inverse of `pack_operands`: the list of lane values of an 8-bit word."""
    lanes = SLICES * SLICE_BITS // lane_bits
    mask = (1 << lane_bits) - 1
    values = []
    for lane in range(lanes):
        value = (word >> (lane * lane_bits)) & mask
        if signed and value >> (lane_bits - 1):
            value -= 1 << lane_bits
        values.append(value)
    return values


def dot_reference(mode, weight_word, activation_word):
    """What the PE adds to its accumulator in one cycle, from the lane values.

    Independent of the PE's brick wiring on purpose: it is the reference the
    RTL is checked against.
    """
    mode = PeMode(mode)
    weights = unpack_operands(weight_word, mode.weight_bits, signed=True)
    activations = unpack_operands(activation_word, mode.activation_bits, signed=False)
    return sum(w * a for w, a in zip(weights[:mode.lanes], activations[:mode.lanes]))
