"""PE precision modes and how operands are placed on the PE's input ports.

The fused PE has four 2-bit x 2-bit bricks; brick `i` always multiplies
weight slice `i` by activation slice `i` (fixed wiring, no operand muxes in
the PE). A mode `WxAy` names the weight and activation widths; the PE sums
`lanes` products per cycle. Which lane and which 2-bit part of it each brick
sees is `BRICK_MAP`:

    mode   lanes  brick 0        brick 1        brick 2        brick 3
    W4A4   1      w0.lo x a0.lo  w0.hi x a0.lo  w0.lo x a0.hi  w0.hi x a0.hi
    W4A2   2      w0.lo x a0     w0.hi x a0     w1.lo x a1     w1.hi x a1
    W2A4   2      w0 x a0.lo     w0 x a0.hi     w1 x a1.lo     w1 x a1.hi
    W2A2   4      w0 x a0        w1 x a1        w2 x a2        w3 x a3

So in the wider modes an operand appears on more than one brick (the 4-bit
weight of W4A4 is on slices 0-1 and again on 2-3). That replication is done
where operands enter the array, once per row or column, not in every PE.

Weights are signed (two's complement), activations unsigned; 3-bit operands
run in a 4-bit mode. `pack_weights` / `pack_activations` are the one
definition of this placement, used by testbenches, compiler and array.
"""

from amaranth.lib import data, enum

SLICE_BITS = 2
BRICKS = 4
OPERAND_LAYOUT = data.ArrayLayout(SLICE_BITS, BRICKS)


class PeMode(enum.Enum, shape=2):
    # Bit 0 set: weights are 2-bit; bit 1 set: activations are 2-bit. The PE
    # decodes its fusion controls straight from these bits.
    W4A4 = 0b00
    W2A4 = 0b01
    W4A2 = 0b10
    W2A2 = 0b11

    @property
    def weight_bits(self):
        return 4 if self in (PeMode.W4A4, PeMode.W4A2) else 2

    @property
    def activation_bits(self):
        return 4 if self in (PeMode.W4A4, PeMode.W2A4) else 2

    @property
    def lanes(self):
        """Products per cycle (multiply-accumulates the PE does in this mode)."""
        return BRICKS * SLICE_BITS * SLICE_BITS // (self.weight_bits * self.activation_bits)

    @classmethod
    def for_bits(cls, weight_bits, activation_bits):
        """The narrowest mode that holds operands of these widths (2, 3 or 4)."""
        for bits, name in ((weight_bits, "weight_bits"), (activation_bits, "activation_bits")):
            if bits not in (2, 3, 4):
                raise ValueError(f"{name} must be 2, 3 or 4, got {bits!r}")
        return cls[f"W{2 if weight_bits == 2 else 4}A{2 if activation_bits == 2 else 4}"]


# Per mode, per brick: ((weight lane, weight part), (activation lane, part)).
# Part 0 is a lane's low 2-bit slice, part 1 its high slice (4-bit lanes only).
BRICK_MAP = {
    PeMode.W4A4: (((0, 0), (0, 0)), ((0, 1), (0, 0)), ((0, 0), (0, 1)), ((0, 1), (0, 1))),
    PeMode.W4A2: (((0, 0), (0, 0)), ((0, 1), (0, 0)), ((1, 0), (1, 0)), ((1, 1), (1, 0))),
    PeMode.W2A4: (((0, 0), (0, 0)), ((0, 0), (0, 1)), ((1, 0), (1, 0)), ((1, 0), (1, 1))),
    PeMode.W2A2: (((0, 0), (0, 0)), ((1, 0), (1, 0)), ((2, 0), (2, 0)), ((3, 0), (3, 0))),
}


def weight_range(bits):
    """Inclusive range of a signed `bits`-bit weight."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def activation_range(bits):
    """Inclusive range of an unsigned `bits`-bit activation."""
    return 0, (1 << bits) - 1


def _pack(mode, values, operand):
    mode = PeMode(mode)
    index = 0 if operand == "weight" else 1
    bits = mode.weight_bits if operand == "weight" else mode.activation_bits
    low, high = weight_range(bits) if operand == "weight" else activation_range(bits)
    values = [int(value) for value in values]
    if len(values) != mode.lanes:
        raise ValueError(f"{mode.name} takes {mode.lanes} {operand} lanes, got {len(values)}")
    for lane, value in enumerate(values):
        if not low <= value <= high:
            raise ValueError(f"{operand} lane {lane} value {value} is outside [{low}, {high}] "
                             f"for {mode.name}")
    word = 0
    for brick, operands in enumerate(BRICK_MAP[mode]):
        lane, part = operands[index]
        bits_of_lane = values[lane] & ((1 << bits) - 1)
        word |= ((bits_of_lane >> (part * SLICE_BITS)) & 0b11) << (brick * SLICE_BITS)
    return word


def pack_weights(mode, weights):
    """The 8-bit weight word for one cycle of `mode` (one value per lane)."""
    return _pack(mode, weights, "weight")


def pack_activations(mode, activations):
    """The 8-bit activation word for one cycle of `mode` (one value per lane)."""
    return _pack(mode, activations, "activation")


def pack_lanes_hdl(mode, lanes, operand):
    """The HDL twin of `pack_weights` / `pack_activations`: an 8-bit operand
    word from lane values, placed by `BRICK_MAP` for the run-time `mode`.

    `lanes` is a list of four 4-bit Values: lane `l`'s value in its low
    `bits` bits (two's complement for weights); lanes a mode does not use
    are ignored. `operand` is "weight" or "activation".
    """
    from amaranth.hdl import Cat, Mux

    index = 0 if operand == "weight" else 1
    slices = []
    for brick in range(BRICKS):
        value = 0
        # Build a mux chain over the modes (the mode is a 2-bit enum signal).
        for candidate in PeMode:
            lane, part = BRICK_MAP[candidate][brick][index]
            bits = lanes[lane][part * SLICE_BITS:(part + 1) * SLICE_BITS]
            value = bits if isinstance(value, int) else Mux(mode == candidate, bits, value)
        slices.append(value)
    return Cat(*slices)
