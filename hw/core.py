"""The accelerator core: memories, systolic array, round engine, output
accumulators, post-processor, controller, counters and host interface.

The controller runs the program (docs/isa.md, "Program"): it fetches and
decodes instructions, keeps the layer registers and the tile, and for each
ROUND starts the round engine, waits for the last step to cross the array,
drains the array into the output accumulator buffer (OAB) with the round's
shift, and hands finished tiles to the post-processor. Its cycle-by-cycle
behaviour is what the golden model's timing rules describe (hw/timing.py).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.array.systolic import SystolicArray
from hw.counters import COUNTERS
from hw.host import HostInterface
from hw.isa import (
    ACT_SLOT_BITS,
    INSTRUCTION,
    ROUND_FIELDS,
    HostRegister,
    Memory,
    Opcode,
    Register,
    counter_register,
)
from hw.pe import PeMode
from hw.ppu import PPU_REGISTERS, PostProcessor
from hw.round_engine import RoundEngine


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
        rows, cols, acc = config.rows, config.cols, config.acc_width

        m.submodules.array = array = SystolicArray(rows=rows, cols=cols, acc_width=acc)
        m.submodules.engine = engine = RoundEngine(config)
        m.submodules.ppu = ppu = PostProcessor(config)
        m.submodules.host = host = HostInterface(config)
        wiring.connect(m, wiring.flipped(self.host_in), host.host_in)
        wiring.connect(m, host.host_out, wiring.flipped(self.host_out))

        m.d.comb += [
            array.weights.eq(engine.array_weights),
            array.modes.eq(engine.array_modes),
            array.valid.eq(engine.array_valid),
            array.activations.eq(engine.array_acts),
        ]

        running = Signal()
        m.d.comb += [self.busy.eq(running), host.core_busy.eq(running)]
        host_access = host.memory  # MemoryAccess: only acts while the core is idle

        # ---------------- memories
        shapes = config.memory_shapes()
        memories = {}
        for mem_id, (name, banks, width, depth) in shapes.items():
            # The PPU writes one 4-bit activation slot of a word at a time.
            granularity = ACT_SLOT_BITS if mem_id == Memory.ACTIVATIONS else None
            memories[mem_id] = []
            for bank in range(banks):
                mem = memory.Memory(shape=width, depth=depth, init=[])
                m.submodules[f"{name}{bank}" if banks > 1 else name] = mem
                read = mem.read_port()
                # Read ports are enabled by default in Amaranth; ours read only
                # when asked, so their data holds (the controller relies on it).
                m.d.comb += read.en.eq(0)
                memories[mem_id].append((mem, read, mem.write_port(granularity=granularity)))

        # Host reads: one selected read port's data, registered selection.
        host_rdata = []
        for mem_id, ports in memories.items():
            for bank, (mem, read, write) in enumerate(ports):
                selected = (host_access.mem == mem_id) & (host_access.bank == bank)
                # Host writes (whole entries).
                with m.If(~running & host_access.write & selected):
                    m.d.comb += [write.addr.eq(host_access.addr),
                                 write.data.eq(host_access.wdata)]
                    m.d.comb += write.en.eq(-1)
                with m.If(~running & host_access.read & selected):
                    m.d.comb += [read.addr.eq(host_access.addr), read.en.eq(1)]
                host_rdata.append((mem_id, bank, read.data))
        read_mem = Signal.like(host_access.mem)
        read_bank = Signal.like(host_access.bank)
        with m.If(host_access.read):
            m.d.sync += [read_mem.eq(host_access.mem), read_bank.eq(host_access.bank)]
        with m.Switch(Cat(read_bank, read_mem)):
            for mem_id, bank, value in host_rdata:
                with m.Case(bank | (mem_id << len(read_bank))):
                    m.d.comb += host_access.rdata.eq(value)

        def read_port(mem_id, bank=0):
            return memories[mem_id][bank][1]

        def write_port(mem_id, bank=0):
            return memories[mem_id][bank][2]

        # Engine and PPU memory traffic (while running).
        with m.If(running):
            for requester, mem_id in ((engine.wptr, Memory.WPTR), (engine.chunks, Memory.CHUNKS)):
                m.d.comb += [read_port(mem_id).addr.eq(requester.addr),
                             read_port(mem_id).en.eq(requester.en)]
            for r in range(rows):
                m.d.comb += [read_port(Memory.WEIGHTS, r).addr.eq(engine.weights[r].addr),
                             read_port(Memory.WEIGHTS, r).en.eq(engine.weights[r].en)]
            for c in range(cols):
                m.d.comb += [read_port(Memory.ACTIVATIONS, c).addr.eq(engine.acts[c].addr),
                             read_port(Memory.ACTIVATIONS, c).en.eq(engine.acts[c].en)]
            m.d.comb += [read_port(Memory.PARAMS).addr.eq(ppu.params.addr),
                         read_port(Memory.PARAMS).en.eq(ppu.params.en)]
            col_bits = (cols - 1).bit_length()
            for c in range(cols):
                with m.If(ppu.activations.addr[:col_bits] == c):
                    port = write_port(Memory.ACTIVATIONS, c)
                    m.d.comb += [port.addr.eq(ppu.activations.addr[col_bits:]),
                                 port.data.eq(ppu.activations.data), port.en.eq(ppu.activations.en)]
            port = write_port(Memory.RESULTS)
            m.d.comb += [port.addr.eq(ppu.results.addr), port.data.eq(ppu.results.data),
                         port.en.eq(ppu.results.en)]
        m.d.comb += [engine.wptr.data.eq(read_port(Memory.WPTR).data),
                     engine.chunks.data.eq(read_port(Memory.CHUNKS).data),
                     ppu.params.data.eq(read_port(Memory.PARAMS).data)]
        for r in range(rows):
            m.d.comb += engine.weights[r].data.eq(read_port(Memory.WEIGHTS, r).data)
        for c in range(cols):
            m.d.comb += engine.acts[c].data.eq(read_port(Memory.ACTIVATIONS, c).data)

        # ---------------- output accumulator buffer (OAB), double-buffered by tile
        m.submodules.oab = oab = memory.Memory(shape=cols * acc, depth=2 * rows, init=[])
        oab_write = oab.write_port()
        oab_drain_read = oab.read_port()
        oab_ppu_read = oab.read_port()
        m.d.comb += [oab_drain_read.en.eq(0), oab_ppu_read.en.eq(0)]
        m.d.comb += [oab_ppu_read.addr.eq(ppu.oab.addr), oab_ppu_read.en.eq(ppu.oab.en),
                     ppu.oab.data.eq(oab_ppu_read.data)]

        # ---------------- controller
        program = read_port(Memory.PROGRAM)
        pc = Signal(range(config.program_depth))
        # A plain signal viewed through the layout: a Signal(INSTRUCTION) would
        # add a wire per field to the Verilog.
        instruction_bits = Signal(INSTRUCTION.size, name="instruction")
        m.d.comb += instruction_bits.eq(program.data)
        instruction = INSTRUCTION(instruction_bits)
        registers = {register: Signal(32, name=f"reg_{register.name.lower()}")
                     for register in Register}
        coord = config.coord_bits
        tile_y, tile_x0, tile_k = Signal(coord), Signal(coord), Signal(coord)
        round_shift = Signal(ROUND_FIELDS["shift"].shape)
        round_first = Signal()
        round_last = Signal()
        # config.narrow_counts: both modulo 4; their difference (at most 3) is exact.
        tile_count_bits = 2 if config.narrow_counts else 32
        tiles_started = Signal(tile_count_bits)   # first ROUNDs seen: the current tile's number + 1
        jobs_done = Signal(tile_count_bits)
        tile_buffer = Signal()       # OAB buffer of the current tile
        job_pending = Signal()
        job_y, job_x0, job_k = Signal(coord), Signal(coord), Signal(coord)
        job_buffer = Signal()
        flush_left = Signal(range(rows + cols + 1))
        drain_step = Signal(range(rows + 1))
        error_pc = Signal(32)
        done = Signal()
        error = Signal()
        m.d.comb += [self.done.eq(done), self.error.eq(error)]

        # Layer registers to the engine and the PPU.
        reg = registers
        m.d.comb += [
            engine.in_base.eq(reg[Register.IN_BASE]), engine.in_base2.eq(reg[Register.IN_BASE2]),
            engine.in_h.eq(reg[Register.IN_H]), engine.in_w.eq(reg[Register.IN_W]),
            engine.in_words.eq(reg[Register.IN_WORDS]), engine.pad.eq(reg[Register.PAD]),
            engine.y.eq(tile_y), engine.x0.eq(tile_x0),
            ppu.job.valid.eq(job_pending), ppu.job.p.y.eq(job_y), ppu.job.p.x0.eq(job_x0),
            ppu.job.p.ktile.eq(job_k), ppu.job.p.buffer.eq(job_buffer),
        ]
        m.d.comb += [ppu.layer[name].eq(reg[Register[name.upper()]]) for name in PPU_REGISTERS.members]
        with m.If(ppu.job.valid & ppu.job.ready):
            m.d.sync += job_pending.eq(0)
        with m.If(ppu.job_done):
            m.d.sync += jobs_done.eq(jobs_done + 1)

        stall_cycle = Signal()     # a ROUND waiting for the PPU
        program_read = Signal()
        start = Signal()
        m.d.comb += start.eq(host.registers.write & (host.registers.addr == HostRegister.CTRL)
                             & host.registers.wdata[0] & ~running)

        # Drain: the bottom row of the array, shifted by the round's shift,
        # added into the OAB entry of the row it came from.
        drain_row = Signal(range(max(rows, 2)))    # 1 bit, not 0, for a 1-row array
        m.d.comb += drain_row.eq(rows - 1 - drain_step)
        drained = Cat(*[(array.drain_out[c] << round_shift)[:acc] for c in range(cols)])
        previous = Mux(round_first, 0, oab_drain_read.data)
        m.d.comb += oab_write.data.eq(Cat(*[
            (previous[c * acc:(c + 1) * acc] + drained[c * acc:(c + 1) * acc])[:acc]
            for c in range(cols)]))

        ppu_quiet = Signal()
        m.d.comb += ppu_quiet.eq(ppu.idle & ~job_pending)

        def set_register():
            with m.Switch(instruction.set.register):
                for register in Register:
                    with m.Case(register):
                        m.d.sync += registers[register].eq(instruction.set.value)

        with m.FSM(name="controller"):
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [pc.eq(0), running.eq(1), done.eq(0), error.eq(0),
                                 tiles_started.eq(0), jobs_done.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [program.addr.eq(pc), program.en.eq(1), program_read.eq(1)]
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += pc.eq(pc + 1)
                with m.Switch(instruction.opcode):
                    with m.Case(Opcode.HALT):
                        m.next = "HALT"
                    with m.Case(Opcode.SET):
                        with m.If(ppu_quiet):
                            set_register()
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "SET_WAIT"
                    with m.Case(Opcode.TILE):
                        m.d.sync += [tile_y.eq(instruction.tile.y), tile_x0.eq(instruction.tile.x0),
                                     tile_k.eq(instruction.tile.ktile)]
                        m.next = "FETCH"
                    with m.Case(Opcode.ROUND):
                        m.d.sync += [round_shift.eq(instruction.round.shift),
                                     round_first.eq(instruction.round.first),
                                     round_last.eq(instruction.round.last)]
                        with m.If(instruction.round.first):
                            m.d.sync += [tiles_started.eq(tiles_started + 1),
                                         tile_buffer.eq(tiles_started[0])]
                        m.next = "STALL"
                    with m.Default():
                        m.d.sync += [error.eq(1), done.eq(1), running.eq(0), error_pc.eq(pc)]
                        m.next = "IDLE"
            with m.State("SET_WAIT"):
                # SET is a barrier: the previous layer's tiles are all written
                # before its registers change or the next layer reads them.
                with m.If(ppu_quiet):
                    set_register()
                    m.next = "FETCH"
            with m.State("STALL"):
                # A tile's first round waits until the PPU has finished the
                # tile that used the same OAB buffer (tile n - 2).
                if config.narrow_counts:
                    blocked = round_first & ((tiles_started - jobs_done)[:2] == 3)
                else:
                    blocked = round_first & (jobs_done + 2 < tiles_started)
                m.d.comb += stall_cycle.eq(blocked)
                with m.If(~blocked):
                    # The program port is not read again before the next
                    # FETCH, so `instruction` still holds the ROUND.
                    m.d.comb += [engine.start.eq(1),
                                 engine.chunk_start.eq(instruction.round.chunk_start),
                                 engine.chunk_count.eq(instruction.round.chunk_count),
                                 engine.wptr_index.eq(instruction.round.wptr),
                                 engine.input2.eq(instruction.round.input2)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(engine.done):
                    m.d.sync += flush_left.eq(rows + cols - 2)
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.sync += flush_left.eq(flush_left - 1)
                with m.If(flush_left == 1):
                    m.d.comb += [oab_drain_read.addr.eq(tile_buffer * rows + rows - 1),
                                 oab_drain_read.en.eq(~round_first)]
                with m.If(flush_left == 1):
                    m.d.sync += drain_step.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += [
                    array.drain.eq(1),
                    oab_write.addr.eq(tile_buffer * rows + drain_row), oab_write.en.eq(1),
                    oab_drain_read.addr.eq(tile_buffer * rows + drain_row - 1),
                    oab_drain_read.en.eq(~round_first & (drain_step != rows - 1)),
                ]
                m.d.sync += drain_step.eq(drain_step + 1)
                with m.If(drain_step == rows - 1):
                    with m.If(round_last):
                        m.d.sync += [job_pending.eq(1), job_y.eq(tile_y), job_x0.eq(tile_x0),
                                     job_k.eq(tile_k), job_buffer.eq(tile_buffer)]
                    m.next = "FETCH"
            with m.State("HALT"):
                with m.If(ppu_quiet):
                    m.d.sync += [running.eq(0), done.eq(1)]
                    m.next = "IDLE"

        # ---------------- counters (cleared by start, counting while running)
        step_mode = engine.array_modes[0]
        macs = {mode: Mux(engine.array_valid & (step_mode == mode), rows * cols * mode.lanes, 0)
                for mode in PeMode}
        drain_reads = Signal()
        m.d.comb += drain_reads.eq(oab_drain_read.en)
        events = {
            "cycles": 1,
            "busy_cycles": engine.array_valid,
            "stall_cycles": stall_cycle,
            "macs_w4a4": macs[PeMode.W4A4],
            "macs_w4a2": macs[PeMode.W4A2],
            "macs_w2a4": macs[PeMode.W2A4],
            "macs_w2a2": macs[PeMode.W2A2],
            "weight_reads": engine.weight_reads,
            "act_reads": engine.act_reads,
            "act_writes": ppu.activations.en.any(),
            "result_writes": ppu.results.en,
            "chunk_reads": engine.chunks.en,
            "wptr_reads": engine.wptr.en,
            "param_reads": ppu.params.en,
            "program_reads": program_read,
            "oab_reads": oab_drain_read.en + oab_ppu_read.en,
            "oab_writes": oab_write.en,
        }
        assert tuple(events) == COUNTERS
        # Without config.counters only `cycles` is built; the others read 0.
        built = COUNTERS if config.counters else COUNTERS[:1]
        counters = [Signal(config.counter_width, name=f"counter_{name}") for name in built]
        for counter, event in zip(counters, events.values()):
            with m.If(start):
                m.d.sync += counter.eq(0)
            with m.Elif(running):
                m.d.sync += counter.eq(counter + event)

        # ---------------- host-visible registers
        info = Signal(32)
        m.d.comb += info.eq(rows | (cols << 8) | (acc << 16))
        status = Signal(32)
        m.d.comb += status.eq(Cat(running, done, error, host.protocol_error))
        with m.Switch(host.registers.addr):
            with m.Case(HostRegister.STATUS):
                m.d.comb += host.registers.rdata.eq(status)
            with m.Case(HostRegister.ERROR_PC):
                m.d.comb += host.registers.rdata.eq(error_pc)
            with m.Case(HostRegister.INFO):
                m.d.comb += host.registers.rdata.eq(info)
            for index, counter in enumerate(counters):
                with m.Case(counter_register(index, 0)):
                    m.d.comb += host.registers.rdata.eq(counter[:32])
                if len(counter) > 32:   # a narrower counter's high word reads 0
                    with m.Case(counter_register(index, 1)):
                        m.d.comb += host.registers.rdata.eq(counter[32:])
        return m
