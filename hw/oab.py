"""The output accumulator buffer (OAB) and the drain into it.

The OAB holds two tiles (buffer b's row r at entry b * R + r, C accumulators
of A bits each): the array computes into one while the PPU reads the other
(docs/isa.md, "Dataflow"). At the end of a round the array's columns are
shifted out, bottom row first, one row per cycle; each row, shifted left by
the round's `shift`, is added into its OAB entry (or replaces it in the
tile's first round). After the tile's last round the tile goes to the PPU
as a job.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.isa import ROUND_FIELDS
from hw.ppu import job_layout, oab_read_signature, tile_layout

# A round to drain: its OAB buffer, its shift, and whether it is its tile's
# first round (start from zero) or last (then hand the tile to the PPU).
DRAIN = data.StructLayout({"buffer": 1, "shift": ROUND_FIELDS["shift"].shape, "first": 1, "last": 1})


class OutputAccumulators(wiring.Component):
    """Drains a round from the array into the OAB and hands finished tiles
    to the PPU.

    A `round` is accepted in the cycle its last step entered the array; the
    array is flushed for R + C - 2 cycles (the step reaches PE (R-1, C-1)),
    then drained in R cycles; `drained` pulses in the last. A last round's
    tile (`tile`, held by the controller) is then offered on `job` until the
    PPU takes it. The PPU reads the OAB through `ppu`.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "round": In(stream.Signature(DRAIN, always_ready=True)),
            "drained": Out(1),
            "array_drain": Out(1),                  # shift the array's accumulators down
            "array_out": In(data.ArrayLayout(signed(config.acc_width), config.cols)),
            "tile": In(tile_layout(config.coord_bits)),
            "job": Out(stream.Signature(job_layout(config.coord_bits))),
            "ppu": Out(oab_read_signature(config)),
            # Events this cycle, for the counters.
            "reads": Out(range(3)),
            "writes": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols, acc = config.rows, config.cols, config.acc_width

        m.submodules.oab = oab = memory.Memory(shape=cols * acc, depth=2 * rows, init=[])
        write = oab.write_port()
        drain_read = oab.read_port()
        ppu_read = oab.read_port()
        m.d.comb += drain_read.en.eq(0)
        wiring.connect(m, wiring.flipped(self.ppu), ppu_read)
        m.d.comb += [self.reads.eq(drain_read.en + ppu_read.en), self.writes.eq(write.en)]

        round_ = Signal(DRAIN)
        flush_left = Signal(range(rows + cols + 1))
        drain_step = Signal(range(rows + 1))
        drain_row = Signal(range(max(rows, 2)))    # 1 bit, not 0, for a 1-row array
        m.d.comb += drain_row.eq(rows - 1 - drain_step)
        base = round_.buffer * rows

        # The bottom row of the array, shifted by the round's shift, added
        # into the OAB entry of the row it came from.
        drained = Cat(*[(self.array_out[c] << round_.shift)[:acc] for c in range(cols)])
        previous = Mux(round_.first, 0, drain_read.data)
        m.d.comb += write.data.eq(Cat(*[
            (previous[c * acc:(c + 1) * acc] + drained[c * acc:(c + 1) * acc])[:acc]
            for c in range(cols)]))

        job = Signal(job_layout(config.coord_bits))
        m.d.comb += self.job.payload.eq(job)
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += self.job.valid.eq(0)

        with m.FSM(name="drain"):
            with m.State("IDLE"):
                with m.If(self.round.valid):
                    m.d.sync += [round_.eq(self.round.payload), flush_left.eq(rows + cols - 2)]
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.sync += flush_left.eq(flush_left - 1)
                with m.If(flush_left == 1):
                    # Read the bottom row's entry, to add to in the first DRAIN cycle.
                    m.d.comb += [drain_read.addr.eq(base + rows - 1), drain_read.en.eq(~round_.first)]
                    m.d.sync += drain_step.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [
                    self.array_drain.eq(1),
                    write.addr.eq(base + drain_row), write.en.eq(1),
                    drain_read.addr.eq(base + drain_row - 1),
                    drain_read.en.eq(~round_.first & (drain_step != rows - 1)),
                ]
                m.d.sync += drain_step.eq(drain_step + 1)
                with m.If(drain_step == rows - 1):
                    m.d.comb += self.drained.eq(1)
                    with m.If(round_.last):
                        m.d.sync += [self.job.valid.eq(1), job.eq(Cat(self.tile, round_.buffer))]
                    m.next = "IDLE"
        return m
