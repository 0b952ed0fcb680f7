"""The round engine's chunk buffers in Amaranth's simulator, at their
boundary, with the buffers shifted by the lane count (`ChunkStore`, its
activations in 2-, 3- and 4-bit slots: packed_activations) and with
`permuted_buffers` (`PermutedChunkStore`, 4-bit slots). The testbench is the
fetcher (a fetch begins when the buffer it fills is `free`, its four
captures two cycles later) and the emitter (it takes a chunk when `chunks`
offers one and it is idle or in its last step, then steps G / lanes
times). Every step's taps are the chunk's next lanes, chunks come out in
order with their headers whatever the modes in a row, and when the
fetcher keeps up the emitter gets a step in every cycle."""

# amaranth: UnusedElaboratable=no

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import ACT_SLOT_BITS, ACT_WORD_BITS, GROUP_SIZE
from hw.pe import PeMode
from hw.round_engine import FETCH_READS, PLANES, ChunkBuffers

BASE = AcceleratorConfig("buffers-test", rows=3, cols=2, program_depth=16, chunk_depth=16,
                         wptr_depth=4, param_depth=4, weight_depth=64, act_depth=64, result_depth=4)
# (config, slot bits): the shifted store with each slot width, the permuted one (4-bit slots).
CONFIGS = [(BASE, 2), (BASE, 3), (BASE, 4),
           (dataclasses.replace(BASE, permuted_buffers=True, packed_activations=False), 4)]
IDS = ["shifted-s2", "shifted-s3", "shifted-s4", "permuted"]
R, C = BASE.rows, BASE.cols


def random_chunk(rng, mode=None):
    return {
        "mode": mode if mode is not None else rng.choice(list(PeMode)),
        "rows": [(rng.randrange(4), rng.getrandbits(1)) for _ in range(R)],
        "planes": [[rng.getrandbits(GROUP_SIZE) for _ in range(PLANES)] for _ in range(R)],
        "words": [[rng.getrandbits(ACT_WORD_BITS) for _ in range(FETCH_READS)] for _ in range(C)],
    }


def expected_taps(chunk, step, slot_bits):
    """Per row and plane, the lanes' bits; per column, the lanes' slots
    (element e at bit slot_bits * e of the captured words)."""
    lanes = chunk["mode"].lanes
    elements = range(step * lanes, (step + 1) * lanes)
    slots = [sum(word << (ACT_WORD_BITS * k) for k, word in enumerate(words)) for words in chunk["words"]]
    planes = [[[(plane >> e) & 1 for e in elements] for plane in row] for row in chunk["planes"]]
    acts = [[(slot >> (slot_bits * e)) & ((1 << slot_bits) - 1) for e in elements] for slot in slots]
    return planes, acts


def run(config, chunks, *, seed, offer=1.0, slot_bits=ACT_SLOT_BITS):
    """Fetches and emits `chunks`; returns per emitted step (chunk index,
    step, taps seen) and the cycles of the steps."""
    rng = random.Random(seed)
    dut = ChunkBuffers(config)
    steps, step_cycles = [], []

    async def testbench(ctx):
        ctx.set(dut.slot_bits, slot_bits)
        to_fetch = 0                    # next chunk to fetch
        fetches = []                    # (chunk index, buffer, start cycle) of every fetch begun
        target = 0                      # the buffer the next fetch fills
        emitting = None                 # (chunk index, step, steps)
        to_emit = 0
        cycle = 0
        while to_emit < len(chunks) or emitting is not None:
            assert cycle < 40 * len(chunks), "stuck"
            # The emitter's progress in this cycle.
            if emitting is not None:
                index, step, count = emitting
                ctx.set(dut.progress.shift, 1)
                ctx.set(dut.progress.mode, chunks[index]["mode"])
                ctx.set(dut.progress.last, step == count - 1)
                ctx.set(dut.progress.ending, step >= count - 2)
            else:
                for name in ("shift", "last", "ending"):
                    ctx.set(getattr(dut.progress, name), 0)
            # The fetcher: captures of the fetch in flight, then maybe a new fetch.
            ctx.set(dut.captures.valid, 0)
            for index, buffer, start in fetches[-2:]:
                k = cycle - start - 2
                if not 0 <= k < FETCH_READS:
                    continue
                capture = dut.captures.payload
                ctx.set(dut.captures.valid, 1)
                ctx.set(capture.buffer, buffer)
                ctx.set(capture.index, k)
                ctx.set(capture.last, k == FETCH_READS - 1)
                for r in range(R):
                    ctx.set(capture.planes[r], chunks[index]["planes"][r][k])
                for c in range(C):
                    ctx.set(capture.words[c], chunks[index]["words"][c][k])
            fetch_idle = not fetches or cycle - fetches[-1][2] >= FETCH_READS      # idle or in the last read
            begin = (to_fetch < len(chunks) and fetch_idle and rng.random() < offer
                     and ctx.get(dut.free) >> target & 1)
            ctx.set(dut.begin.valid, begin)
            if begin:
                chunk = chunks[to_fetch]
                ctx.set(dut.begin.payload.buffer, target)
                ctx.set(dut.begin.payload.header.mode, chunk["mode"])
                for r, (pcode, fold) in enumerate(chunk["rows"]):
                    ctx.set(dut.begin.payload.header.rows[r].pcode, pcode)
                    ctx.set(dut.begin.payload.header.rows[r].fold, fold)
            # The emitter: this cycle's taps, then maybe the next chunk.
            if emitting is not None:
                index, step, count = emitting
                taps = ([[[ctx.get(dut.taps.planes[r][k]) >> lane & 1 for lane in range(chunks[index]["mode"].lanes)]
                          for k in range(PLANES)] for r in range(R)],
                        [[ctx.get(dut.taps.acts[c][lane]) for lane in range(chunks[index]["mode"].lanes)]
                         for c in range(C)])
                steps.append((index, step, taps))
                step_cycles.append(cycle)
            ready = emitting is None or emitting[1] == emitting[2] - 1
            ctx.set(dut.chunks.ready, ready)
            taken = ready and ctx.get(dut.chunks.valid)
            if taken:
                assert to_emit < to_fetch, "a chunk offered before it was fetched"
                header = dut.chunks.payload
                chunk = chunks[to_emit]
                assert ctx.get(header.mode) == chunk["mode"]
                assert [(ctx.get(header.rows[r].pcode), ctx.get(header.rows[r].fold)) for r in range(R)] \
                    == chunk["rows"]
            await ctx.tick()
            cycle += 1
            if begin:
                fetches.append((to_fetch, target, cycle - 1))
                to_fetch += 1
                target ^= 1
            if emitting is not None:
                index, step, count = emitting
                emitting = (index, step + 1, count) if step + 1 < count else None
            if taken:
                emitting = (to_emit, 0, GROUP_SIZE // chunks[to_emit]["mode"].lanes)
                to_emit += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return steps, step_cycles


def check(chunks, steps, slot_bits):
    assert [(index, step) for index, step, _ in steps] == [
        (index, step) for index, chunk in enumerate(chunks) for step in range(GROUP_SIZE // chunk["mode"].lanes)]
    for index, step, taps in steps:
        assert taps == expected_taps(chunks[index], step, slot_bits), (index, step)


@pytest.mark.parametrize("config, slot_bits", CONFIGS, ids=IDS)
@pytest.mark.parametrize("seed", range(3))
def test_every_step_gets_its_lanes(config, slot_bits, seed):
    rng = random.Random(seed)
    chunks = [random_chunk(rng) for _ in range(10)]
    steps, _ = run(config, chunks, seed=seed, offer=0.5, slot_bits=slot_bits)
    check(chunks, steps, slot_bits)


@pytest.mark.parametrize("config, slot_bits", CONFIGS, ids=IDS)
def test_a_step_every_cycle_when_the_fetcher_keeps_up(config, slot_bits):
    """W2A2 chunks (4 steps, as short as the fetch) between others: the
    buffer emptying is refilled from its last two steps on."""
    rng = random.Random(4)
    modes = [PeMode.W2A2, PeMode.W2A2, PeMode.W4A4, PeMode.W2A2, PeMode.W4A2, PeMode.W2A4, PeMode.W2A2]
    chunks = [random_chunk(rng, mode) for mode in modes]
    steps, cycles = run(config, chunks, seed=4, slot_bits=slot_bits)
    check(chunks, steps, slot_bits)
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles)))
