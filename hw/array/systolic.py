"""Output-stationary systolic array of fused PEs (or, as the area and energy
baseline, of fixed 4-bit PEs).

PE `(r, c)` accumulates one output. Weights (with their mode, a valid bit and
a last bit) enter row `r` on the left and move one PE to the right per cycle;
activations enter column `c` at the top and move one PE down per cycle. The
array skews its own inputs (row `r` delayed `r` cycles, column `c` delayed
`c` cycles), so a step presented on all inputs in cycle `T` is in PE
`(r, c)`'s operand registers in cycle `T + 1 + r + c`, and the caller never
thinks about skew.

Hand-off and drain (issue 15, docs/dataflow.md "Per-round overhead", design
B): a round ends with a step that has `last` high. In the cycle after that
step was in PE `(r, c)` (cycle `T + 2 + r + c`) the PE's accumulator, the
round's complete sum, is copied into the PE's shadow register and the
accumulator restarts from zero, so the next round's steps may follow at once:
they no longer wait for the skew and the drain (issue 15 measured 36 fixed
cycles per one-round tile on the 8x8 array, 23 of them skew and drain).
Column `c`'s shadows shift down their column in the background from cycle
`D_c = T + R + 2 + c` (when the bottom shadow holds its sum) for `R` cycles,
and a de-skew of `C - 1 - c` registers aligns the columns: `drain_out[c]`
shows row `R - 1 - k` in cycle `T + R + C + 1 + k`, k = 0 .. R - 1, for every
column (bottom row first, all columns in the same cycle). Outside those
windows `drain_out` is don't-care.

Caller's rule: two rounds whose last steps are presented in cycles `T` and
`T'` need `T' >= T + R`. Shadow `r` of column `c` passes on the last value of
the previous round from above in cycle `D_c + r`; the next hand-off loads it
at the end of cycle `T' + 2 + r + c`, which is not earlier than `D_c + r`
exactly when `T' >= T + R`. Otherwise rounds may follow each other with no
gap (the next round's first step may be presented in cycle `T + 1`), and
there may be any idle gap within or between rounds.

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
      last         with `valid`: this step is its round's last (hand-off).
      activations  per column: the packed activation word of this step.
      drain_out    per column: the drained sums, de-skewed (see module doc).
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
            "last": In(1),
            "activations": In(data.ArrayLayout(OPERAND_BITS, cols)),
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

        # Operand registers in front of each PE: weight, mode, valid and last
        # move right, the activation moves down.
        # A fixed PE takes one 4-bit lane of a W4A4 operand word
        # (hw.pe.modes.BRICK_MAP): the weight is slices 0-1 (low, high; again
        # in 2-3), the activation slices 0 and 2 (low, high; again in 1, 3).
        operand_bits = FIXED_OPERAND_BITS if fixed else OPERAND_BITS
        weight = [[Signal(operand_bits, name=f"w_{r}_{c}") for c in range(cols)] for r in range(rows)]
        mode = [[Signal(PeMode, name=f"mode_{r}_{c}") for c in range(cols)] for r in range(rows)]
        valid = [[Signal(name=f"valid_{r}_{c}") for c in range(cols)] for r in range(rows)]
        act = [[Signal(operand_bits, name=f"a_{r}_{c}") for c in range(cols)] for r in range(rows)]
        # The last bit goes one register further than the operands: PE (r, c)
        # hands off in the cycle after the round's last step was in it, which
        # is when that bit is in column c + 1, so the register of column c + 1
        # is PE (r, c)'s hand-off strobe (one extra register per row, instead
        # of a hand-off register per PE).
        last = [[Signal(name=f"last_{r}_{c}") for c in range(cols)]
                + [Signal(name=f"handoff_{r}_{cols - 1}")] for r in range(rows)]
        handoff = [last[r][1:] for r in range(rows)]

        for r in range(rows):
            # Idle steps carry zero weights, so idle PEs add zero.
            row_weight = Mux(self.valid, self.weights[r], 0)
            m.d.sync += [
                weight[r][0].eq(delayed(row_weight[:operand_bits], r, f"w_in{r}")),
                valid[r][0].eq(delayed(self.valid, r, f"valid_in{r}")),
                last[r][0].eq(delayed(self.valid & self.last, r, f"last_in{r}")),
            ]
            m.d.sync += [last[r][c].eq(last[r][c - 1]) for c in range(1, cols + 1)]
            m.d.sync += [[weight[r][c].eq(weight[r][c - 1]), valid[r][c].eq(valid[r][c - 1])]
                         for c in range(1, cols)]
            if not fixed:  # The fixed PE has no mode: the modes input is ignored.
                m.d.sync += mode[r][0].eq(delayed(self.modes[r], r, f"mode_in{r}"))
                m.d.sync += [mode[r][c].eq(mode[r][c - 1]) for c in range(1, cols)]
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
                # On a hand-off the accumulator restarts from zero, adding the
                # next round's step if one is in the PE in the same cycle.
                m.d.comb += [
                    pe.enable.eq(valid[r][c] | handoff[r][c]),
                    pe.first.eq(handoff[r][c]),
                    pe.psum_in.eq(0),
                ]
        self._drain(m, pes, handoff, delayed)
        return m

    def _drain(self, m, pes, handoff, delayed):
        """The shadow registers, their column chains and the de-skew."""
        rows, cols = self._rows, self._cols
        shadow = [[Signal(signed(self._acc_width), name=f"shadow_{r}_{c}") for c in range(cols)]
                  for r in range(rows)]
        # Column c's chain shifts in drain cycles k = 0 .. R-2, shadow r only
        # while k < r: `shifts_c` = R-1-k then (0 otherwise), so shadow r loads
        # while shifts_c >= R - r. Column c drains one cycle after column
        # c - 1 (D_c = D_{c-1} + 1), so one counter (column 0's, started by
        # its bottom PE's hand-off, the cycle before D_0) serves every column,
        # passed one column on per cycle: C registers of log2(R) bits and one
        # decrementer, against a counter per column.
        shifts = [Signal(range(rows), name=f"shifts_{c}") for c in range(cols)] if rows > 1 else []
        if shifts:
            with m.If(handoff[rows - 1][0]):
                m.d.sync += shifts[0].eq(rows - 1)
            with m.Elif(shifts[0] != 0):
                m.d.sync += shifts[0].eq(shifts[0] - 1)
            m.d.sync += [shifts[c].eq(shifts[c - 1]) for c in range(1, cols)]
        for r in range(rows):
            for c in range(cols):
                with m.If(handoff[r][c]):
                    m.d.sync += shadow[r][c].eq(pes[r][c].psum_out)
                if r:
                    # The caller's rule keeps the hand-off out of the cycles
                    # in which the chain loads this shadow.
                    with m.Elif(shifts[c] >= rows - r):
                        m.d.sync += shadow[r][c].eq(shadow[r - 1][c])
        for c in range(cols):
            m.d.comb += self.drain_out[c].eq(
                delayed(shadow[rows - 1][c], cols - 1 - c, f"deskew_{c}"))
