"""The accumulate rule shared by every PE, and its parameter checks."""

from amaranth.hdl import Mux, signed

# One cycle's dot product lies in [-120, 105] in every mode (W4A4: -8 * 15 is
# the extreme; tests/hw/pe check this against the reference), so 8 signed bits.
DOT_SHAPE = signed(8)
ACC_WIDTH_MIN = DOT_SHAPE.width
ACC_WIDTH_MAX = 64


def check_acc_width(acc_width):
    if isinstance(acc_width, bool) or not isinstance(acc_width, int) \
            or not ACC_WIDTH_MIN <= acc_width <= ACC_WIDTH_MAX:
        raise ValueError(f"acc_width must be an int in [{ACC_WIDTH_MIN}, {ACC_WIDTH_MAX}] "
                         f"(one cycle's dot product needs {ACC_WIDTH_MIN} bits), "
                         f"got {acc_width!r}")


def add_accumulator(m, pe, dot):
    """psum_out <= (psum_in if first else psum_out) + dot, when enable."""
    with m.If(pe.enable):
        m.d.sync += pe.psum_out.eq(Mux(pe.first, pe.psum_in, pe.psum_out) + dot)
