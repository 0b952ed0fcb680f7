# amaranth: UnusedElaboratable=no
"""The controller in Amaranth's simulator, at its ports, with a program
memory, a round engine, the OAB and the PPU modelled around it: SET writes
the layer registers (their low bits; unknown registers ignored), TILE the
tile, ROUND starts the engine with the instruction's fields once the engine
is done and goes on to the next instruction, and gives the OAB the round's
record (buffer, shift, first/last, the tile at its start) when the engine is
done; a tile's first round waits while the PPU still has the tile two back
(both tile counters); after a residual tile's last round, and on a tall
array, rounds start a few cycles after the previous done; SET and
HALT wait for everything to be quiet; a bad opcode stops with `error` and
its address. Every instruction takes hw/timing.py's FETCH_CYCLES."""

import dataclasses

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.controller import Controller
from hw.isa import INSTRUCTION, Opcode, Register
from hw.timing import FETCH_CYCLES, round_start_gap

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


def run(program, config=CONFIG, ppu=None, cycles=300, engine_cycles=ENGINE_CYCLES):
    """Runs `program` (a list of words); `ppu(cycle, log)` -> (job_done, ppu_quiet)
    each cycle (default: done at once, quiet). The engine is done
    `engine_cycles` after a start and busy in between; the OAB holds a record
    for DRAIN_CYCLES after it. Returns the log of events."""
    dut = Controller(config)
    log = {"rounds": [], "drains": [], "fetches": [], "stalls": 0, "done": None, "layer": None,
           "tiles": []}

    async def environment(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        round_at = None
        drains = []
        for cycle in range(cycles):
            job_done, ppu_quiet = ppu(cycle, log) if ppu else (0, 1)
            engine_busy = round_at is not None and round_at < cycle <= round_at + engine_cycles
            oab_idle = not any(at < cycle <= at + DRAIN_CYCLES for at in drains)
            ctx.set(dut.job_done, job_done)
            ctx.set(dut.quiet, ppu_quiet and oab_idle and not engine_busy)
            ctx.set(dut.engine_busy, engine_busy)
            ctx.set(dut.round_done, round_at is not None and cycle == round_at + engine_cycles)
            if ctx.get(dut.round.valid):
                assert not engine_busy or cycle == round_at + engine_cycles
                round_at = cycle
                log["rounds"].append((cycle, ctx.get(dut.round.payload)))
            if ctx.get(dut.drain.valid):
                drains.append(cycle)
                log["drains"].append((cycle, ctx.get(dut.drain.payload)))
            log["tiles"].append(ctx.get(dut.tile))
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
    # Every instruction is FETCH_CYCLES apart, and the next one is fetched
    # the cycle after the ROUND starts.
    fetches = log["fetches"]
    assert len(fetches) == len(program)
    assert all(b - a == FETCH_CYCLES for a, b in zip(fetches[:5], fetches[1:6]))
    (start, payload), = log["rounds"]
    assert start == fetches[5] + FETCH_CYCLES      # no stall for the first tile
    assert {name: getattr(payload, name) for name in fields} == fields
    (drain, payload), = log["drains"]
    assert drain == start + ENGINE_CYCLES
    assert payload == {"buffer": 0, "shift": 2, "first": 1, "last": 1, "tile": {"y": 3, "x0": 8, "ktile": 1}}
    assert fetches[6] == start + 1
    # HALT waits for the engine and the OAB; done rises the cycle after.
    assert log["done"] == drain + DRAIN_CYCLES + 1 + 1


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
    # Round 1 waits for the engine only (no stall), rounds 2-4 for their buffers.
    assert starts[1] == starts[0] + ENGINE_CYCLES
    assert starts[2:] == [done + 1 for done in job_done_at[:3]]
    waits = [start - (fetch + FETCH_CYCLES) for start, fetch in zip(starts, log["fetches"])]
    assert waits[0] == 0 and min(waits[2:]) > 0
    assert log["stalls"] == sum(waits[2:])
    assert log["done"] > job_done_at[-1]     # HALT waits for the PPU


def test_the_next_instructions_run_while_a_round_does():
    """TILE changes the tile while the round runs; the record keeps the
    round's; the next ROUND waits for the engine, not for the drain."""
    program = [TILE(1, 2, 3), ROUND(first=1, last=1, shift=1), TILE(4, 5, 6), ROUND(first=1, last=1),
               HALT]
    log = run(program, engine_cycles=20)
    (start0, _), (start1, _) = log["rounds"]
    assert log["fetches"][2] == start0 + 1
    assert log["tiles"][start0 + 1 + FETCH_CYCLES + 1] == {"y": 4, "x0": 5, "ktile": 6}
    assert start1 == start0 + 20      # in the engine's done cycle
    tiles = [payload.tile for _, payload in log["drains"]]
    assert tiles == [{"y": 1, "x0": 2, "ktile": 3}, {"y": 4, "x0": 5, "ktile": 6}]


@pytest.mark.parametrize("sc_enable", [0, 1])
def test_after_a_residual_tiles_last_round_the_shortcut_reads_come_first(sc_enable):
    """On 11 rows a tile's shortcut is 4 words: the next round starts
    shortcut_start_gap (1) cycles after the done instead of in it."""
    from hw.timing import shortcut_start_gap
    config = dataclasses.replace(CONFIG, rows=11, cols=2)
    assert round_start_gap(11) == 0 and shortcut_start_gap(11, False) == 1
    program = [SET(Register.SC_ENABLE, sc_enable), ROUND(first=1, last=0), ROUND(first=0, last=1),
               ROUND(first=1, last=1), HALT]
    log = run(program, config)
    starts = [cycle for cycle, _ in log["rounds"]]
    dones = [cycle for cycle, _ in log["drains"]]
    assert log["fetches"][2:4] == [starts[0] + 1, starts[1] + 1]
    assert starts[1] == dones[0]
    assert starts[2] == dones[1] + (1 if sc_enable else 0)


def test_a_tall_array_spaces_its_rounds():
    config = dataclasses.replace(CONFIG, rows=32, cols=2)
    gap = round_start_gap(config.rows)
    assert gap > 1
    log = run([ROUND(first=1, last=0), ROUND(first=0, last=0), ROUND(first=0, last=1), HALT], config)
    starts = [cycle for cycle, _ in log["rounds"]]
    dones = [cycle for cycle, _ in log["drains"]]
    assert [b - a for a, b in zip(dones, starts[1:])] == [gap, gap]


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
