# amaranth: UnusedElaboratable=no
"""The controller in Amaranth's simulator, at its ports, with a program
memory, a round engine, the OAB and the PPU modelled around it: SET writes
the layer registers (their low bits; unknown registers ignored), TILE the
tile, ROUND starts the engine with the instruction's fields and then a
drain with the tile's buffer; a tile's first round waits while the PPU
still has the tile two back (both tile counters); SET and HALT wait for the
PPU; a bad opcode stops with `error` and its address. Every
instruction takes hw/timing.py's FETCH_CYCLES."""

import dataclasses

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.controller import Controller
from hw.isa import INSTRUCTION, Opcode, Register
from hw.timing import FETCH_CYCLES

CONFIG = AcceleratorConfig("controller", rows=2, cols=2, program_depth=64, coord_bits=10)
ENGINE_CYCLES = 5       # round start to round_done
DRAIN_CYCLES = 3        # drain accepted to drained


def SET(register, value):
    return INSTRUCTION.const({"opcode": Opcode.SET, "set": {"register": register, "value": value}}).as_bits()


def TILE(y, x0, ktile):
    return INSTRUCTION.const({"opcode": Opcode.TILE, "tile": {"y": y, "x0": x0, "ktile": ktile}}).as_bits()


def ROUND(**fields):
    return INSTRUCTION.const({"opcode": Opcode.ROUND, "round": fields}).as_bits()


HALT = INSTRUCTION.const({"opcode": Opcode.HALT}).as_bits()


def run(program, config=CONFIG, ppu=None, cycles=300):
    """Runs `program` (a list of words); `ppu(cycle, log)` -> (job_done, ppu_quiet)
    each cycle (default: done at once, quiet). Returns the log of events."""
    dut = Controller(config)
    log = {"rounds": [], "drains": [], "fetches": [], "stalls": 0, "done": None, "layer": None}

    async def environment(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        round_at = drain_at = None
        for cycle in range(cycles):
            job_done, quiet = ppu(cycle, log) if ppu else (0, 1)
            ctx.set(dut.job_done, job_done)
            ctx.set(dut.ppu_quiet, quiet)
            ctx.set(dut.round_done, round_at is not None and cycle == round_at + ENGINE_CYCLES)
            ctx.set(dut.drained, drain_at is not None and cycle == drain_at + DRAIN_CYCLES)
            if ctx.get(dut.round.valid):
                round_at = cycle
                log["rounds"].append((cycle, ctx.get(dut.round.payload)))
            if ctx.get(dut.drain.valid):
                drain_at = cycle
                log["drains"].append((cycle, ctx.get(dut.drain.payload)))
            log["stalls"] += ctx.get(dut.stall)
            fetch = ctx.get(dut.program.en)
            address = ctx.get(dut.program.addr)
            if fetch:
                log["fetches"].append(cycle)
            if ctx.get(dut.done) and log["done"] is None:
                log["done"] = cycle
                log.update(error=ctx.get(dut.error), error_pc=ctx.get(dut.error_pc),
                           running=ctx.get(dut.running), layer=ctx.get(dut.layer), tile=ctx.get(dut.tile))
            await ctx.tick()
            if fetch:   # the program memory: data the cycle after en, held until the next read
                ctx.set(dut.program.data, program[address] if address < len(program) else 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(environment)
    sim.run()
    return log


def test_set_tile_round_halt():
    fields = dict(chunk_start=5, chunk_count=2, wptr=3, shift=2, input2=1, first=1, last=1)
    program = [SET(Register.IN_H, 7), SET(Register.PAD, 0x1F), SET(40, 9), SET(Register.REQ_SHIFT, 0xFFFF_FFFF),
               TILE(3, 8, 1), ROUND(**fields), HALT]
    log = run(program)
    assert log["error"] == 0 and log["running"] == 0
    layer = log["layer"]
    assert (layer.in_h, layer.pad, layer.req_shift, layer.cout) == (7, 0xF, 63, 0)
    assert log["tile"] == {"y": 3, "x0": 8, "ktile": 1}
    # Every instruction is FETCH_CYCLES apart, except the ROUND's engine and drain.
    fetches = log["fetches"]
    assert len(fetches) == len(program)
    assert all(b - a == FETCH_CYCLES for a, b in zip(fetches[:5], fetches[1:6]))
    (start, payload), = log["rounds"]
    assert start == fetches[5] + FETCH_CYCLES      # no stall for the first tile
    assert {name: getattr(payload, name) for name in fields} == fields
    (drain, payload), = log["drains"]
    assert drain == start + ENGINE_CYCLES
    assert payload == {"buffer": 0, "shift": 2, "first": 1, "last": 1}
    assert fetches[6] == drain + DRAIN_CYCLES + 1
    assert log["done"] == fetches[6] + FETCH_CYCLES + 1    # HALT's own cycle (the PPU is quiet)


@pytest.mark.parametrize("narrow", [False, True], ids=["wide-counts", "narrow-counts"])
def test_a_tile_waits_for_its_buffer(narrow):
    """Five one-round tiles; the PPU finishes a tile when the test says: tile
    n's round waits for tile n - 2's job (the OAB buffer it will use)."""
    config = dataclasses.replace(CONFIG, narrow_counts=narrow)
    program = [ROUND(first=1, last=1, shift=n) for n in range(5)] + [HALT]
    job_done_at = [60, 100, 150, 151, 152]

    def ppu(cycle, log):
        return cycle in job_done_at, cycle > job_done_at[-1]

    log = run(program, config, ppu)
    starts = [cycle for cycle, _ in log["rounds"]]
    assert [payload.buffer for _, payload in log["drains"]] == [0, 1, 0, 1, 0]
    assert [payload.shift for _, payload in log["drains"]] == list(range(5))
    assert starts[2:] == [done + 1 for done in job_done_at[:3]]
    waits = [start - (fetch + FETCH_CYCLES) for start, fetch in zip(starts, log["fetches"])]
    assert waits[:2] == [0, 0] and min(waits[2:]) > 0
    assert log["stalls"] == sum(waits)
    assert log["done"] > job_done_at[-1]     # HALT waits for the PPU


def test_set_waits_for_the_ppu_and_a_bad_opcode_stops():
    program = [SET(Register.COUT, 3), SET(Register.COUT, 4),
               9 << 60, HALT]

    def ppu(cycle, log):
        return 0, cycle >= 20

    log = run(program, ppu=ppu)
    assert log["fetches"][:2] == [0, 20 + 1]     # the first SET waited in SET_WAIT until cycle 20
    assert log["error"] == 1 and log["running"] == 0
    assert log["error_pc"] == 2                  # the bad instruction's address (docs/isa.md)
    assert log["layer"].cout == 4
    assert len(log["fetches"]) == 3


def test_layer_registers_are_as_wide_as_their_readers():
    from amaranth.hdl import Shape

    from hw.controller import ENGINE_REGISTERS, LAYER_REGISTERS
    from hw.ppu import PPU_REGISTERS, PostProcessor
    from hw.round_engine import RoundEngine
    engine = RoundEngine(CONFIG).signature.members
    for name, width in ENGINE_REGISTERS.items():
        assert Shape.cast(engine[name].shape).width == width, name
    assert PostProcessor(CONFIG).signature.members["layer"].shape == PPU_REGISTERS
    assert [name for name in LAYER_REGISTERS.members] == [r.name.lower() for r in Register]
