"""Output-stationary systolic array of fused PEs (or, as the area and energy
baseline, of fixed 4-bit PEs).

PE `(r, c)` accumulates one output. Weights (with their mode and a valid bit)
enter row `r` on the left and move one PE to the right per cycle;
activations enter column `c` at the top and move one PE down per cycle. The
array skews its own inputs (row `r` delayed `r` cycles, column `c` delayed
`c` cycles), so a step presented on all inputs in one cycle reaches PE
`(r, c)` `r + c + 1` cycles later, and the caller never thinks about skew.

Drain: with `drain` high every PE loads its upper neighbour's sum (row 0
loads zero), so the column of accumulators shifts down by one per cycle and
`drain_out` (the bottom row) shows rows R-1, R-2, ..., 0 over `R` cycles.
After those `R` cycles every accumulator is zero, ready for the next round.
The operands must be idle (valid low) while draining, so that every PE's
dot product is zero.

`pe="fixed"` builds the same array from `FixedPE`s, the fixed 4-bit x 4-bit
baseline, for area and energy comparisons. It has the same ports and timing,
but only W4A4 steps are legal: the `modes` input is ignored (no mode
registers are built), and each PE takes the one signed 4-bit weight and the
one unsigned 4-bit activation of a W4A4 operand word (`pack_weights` /
`pack_activations` of `PeMode.W4A4`), so for W4A4 steps its drain outputs
equal the fused array's.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.pe import FixedPE, FusedPE, PeMode
from hw.pe.accumulator import check_acc_width

OPERAND_BITS = 8
FIXED_OPERAND_BITS = 4
PE_KINDS = ("fused", "fixed")


class SystolicArray(wiring.Component):
    """`rows` x `cols` PEs with `acc_width`-bit accumulators; `pe` is "fused"
    (the default: the run-time reconfigurable PE) or "fixed" (the 4-bit
    baseline, W4A4 steps only; `modes` is ignored).

    Ports:
      weights      per row: the packed weight word of this step.
      modes        per row: the PE mode of this step.
      valid        a step is presented this cycle.
      activations  per column: the packed activation word of this step.
      drain        shift the accumulators down one row (see module doc).
      drain_out    per column: the bottom row's accumulator.
    """

    def __init__(self, *, rows, cols, acc_width, pe="fused"):
        if pe not in PE_KINDS:
            raise ValueError(f"pe must be one of {', '.join(PE_KINDS)}, got {pe!r}")
        self._pe = pe
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or not 1 <= value <= 32:
                raise ValueError(f"{name} must be an int in [1, 32], got {value!r}")
        self._rows, self._cols, self._acc_width = rows, cols, acc_width
        check_acc_width(acc_width)
        super().__init__({
            "weights": In(data.ArrayLayout(OPERAND_BITS, rows)),
            "modes": In(data.ArrayLayout(PeMode, rows)),
            "valid": In(1),
            "activations": In(data.ArrayLayout(OPERAND_BITS, cols)),
            "drain": In(1),
            "drain_out": Out(data.ArrayLayout(signed(acc_width), cols)),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def pe(self):
        return self._pe

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        fixed = self._pe == "fixed"

        def delayed(value, cycles, name):
            """`value` through `cycles` registers."""
            for stage in range(cycles):
                register = Signal.like(value, name=f"{name}_d{stage}")
                m.d.sync += register.eq(value)
                value = register
            return value

        # Operand registers in front of each PE: weight, mode and valid move
        # right, the activation moves down.
        # A fixed PE takes one 4-bit lane of a W4A4 operand word
        # (hw.pe.modes.BRICK_MAP): the weight is slices 0-1 (low, high; again
        # in 2-3), the activation slices 0 and 2 (low, high; again in 1, 3).
        operand_bits = FIXED_OPERAND_BITS if fixed else OPERAND_BITS
        weight = [[Signal(operand_bits, name=f"w_{r}_{c}") for c in range(cols)] for r in range(rows)]
        mode = [[Signal(PeMode, name=f"mode_{r}_{c}") for c in range(cols)] for r in range(rows)]
        valid = [[Signal(name=f"valid_{r}_{c}") for c in range(cols)] for r in range(rows)]
        act = [[Signal(operand_bits, name=f"a_{r}_{c}") for c in range(cols)] for r in range(rows)]

        for r in range(rows):
            # Idle steps carry zero weights, so idle PEs add zero.
            row_weight = Mux(self.valid, self.weights[r], 0)
            if fixed:
                # The fixed PE has no mode: the modes input is ignored.
                m.d.sync += [
                    weight[r][0].eq(delayed(row_weight[:operand_bits], r, f"w_in{r}")),
                    valid[r][0].eq(delayed(self.valid, r, f"valid_in{r}")),
                ]
                for c in range(1, cols):
                    m.d.sync += [weight[r][c].eq(weight[r][c - 1]),
                                 valid[r][c].eq(valid[r][c - 1])]
                continue
            m.d.sync += [
                weight[r][0].eq(delayed(row_weight, r, f"w_in{r}")),
                mode[r][0].eq(delayed(self.modes[r], r, f"mode_in{r}")),
                valid[r][0].eq(delayed(self.valid, r, f"valid_in{r}")),
            ]
            for c in range(1, cols):
                m.d.sync += [weight[r][c].eq(weight[r][c - 1]), mode[r][c].eq(mode[r][c - 1]),
                             valid[r][c].eq(valid[r][c - 1])]
        for c in range(cols):
            column_act = self.activations[c]
            if fixed:
                column_act = Cat(column_act[0:2], column_act[4:6])
            m.d.sync += act[0][c].eq(delayed(column_act, c, f"a_in{c}"))
            for r in range(1, rows):
                m.d.sync += act[r][c].eq(act[r - 1][c])

        pes = [[None] * cols for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                if fixed:
                    pe = pes[r][c] = FixedPE(acc_width=self._acc_width)
                    m.d.comb += [pe.weight.eq(weight[r][c]), pe.activation.eq(act[r][c])]
                else:
                    pe = pes[r][c] = FusedPE(acc_width=self._acc_width)
                    m.d.comb += [pe.mode.eq(mode[r][c]),
                                 pe.weights.as_value().eq(weight[r][c]),
                                 pe.activations.as_value().eq(act[r][c])]
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [
                    pe.enable.eq(valid[r][c] | self.drain),
                    pe.first.eq(self.drain),
                    pe.psum_in.eq(pes[r - 1][c].psum_out if r else 0),
                ]
        for c in range(cols):
            m.d.comb += self.drain_out[c].eq(pes[rows - 1][c].psum_out)
        return m
