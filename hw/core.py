"""The accelerator core: memories, controller, round engine, systolic array,
output accumulators, post-processor, counters and host interface, each a
component of its own, wired here.

The controller runs the program (docs/isa.md, "Program", hw/controller.py);
for each ROUND it starts the round engine (hw/round_engine.py), which feeds
the systolic array (hw/array/); the array hands each round's sums to its
shadow registers and drains them, while the next round runs, into the
output accumulator buffer (hw/oab.py), which hands finished tiles to the
post-processor (hw/ppu.py). The memories (hw/memory_arbiter.py) belong to
the host while the core is idle and to those components while it runs.
"""

from amaranth.hdl import Module, Mux
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.array.systolic import SystolicArray
from hw.controller import ENGINE_REGISTERS, Controller
from hw.counter_bank import CounterBank, built_counters
from hw.counters import COUNTERS
from hw.host import HostInterface, HostRegisters
from hw.memory_arbiter import MemoryArbiter
from hw.oab import OutputAccumulators
from hw.pe import PeMode
from hw.ppu import PPU_REGISTERS, PostProcessor
from hw.round_engine import RoundEngine
from hw.shortcut import ShortcutBuffer, ShortcutLoader


class Core(wiring.Component):
    """The whole accelerator for one `AcceleratorConfig`.

    Ports:
      host_in    commands from the host (docs/host.md), 32-bit words.
      host_out   responses to the host.
      busy       the program is running.
      done       the program reached HALT (or stopped on an error); cleared by start.
      error      the program stopped on a bad instruction.
    """

    host_in: In(stream.Signature(32))
    host_out: Out(stream.Signature(32))
    busy: Out(1)
    done: Out(1)
    error: Out(1)

    def __init__(self, config):
        self._config = config
        super().__init__()

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.host = host = HostInterface(config)
        m.submodules.registers = registers = HostRegisters(config, len(built_counters(config)))
        m.submodules.memories = memories = MemoryArbiter(config)
        m.submodules.controller = controller = Controller(config)
        m.submodules.engine = engine = RoundEngine(config)
        m.submodules.array = array = SystolicArray(rows=config.rows, cols=config.cols,
                                                   acc_width=config.acc_width)
        m.submodules.accumulators = oab = OutputAccumulators(config)
        m.submodules.ppu = ppu = PostProcessor(config)
        m.submodules.counters = counters = CounterBank(config)
        if config.residual:
            m.submodules.shortcut_loader = loader = ShortcutLoader(config)
            m.submodules.shortcut_buffer = shortcut_buffer = ShortcutBuffer(config)
            wiring.connect(m, loader.captures, shortcut_buffer.captures)
            wiring.connect(m, ppu.shortcut, shortcut_buffer.ppu)

        wiring.connect(m, wiring.flipped(self.host_in), host.host_in)
        wiring.connect(m, host.host_out, wiring.flipped(self.host_out))
        wiring.connect(m, host.memory, memories.host)
        wiring.connect(m, host.registers, registers.bus)
        wiring.connect(m, controller.program, memories.program)
        wiring.connect(m, controller.drain, oab.round)
        wiring.connect(m, oab.job, ppu.job)
        wiring.connect(m, ppu.oab, oab.ppu)
        wiring.connect(m, ppu.params, memories.params)
        wiring.connect(m, ppu.activations, memories.activation_write)
        wiring.connect(m, ppu.results, memories.result_write)

        self._connect_reads(m, engine, memories, loader if config.residual else None)
        if config.residual:
            self._connect_shortcut(m, controller, loader, shortcut_buffer)
        # The controller starts rounds and gives the OAB their records; the
        # array between engine and OAB drains on its own.
        m.d.comb += [
            engine.start.eq(controller.round.valid),
            engine.chunk_start.eq(controller.round.p.chunk_start),
            engine.chunk_count.eq(controller.round.p.chunk_count),
            engine.wptr_index.eq(controller.round.p.wptr),
            engine.input2.eq(controller.round.p.input2),
            engine.y.eq(controller.tile.y), engine.x0.eq(controller.tile.x0),
            controller.round_done.eq(engine.done),
            array.weights.eq(engine.array_weights), array.modes.eq(engine.array_modes),
            array.valid.eq(engine.array_valid), array.last.eq(engine.array_last),
            array.activations.eq(engine.array_acts),
            oab.array_out.eq(array.drain_out),
            controller.engine_busy.eq(engine.busy),
            controller.job_done.eq(ppu.job_done),
            controller.quiet.eq(~engine.busy & oab.idle & ppu.idle & ~oab.job.valid),
        ]
        # The layer registers.
        for name in ENGINE_REGISTERS:
            m.d.comb += getattr(engine, name).eq(controller.layer[name])
        for name in PPU_REGISTERS.members:
            m.d.comb += ppu.layer[name].eq(controller.layer[name])

        # Run state, host registers and counters.
        running = controller.running
        m.d.comb += [
            controller.start.eq(registers.start),
            memories.running.eq(running), host.core_busy.eq(running),
            self.busy.eq(running), self.done.eq(controller.done), self.error.eq(controller.error),
            registers.running.eq(running), registers.done.eq(controller.done),
            registers.error.eq(controller.error), registers.error_pc.eq(controller.error_pc),
            registers.protocol_error.eq(host.protocol_error),
            counters.start.eq(registers.start), counters.running.eq(running),
            registers.counters.eq(counters.counters),
        ]
        events = self._events(controller, engine, oab, ppu,
                              loader.reads if config.residual else 0)
        assert set(events) == set(COUNTERS)
        for name in counters.events.shape().members:
            m.d.comb += counters.events[name].eq(events[name])
        return m

    def _connect_reads(self, m, engine, memories, loader):
        """The round engine's read ports onto the memories; with a shortcut
        `loader`, the activation banks' read ports shared with it."""
        reads = [(engine.wptr, memories.wptr), (engine.chunks, memories.chunks),
                 *zip(engine.weights, memories.weights)]
        if loader is None:
            reads += zip(engine.acts, memories.activations)
        for request, port in reads:
            m.d.comb += [port.addr.eq(request.addr), port.en.eq(request.en), request.data.eq(port.data)]
        if loader is not None:
            # The loader reads only in the cycles after a residual tile's last
            # round, before the next round's first activation read
            # (hw/timing.py, shortcut_start_gap), so at most one asks.
            for request, shortcut, port in zip(engine.acts, loader.acts, memories.activations):
                m.d.comb += [port.addr.eq(Mux(shortcut.en, shortcut.addr, request.addr)),
                             port.en.eq(request.en | shortcut.en),
                             request.data.eq(port.data), shortcut.data.eq(port.data)]

    @staticmethod
    def _connect_shortcut(m, controller, loader, shortcut_buffer):
        """A residual tile's shortcut, read in the cycles after its last
        round's done (the next round reads no activation meanwhile:
        shortcut_start_gap), for the tile of that round's record."""
        m.d.comb += [
            loader.start.eq(controller.drain.valid & controller.drain.p.last
                            & controller.layer.sc_enable),
            loader.buffer.eq(controller.drain.p.buffer),
            loader.y.eq(controller.drain.p.tile.y), loader.x0.eq(controller.drain.p.tile.x0),
            loader.ktile.eq(controller.drain.p.tile.ktile),
            loader.sc_base.eq(controller.layer.sc_base),
            loader.out_wb.eq(controller.layer.out_wb),
            loader.sc_words.eq(controller.layer.sc_words),
            loader.slot_bits.eq(controller.layer.sc_bits),
            shortcut_buffer.slot_bits.eq(controller.layer.sc_bits),
            shortcut_buffer.signed.eq(controller.layer.sc_signed),
        ]

    def _events(self, controller, engine, oab, ppu, shortcut_reads):
        """This cycle's count of each event of hw/counters.py."""
        rows, cols = self._config.rows, self._config.cols
        step_mode = engine.array_modes[0]
        return {
            "cycles": 1,
            "busy_cycles": engine.array_valid,
            "stall_cycles": controller.stall,
            **{f"macs_{mode.name.lower()}": Mux(engine.array_valid & (step_mode == mode),
                                                rows * cols * mode.lanes, 0)
               for mode in PeMode},
            "weight_reads": engine.weight_reads,
            "act_reads": engine.act_reads,
            "act_writes": ppu.activations.en.any(),
            "result_writes": ppu.results.en,
            "chunk_reads": engine.chunks.en,
            "wptr_reads": engine.wptr.en,
            "param_reads": ppu.params.en,
            "program_reads": controller.program.en,
            "oab_reads": oab.reads,
            "oab_writes": oab.writes,
            "shortcut_reads": shortcut_reads,
        }
