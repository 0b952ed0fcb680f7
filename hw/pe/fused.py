"""The fused, run-time reconfigurable PE: four 2-bit x 2-bit bricks.

A signed 4-bit weight is `w = wH * 4 + wL` (wH signed, wL unsigned 2-bit
slices) and an unsigned 4-bit activation is `a = aH * 4 + aL`, so

    w * a = (wL*aL + (wH*aL << 2)) + ((wL*aH + (wH*aH << 2)) << 2)

Brick `i` multiplies operand slices `i` (see `hw.pe.modes.BRICK_MAP` for what
the slices hold in each mode). The mode only decides, per cycle,

  - whether the even bricks' weight slices are signed (they are the top slice
    of a weight only when weights are 2-bit),
  - whether each pair (bricks 0+1, 2+3) fuses: odd brick shifted by 2, as it
    holds the high slice of a 4-bit lane; in W2A2 all four are independent,
  - whether the two pairs fuse: right pair shifted by 2, in W4A4 only,

so a mode change costs no bubble and only small muxes on brick products.
The products of one cycle are summed (a dot-product step) and accumulated.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.pe.accumulator import DOT_SHAPE, add_accumulator, check_acc_width
from hw.pe.modes import OPERAND_LAYOUT, PeMode


class Brick(wiring.Component):
    """A 2-bit x 2-bit multiplier: weight slice signed or unsigned, activation
    slice unsigned. Products lie in [-6, 9]."""

    weight: In(2)
    weight_signed: In(1)
    activation: In(2)
    product: Out(signed(5))

    def elaborate(self, platform):
        m = Module()
        weight = Mux(self.weight_signed, self.weight.as_signed(), self.weight)
        m.d.comb += self.product.eq(weight * self.activation)
        return m


class FusedPE(wiring.Component):
    """Run-time reconfigurable PE: 1, 2 or 4 products per cycle (see `PeMode`).

    Ports:
      mode         PeMode, sampled with the operands of the same cycle.
      weights      four 2-bit weight slices (`hw.pe.modes.pack_weights`).
      activations  four 2-bit activation slices (`pack_activations`).
      enable       add this cycle's dot product; otherwise hold.
      first        start a new sum from `psum_in` instead of the accumulator
                   (output-stationary: `psum_in` = 0 or a bias; a chain of
                   PEs passing partial sums: `first` held high).
      psum_in      partial sum in.
      psum_out     the accumulator (registered).

    Parameters:
      acc_width    accumulator width in bits, sign included.
    """

    def __init__(self, *, acc_width=24):
        check_acc_width(acc_width)
        self._acc_width = acc_width
        super().__init__({
            "mode": In(PeMode),
            "weights": In(OPERAND_LAYOUT),
            "activations": In(OPERAND_LAYOUT),
            "enable": In(1),
            "first": In(1),
            "psum_in": In(signed(acc_width)),
            "psum_out": Out(signed(acc_width)),
        })

    @property
    def acc_width(self):
        return self._acc_width

    def elaborate(self, platform):
        m = Module()

        mode_bits = self.mode.as_value()  # see PeMode: bit 0 = 2-bit weights, bit 1 = 2-bit activations
        weights_2bit = mode_bits[0]
        pairs_fuse = ~(mode_bits[0] & mode_bits[1])   # all but W2A2
        halves_fuse = ~(mode_bits[0] | mode_bits[1])  # W4A4 only

        products = []
        for index in range(4):
            brick = m.submodules[f"brick{index}"] = Brick()
            m.d.comb += [
                brick.weight.eq(self.weights[index]),
                # Odd bricks always hold the top (sign) slice of a weight.
                brick.weight_signed.eq(1 if index % 2 else weights_2bit),
                brick.activation.eq(self.activations[index]),
            ]
            products.append(brick.product)

        pairs = [Signal(signed(8), name=f"pair{index}") for index in range(2)]
        for pair, (even, odd) in zip(pairs, (products[0:2], products[2:4])):
            m.d.comb += pair.eq(even + Mux(pairs_fuse, odd << 2, odd))

        dot = Signal(DOT_SHAPE)
        m.d.comb += dot.eq(pairs[0] + Mux(halves_fuse, pairs[1] << 2, pairs[1]))
        add_accumulator(m, self, dot)
        return m
