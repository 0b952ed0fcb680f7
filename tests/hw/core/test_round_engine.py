"""The round engine in Amaranth's simulator: weight groups stored as bit planes
at every precision (and fold), and activation words, come out of it as the
right lane values, packed for each PE mode, one step per cycle."""

# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from hw import timing
from hw.config import AcceleratorConfig
from hw.isa import ACT_WORD_BITS, GROUP_SIZE
from hw.pe import PeMode
from hw.pe.modes import BRICK_MAP, SLICE_BITS
from hw.round_engine import RoundEngine
from sw.compile import encoding as enc

CONFIG = AcceleratorConfig("engine-test", rows=2, cols=2, acc_width=24, program_depth=16,
                           chunk_depth=16, wptr_depth=4, param_depth=4, weight_depth=64,
                           act_depth=64, result_depth=4)
R, C = CONFIG.rows, CONFIG.cols
BASE_CONFIG = CONFIG


@pytest.fixture(autouse=True, params=[False, True], ids=["shifted", "permuted"])
def buffers(request, monkeypatch):
    """Every test with the chunk buffers shifted by the lane count (slots
    of the activation precision: packed_activations) and with
    `permuted_buffers` (captured in lane order, shifted by one; 4-bit slots)."""
    import dataclasses
    import sys
    monkeypatch.setattr(sys.modules[__name__], "CONFIG",
                        dataclasses.replace(BASE_CONFIG, permuted_buffers=request.param,
                                            packed_activations=not request.param))
    return request.param


def unpack(word, mode, operand):
    """Lane values of an 8-bit operand word (inverse of BRICK_MAP placement)."""
    index = 0 if operand == "weight" else 1
    bits = mode.weight_bits if operand == "weight" else mode.activation_bits
    lanes = [0] * mode.lanes
    for brick, operands in enumerate(BRICK_MAP[mode]):
        lane, part = operands[index]
        lanes[lane] |= ((word >> (brick * SLICE_BITS)) & 3) << (part * SLICE_BITS)
    if operand == "weight":
        lanes = [v - (1 << bits) if v >> (bits - 1) else v for v in lanes]
    return lanes


def run_engine(chunks, weight_banks, act_banks, reads=None, slot_bits=4):
    """Run one round over `chunks` (descriptor words); return per step
    (mode, weight lanes per row, activation lanes per column). `reads`, a
    list, gets the cycles (from the start's) of activation reads."""
    m = Module()
    m.submodules.engine = engine = RoundEngine(CONFIG)
    mems = {
        "chunks": memory.Memory(shape=CONFIG.chunk_width, depth=CONFIG.chunk_depth, init=chunks),
        "wptr": memory.Memory(shape=CONFIG.wptr_width, depth=CONFIG.wptr_depth, init=[0]),
    }
    for r in range(R):
        mems[f"w{r}"] = memory.Memory(shape=GROUP_SIZE, depth=CONFIG.weight_depth, init=weight_banks[r])
    for c in range(C):
        mems[f"a{c}"] = memory.Memory(shape=ACT_WORD_BITS, depth=CONFIG.act_depth, init=act_banks[c])
    for name, mem in mems.items():
        m.submodules[name] = mem
    ports = [(engine.chunks, mems["chunks"]), (engine.wptr, mems["wptr"])]
    ports += [(engine.weights[r], mems[f"w{r}"]) for r in range(R)]
    ports += [(engine.acts[c], mems[f"a{c}"]) for c in range(C)]
    for request, mem in ports:
        port = mem.read_port()
        m.d.comb += [port.addr.eq(request.addr), port.en.eq(request.en), request.data.eq(port.data)]

    sim = Simulator(m)
    sim.add_clock(1e-6)
    steps = []

    async def testbench(ctx):
        ctx.set(engine.in_h, 1)
        ctx.set(engine.in_w, C)
        ctx.set(engine.in_words, slot_bits)
        ctx.set(engine.in_bits, slot_bits)
        ctx.set(engine.chunk_count, len(chunks))
        ctx.set(engine.start, 1)
        await ctx.tick()
        ctx.set(engine.start, 0)
        cycles = 0
        while True:
            if reads is not None and any(ctx.get(port.en) for port in engine.acts):
                reads.append(cycles + 1)
            if ctx.get(engine.array_valid):
                mode = PeMode(ctx.get(engine.array_modes[0]))
                steps.append((mode, cycles,
                              [unpack(ctx.get(engine.array_weights[r]), mode, "weight") for r in range(R)],
                              [unpack(ctx.get(engine.array_acts[c]), mode, "activation") for c in range(C)]))
            if ctx.get(engine.done):
                break
            await ctx.tick()
            cycles += 1

    sim.add_testbench(testbench)
    sim.run()
    return steps


CASES = [  # mode, per-row (p, fold), activation bits
    (PeMode.W4A4, [(4, 0), (3, 1)], 4),
    (PeMode.W4A4, [(3, 0), (2, 1)], 3),
    (PeMode.W4A2, [(4, 0), (2, 0)], 2),
    (PeMode.W2A4, [(2, 0), (2, 0)], 3),
    (PeMode.W2A2, [(2, 0), (0, 0)], 2),
]


@pytest.mark.parametrize("mode, rows, act_bits", CASES, ids=[f"{m.name}-{r}-a{a}" for m, r, a in CASES])
def test_bit_planes_come_out_as_lane_values(mode, rows, act_bits):
    rng = np.random.default_rng(mode.value)
    groups, weight_banks = [], []
    for p, fold in rows:
        q = rng.integers(-(1 << (p - 1)), 1 << (p - 1), 16) if p else np.zeros(16, int)
        groups.append(q << fold)
        # Two chunks of the same group: each row's pointer advances by p.
        weight_banks.append(2 * enc.pack_planes(q, p) if p else [])
    acts = rng.integers(0, 1 << act_bits, (C, 16))
    slot_bits = act_bits if CONFIG.packed_activations else 4
    act_banks = [[int(word) for word in enc.pack_slots(acts[c], slot_bits)] for c in range(C)]
    pcodes = [0 if p == 0 else p - 1 for p, _ in rows]
    chunk = enc.encode_chunk(0, 0, 0, mode, pcodes, [fold for _, fold in rows])
    # Two identical chunks: the second's fetch overlaps the first's steps.
    reads = []
    steps = run_engine([chunk, chunk], weight_banks, act_banks, reads, slot_bits)
    per_chunk = 16 // mode.lanes
    assert len(steps) == 2 * per_chunk
    cycles = [cycle for _, cycle, _, _ in steps]
    assert cycles == list(range(cycles[0], cycles[0] + 2 * per_chunk)), "a step every cycle"
    # The timing constants the golden model uses (hw/timing.py): the first
    # step PREFETCH_CYCLES after the start, the first activation read
    # FIRST_ACT_READ_CYCLES after it (the shortcut loader's reads end before).
    assert cycles[0] + 1 == timing.PREFETCH_CYCLES
    assert reads[0] == timing.FIRST_ACT_READ_CYCLES
    assert len(reads) == 2 * slot_bits, "a chunk reads its slots' words only"
    for index, (step_mode, _, weights, activations) in enumerate(steps):
        assert step_mode == mode
        i = index % per_chunk
        lanes = range(i * mode.lanes, (i + 1) * mode.lanes)
        for r in range(R):
            assert weights[r] == [int(groups[r][e]) for e in lanes], (index, r)
        for c in range(C):
            assert activations[c] == [int(acts[c, e]) for e in lanes], (index, c)


def test_the_shortest_round_is_one_w2a2_chunk():
    """hw/timing.py's MIN_ROUND_STEPS, which the round-start rules rely on."""
    assert timing.MIN_ROUND_STEPS == GROUP_SIZE // max(mode.lanes for mode in PeMode)
