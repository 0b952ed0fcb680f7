"""The fused, run-time reconfigurable PE: four 2-bit x 2-bit bricks.

A signed 4-bit weight is `w = wH * 4 + wL` (wH signed, wL unsigned 2-bit
slices) and an unsigned 4-bit activation is `a = aH * 4 + aL`, so

    w * a = (wH*aH << 4) + (wH*aL << 2) + (wL*aH << 2) + wL*aL

is four 2x2 brick products, shifted and summed. The same four bricks, wired
to other slices with other shifts, give two 4x2 or 2x4 products or four 2x2
products. `BRICK_WIRING` is that table; the mode input selects a row on every
cycle, so a mode change costs no bubble. The products of one cycle are summed
(a dot-product step) and added to the accumulator.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.pe.accumulator import DOT_SHAPE, add_accumulator, check_acc_width
from hw.pe.modes import OPERAND_LAYOUT, PeMode

# Per mode, per brick: (weight slice, weight slice is signed, activation slice,
# left shift of the brick's product). A weight slice is signed when it is the
# top slice of a weight lane (the only slice of a 2-bit weight).
BRICK_WIRING = {
    PeMode.W4A4: ((0, False, 0, 0), (1, True, 0, 2), (0, False, 1, 2), (1, True, 1, 4)),
    PeMode.W4A2: ((0, False, 0, 0), (1, True, 0, 2), (2, False, 1, 0), (3, True, 1, 2)),
    PeMode.W2A4: ((0, True, 0, 0), (0, True, 1, 2), (1, True, 2, 0), (1, True, 3, 2)),
    PeMode.W2A2: ((0, True, 0, 0), (1, True, 1, 0), (2, True, 2, 0), (3, True, 3, 0)),
}


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
      weights      four 2-bit slices holding 1, 2 or 4 signed weight lanes.
      activations  four 2-bit slices holding 1, 2 or 4 unsigned lanes.
      enable       add this cycle's dot product; otherwise hold.
      first        start a new sum from `psum_in` instead of the accumulator
                   (output-stationary: `psum_in` = 0 or a bias; a chain of
                   PEs passing partial sums: `first` held high).
      psum_in      partial sum in.
      psum_out     the accumulator (registered).

    Parameters:
      acc_width    accumulator width in bits, sign included.
      modes        the modes to implement (a cost knob); a mode outside this
                   set adds zero.
    """

    def __init__(self, *, acc_width=24, modes=tuple(PeMode)):
        check_acc_width(acc_width)
        try:
            modes = tuple(modes)
        except TypeError:
            modes = ()
        if not modes or not all(isinstance(mode, PeMode) for mode in modes):
            raise ValueError(f"modes must be a non-empty collection of PeMode "
                             f"({', '.join(mode.name for mode in PeMode)}), got {modes!r}")
        self._acc_width = acc_width
        self._modes = tuple(mode for mode in PeMode if mode in modes)
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

    @property
    def modes(self):
        return self._modes

    def elaborate(self, platform):
        m = Module()

        bricks = [Brick() for _ in range(4)]
        for index, brick in enumerate(bricks):
            m.submodules[f"brick{index}"] = brick

        terms = [Signal(signed(9), name=f"term{index}") for index in range(4)]
        with m.Switch(self.mode):
            for mode in self._modes:
                with m.Case(mode):
                    for brick, term, (w_slice, w_signed, a_slice, shift) in zip(
                            bricks, terms, BRICK_WIRING[mode]):
                        m.d.comb += [
                            brick.weight.eq(self.weights[w_slice]),
                            brick.weight_signed.eq(w_signed),
                            brick.activation.eq(self.activations[a_slice]),
                            term.eq(brick.product << shift),
                        ]

        dot = Signal(DOT_SHAPE)
        m.d.comb += dot.eq(sum(terms))
        add_accumulator(m, self, dot)
        return m
