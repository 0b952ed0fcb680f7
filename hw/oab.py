"""The output accumulator buffer (OAB) and the drain into it.

The OAB holds two tiles (buffer b's row r at entry b * R + r, C accumulators
of A bits each): the array computes into one while the PPU reads the other
(docs/isa.md, "Dataflow"). At the end of a round the array hands its sums to
its shadow registers and shifts them out, bottom row first, one row per
cycle (hw/array/systolic.py); each row, shifted left by the round's
`shift`, is added into its OAB entry (or replaces it in the tile's first
round). After the tile's last round the tile goes to the PPU as a job.

The drain runs in the background: the next round's steps may already be in
the array, so a round's record (its buffer, shift, first/last and tile)
waits here, in order, until its rows arrive.
"""

import functools

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw import timing
from hw.isa import ROUND_FIELDS
from hw.ppu import job_layout, oab_read_signature, tile_layout


@functools.cache
def drain_layout(coord_bits):
    """A round to drain: its OAB buffer, its shift, whether it is its tile's
    first round (start from zero) or last (then hand the tile to the PPU),
    and the tile (which the controller may have moved past by then)."""
    return data.StructLayout({"buffer": 1, "shift": ROUND_FIELDS["shift"].shape, "first": 1, "last": 1,
                              "tile": tile_layout(coord_bits)})


def drain_delay(rows, cols):
    """Cycles from a round's record (the engine's `done`, the cycle after the
    round's last step) to the cycle before its first row arrives, when the
    OAB reads that row's entry ahead."""
    return rows + cols - 1 + timing.PIPE_CYCLES + timing.HANDOFF_CYCLES - 1


def records_in_flight(rows, cols):
    """Most rounds between their record and their drain's end: the
    controller starts rounds so that their last steps are at least max(R,
    MIN_ROUND_STEPS) cycles apart (hw/timing.py, round_start_gap)."""
    spacing = max(rows, timing.MIN_ROUND_STEPS)
    return (drain_delay(rows, cols) + rows) // spacing + 1


class OutputAccumulators(wiring.Component):
    """Drains rounds from the array into the OAB and hands finished tiles to
    the PPU.

    A `round` record is accepted in the cycle after its last step entered
    the array (the engine's `done`); its rows arrive on `array_out`
    `drain_delay + 1` cycles later, one per cycle for R cycles, bottom row
    first. Records come at least max(R, MIN_ROUND_STEPS) cycles apart, so
    drains never overlap. A last round's tile is then offered on `job`
    until the PPU takes it. `idle`: no record waiting or draining. The PPU
    reads the OAB through `ppu`.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "round": In(stream.Signature(drain_layout(config.coord_bits), always_ready=True)),
            "idle": Out(1),
            "array_out": In(data.ArrayLayout(signed(config.acc_width), config.cols)),
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

        layout = drain_layout(config.coord_bits)
        delay = drain_delay(rows, cols)
        # due[i]: a record came i + 1 cycles ago; its drain is due at the top bit.
        due = Signal(delay, name="due")
        m.d.sync += due.eq(Cat(self.round.valid, due[:-1]))
        start = Signal()
        m.d.comb += start.eq(due[-1])

        # The records, oldest first, from their arrival to their drain's end
        # (the tile is needed then, for the job): `starting` is the next one
        # to drain, `draining_record` the one draining.
        depth = records_in_flight(rows, cols)
        slots = [Signal(layout, name=f"record{i}") for i in range(depth)]
        # Ring positions; a one-slot ring needs none (no zero-width signals).
        write_at, start_at, end_at = (Signal(range(depth), name=name) if depth > 1 else None
                                      for name in ("write_at", "start_at", "end_at"))
        with m.If(self.round.valid):
            for i, slot in enumerate(slots):
                with m.If(write_at == i if depth > 1 else 1):
                    m.d.sync += slot.eq(self.round.payload)
            _advance(m, write_at, depth)
        starting = layout(Array(slots)[start_at]) if depth > 1 else slots[0]
        draining_record = layout(Array(slots)[end_at]) if depth > 1 else slots[0]

        in_flight = Signal(range(depth + 2))
        m.d.comb += self.idle.eq(in_flight == 0)

        # What the drain needs of its record in every cycle, copied at its start.
        round_ = Signal(data.StructLayout({name: layout[name].shape
                                           for name in ("buffer", "shift", "first", "last")}))
        draining = Signal()
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

        ending = draining & (drain_step == rows - 1)
        m.d.sync += in_flight.eq(in_flight + self.round.valid - ending)
        with m.If(draining):
            m.d.comb += [
                write.addr.eq(base + drain_row), write.en.eq(1),
                drain_read.addr.eq(base + drain_row - 1),
                drain_read.en.eq(~round_.first & ~ending),
            ]
            m.d.sync += drain_step.eq(drain_step + 1)
        with m.If(ending):
            m.d.sync += draining.eq(0)
            _advance(m, end_at, depth)
            with m.If(round_.last):
                m.d.sync += [self.job.valid.eq(1), job.eq(Cat(draining_record.tile, round_.buffer))]
        # A record's drain is due: read its bottom row's entry ahead, to add
        # to in its first drain cycle. It may come in the previous drain's
        # last cycle (records are R apart), which reads nothing.
        with m.If(start):
            m.d.comb += [drain_read.addr.eq(starting.buffer * rows + rows - 1),
                         drain_read.en.eq(~starting.first)]
            m.d.sync += [draining.eq(1), drain_step.eq(0)]
            _advance(m, start_at, depth)
            for name in ("buffer", "shift", "first", "last"):
                m.d.sync += round_[name].eq(starting[name])
        return m



def _advance(m, index, depth):
    """`index` to the next of `depth` ring positions (None: a one-slot ring)."""
    if index is not None:
        m.d.sync += index.eq(Mux(index == depth - 1, 0, index + 1))
