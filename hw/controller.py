"""The controller: runs the program (docs/isa.md, "Program").

It fetches and decodes instructions, keeps the layer registers and the
tile, and for each ROUND waits for the tile's OAB buffer and for the round
engine, starts the engine and goes on to the next instruction while the
round runs: when the engine is done, the round's record (latched at its
start) goes to the OAB, which drains it in the background. After a
residual tile's last round the next round leaves the activation banks to
the shortcut loader for a few cycles (hw/shortcut.py). Its cycle-by-cycle
behaviour is what the golden model's timing rules describe (hw/timing.py).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw import timing
from hw.isa import INSTRUCTION, PAD_BITS, ROUND_FIELDS, Opcode, Register
from hw.oab import drain_layout
from hw.ppu import PPU_REGISTERS, tile_layout

# The layer registers, each as wide as the datapath reads it: the round
# engine the input map's (as wide as its ports), the PPU the output map's
# (PPU_REGISTERS). SET writes the low bits of its 32-bit value.
ENGINE_REGISTERS = {"in_base": 32, "in_base2": 32, "in_h": 16, "in_w": 16, "in_words": 16,
                    "pad": PAD_BITS, "stride2": 1, "in_bits": 3}
# The shortcut loader's own (hw/shortcut.py; it also reads out_wb).
SHORTCUT_REGISTERS = {"sc_base": 32, "sc_bits": 3, "sc_words": 16}
LAYER_REGISTERS = data.StructLayout({
    register.name.lower(): {**ENGINE_REGISTERS, **SHORTCUT_REGISTERS,
                            **PPU_REGISTERS.members}[register.name.lower()]
    for register in Register})


class Controller(wiring.Component):
    """Runs the program from address 0 on `start` until HALT or a bad opcode.

    `program` reads the program memory; its data holds until the next
    FETCH, and the engine latches a ROUND's fields when it starts. `round`
    starts the round engine (`engine_busy` until the cycle after
    `round_done`, which pulses in the cycle after its last step; the next
    round may start in the `round_done` cycle), `drain` gives the OAB the
    round's record in that cycle. `job_done` pulses when the PPU wrote a
    tile; `quiet` says nothing is in the engine, the OAB or the PPU: SET
    and HALT wait for it.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "program": In(memory.ReadPort.Signature(addr_width=(config.program_depth - 1).bit_length(),
                                                    shape=INSTRUCTION.size)),
            "running": Out(1),
            "done": Out(1),          # reached HALT or stopped on an error; cleared by start
            "error": Out(1),         # stopped on a bad opcode
            "error_pc": Out(32),     # its address
            "layer": Out(LAYER_REGISTERS),
            "tile": Out(tile_layout(config.coord_bits)),
            "round": Out(stream.Signature(ROUND_FIELDS, always_ready=True)),
            "round_done": In(1),
            "engine_busy": In(1),
            "drain": Out(stream.Signature(drain_layout(config.coord_bits), always_ready=True)),
            "job_done": In(1),
            "quiet": In(1),
            "stall": Out(1),         # a ROUND waits for its OAB buffer (a counter's event)
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        pc = Signal(range(config.program_depth))
        # A plain signal viewed through the layout: a Signal(INSTRUCTION) would
        # add a wire per field to the Verilog.
        instruction_bits = Signal(INSTRUCTION.size, name="instruction")
        m.d.comb += instruction_bits.eq(self.program.data)
        instruction = INSTRUCTION(instruction_bits)
        m.d.comb += self.program.en.eq(0)

        # A tile's first round waits until the PPU has finished the tile that
        # used the same OAB buffer (tile n - 2). config.narrow_counts: both
        # counts modulo 4; their difference (at most 3) is exact.
        tile_count_bits = 2 if config.narrow_counts else 32
        tiles_started = Signal(tile_count_bits)   # first ROUNDs seen: the current tile's number + 1
        jobs_done = Signal(tile_count_bits)
        tile_buffer = Signal()                    # the current tile's OAB buffer
        with m.If(self.job_done):
            m.d.sync += jobs_done.eq(jobs_done + 1)
        if config.narrow_counts:
            blocked = instruction.round.first & ((tiles_started - jobs_done)[:2] == 3)
        else:
            blocked = instruction.round.first & (jobs_done + 2 < tiles_started)

        # The running round's record for the OAB, latched at its start: the
        # controller moves on to the next instructions (TILE included)
        # while the round runs.
        record = Signal(drain_layout(config.coord_bits))
        m.d.comb += [self.round.payload.eq(instruction.round),
                     self.drain.payload.eq(record), self.drain.valid.eq(self.round_done)]
        with m.If(self.round.valid):
            m.d.sync += [record.buffer.eq(tile_buffer), record.shift.eq(instruction.round.shift),
                         record.first.eq(instruction.round.first), record.last.eq(instruction.round.last),
                         record.tile.eq(self.tile)]
        engine_ready = self._engine_ready(m, instruction)

        with m.FSM(name="controller"):
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(0), self.running.eq(1), self.done.eq(0), self.error.eq(0),
                                 tiles_started.eq(0), jobs_done.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [self.program.addr.eq(pc), self.program.en.eq(1)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += pc.eq(pc + 1)
                with m.Switch(instruction.opcode):
                    with m.Case(Opcode.HALT):
                        m.next = "HALT"
                    with m.Case(Opcode.SET):
                        with m.If(self.quiet):
                            self._set_register(m, instruction.set)
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "SET_WAIT"
                    with m.Case(Opcode.TILE):
                        m.d.sync += [self.tile.y.eq(instruction.tile.y), self.tile.x0.eq(instruction.tile.x0),
                                     self.tile.ktile.eq(instruction.tile.ktile)]
                        m.next = "FETCH"
                    with m.Case(Opcode.ROUND):
                        with m.If(instruction.round.first):
                            m.d.sync += [tiles_started.eq(tiles_started + 1),
                                         tile_buffer.eq(tiles_started[0])]
                        m.next = "STALL"
                    with m.Default():
                        m.d.sync += [self.error.eq(1), self.done.eq(1), self.running.eq(0),
                                     self.error_pc.eq(pc)]
                        m.next = "IDLE"
            with m.State("SET_WAIT"):
                # SET is a barrier: the previous layer's tiles are all written
                # before its registers change or the next layer reads them.
                with m.If(self.quiet):
                    self._set_register(m, instruction.set)
                    m.next = "FETCH"
            with m.State("STALL"):
                m.d.comb += self.stall.eq(blocked)
                with m.If(~blocked & engine_ready):
                    m.d.comb += self.round.valid.eq(1)
                    m.next = "FETCH"
            with m.State("HALT"):
                with m.If(self.quiet):
                    m.d.sync += [self.running.eq(0), self.done.eq(1)]
                    m.next = "IDLE"
        return m

    def _engine_ready(self, m, instruction):
        """Whether a ROUND may start the engine now. The next round starts
        round_start_gap cycles after the engine's done at the earliest (the
        array's shadow rule; hw/timing.py): in the done cycle itself on
        arrays of up to 13 rows. After a residual tile's last round, also
        shortcut_start_gap: the shortcut loader reads the activation banks
        first."""
        config = self._config
        gap = timing.round_start_gap(config.rows)
        shortcut_gap = (max(gap, timing.shortcut_start_gap(config.rows, config.packed_activations))
                        if config.residual else gap)
        if shortcut_gap == 0:
            return ~self.engine_busy | self.round_done
        after_shortcut = Signal()       # the latest round read a residual tile's shortcut
        if config.residual:
            with m.If(self.round.valid):
                m.d.sync += after_shortcut.eq(instruction.round.last & self.layer.sc_enable)
        since_done = Signal(range(shortcut_gap + 1), init=shortcut_gap)
        with m.If(self.round_done):
            m.d.sync += since_done.eq(1)
        with m.Elif(since_done != shortcut_gap):
            m.d.sync += since_done.eq(since_done + 1)
        ready = ~self.engine_busy & (since_done >= Mux(after_shortcut, shortcut_gap, gap))
        if gap == 0:
            ready |= self.round_done & ~after_shortcut
        return ready

    def _set_register(self, m, operands):
        with m.Switch(operands.register):
            for register in Register:
                with m.Case(register):
                    m.d.sync += self.layer[register.name.lower()].eq(operands.value)
