"""The baseline: a fixed 4-bit x 4-bit multiply-accumulate PE.

Same ports as `FusedPE` except that it has no mode and its operands are one
signed 4-bit weight and one unsigned 4-bit activation. It is what the area and
energy comparisons measure the fused PE against.
"""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.pe.accumulator import DOT_SHAPE, add_accumulator, check_acc_width


class FixedPE(wiring.Component):
    """One signed 4-bit x unsigned 4-bit product per cycle, accumulated."""

    def __init__(self, *, acc_width=24):
        check_acc_width(acc_width)
        self._acc_width = acc_width
        super().__init__({
            "weight": In(signed(4)),
            "activation": In(unsigned(4)),
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
        dot = Signal(DOT_SHAPE)
        m.d.comb += dot.eq(self.weight * self.activation)
        add_accumulator(m, self, dot)
        return m
