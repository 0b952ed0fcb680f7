"""The residual shortcut's two components in Amaranth's simulator, each at
its ports: `ShortcutLoader` (a tile in, the words of docs/isa.md "Residual
shortcut" read from every bank, one a cycle, and handed on as captures) and
`ShortcutBuffer` (captures in, the code of any row and column of either
buffer out), on arrays whose channel tiles start at every slot of a word
(R = 3, 5: J differs between tiles) and on ones that do not (R = 4, 8),
with shortcut maps in 2-, 3- and 4-bit slots (packed_activations: a 3-bit
slot may straddle two words) and in 4-bit slots only."""

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.shortcut import ShortcutBuffer, ShortcutLoader
from hw.timing import shortcut_reads_hidden, shortcut_words, shortcut_words_max

BASE = AcceleratorConfig("shortcut", rows=4, cols=4, act_depth=1024)


def config_of(rows, cols, packed=True):
    return dataclasses.replace(BASE, rows=rows, cols=cols, packed_activations=packed)


def simulate(dut, testbenches=(), processes=(), cycles=200):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run_until(1e-6 * cycles)


def test_words_max_and_the_drain_window():
    # Channel tiles of R channels start at slot (ktile * R) mod 4 of 4-bit slots.
    for rows in range(1, 33):
        spans = {((k * rows + rows - 1) // 4 - k * rows // 4 + 1) for k in range(8)}
        assert max(spans) == shortcut_words_max(rows, False), rows
        # Slots of s bits: the tile's R * s bits from bit s * ktile * R.
        spans = {(s * (k + 1) * rows - 1) // 16 - s * k * rows // 16 + 1
                 for k in range(32) for s in (2, 3, 4)}
        assert max(spans) == shortcut_words_max(rows, True), rows
        for cols in (2, 4, 8, 16, 32):
            assert shortcut_reads_hidden(rows, cols, False) and shortcut_reads_hidden(rows, cols, True)


LOADER_CASES = [(3, 2, 4), (4, 4, 3), (5, 4, 2), (8, 8, 3), (4, 4, None)]


@pytest.mark.parametrize("rows, cols, slot_bits", LOADER_CASES)
def test_loader_reads_the_tile_words_and_hands_them_on(rows, cols, slot_bits):
    """slot_bits None: a core without packed slots (4-bit)."""
    config = config_of(rows, cols, packed=slot_bits is not None)
    slot_bits = slot_bits or 4
    dut = ShortcutLoader(config)
    rng = random.Random(rows * 10 + cols)
    memory = [[rng.getrandbits(16) for _ in range(config.act_depth)] for _ in range(cols)]
    tiles = [dict(y=int(rng.randrange(4)), x0=cols * rng.randrange(3), ktile=k, buffer=k % 2)
             for k in range(5)]
    registers = dict(sc_base=37, out_wb=3, sc_words=5, slot_bits=slot_bits)
    reads, captures, events = [], [], []

    async def driver(ctx):
        for name, value in registers.items():
            ctx.set(getattr(dut, name), value)
        for tile in tiles:
            ctx.set(dut.start, 1)
            for name, value in tile.items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            ctx.set(dut.start, 0)
            # The inputs may change once started (the controller's tile does).
            ctx.set(dut.y, 0)
            ctx.set(dut.ktile, 0)
            await ctx.tick().repeat(shortcut_words_max(rows, config.packed_activations) + 2)
            assert not ctx.get(dut.busy)

    async def memories(ctx):
        async for _, _, *ports in ctx.tick().sample(*[p.en for p in dut.acts], *[p.addr for p in dut.acts],
                                                     dut.reads):
            enables, addresses, count = ports[:cols], ports[cols:2 * cols], ports[-1]
            if any(enables):
                assert all(enables) and len(set(addresses)) == 1
                reads.append(addresses[0])
            events.append(count)
            for c in range(cols):
                if enables[c]:
                    ctx.set(dut.acts[c].data, memory[c][addresses[c]])

    async def consumer(ctx):
        async for _, _, valid, payload in ctx.tick().sample(dut.captures.valid, dut.captures.payload):
            if valid:
                captures.append((payload.buffer, payload.index, [int(w) for w in payload.words]))

    words_max = shortcut_words_max(rows, config.packed_activations)
    simulate(dut, [driver], [memories, consumer], cycles=len(tiles) * (words_max + 3) + 10)
    expected_reads, expected_captures = [], []
    for tile in tiles:
        first, words = shortcut_words(rows, tile["ktile"], slot_bits)
        pixel = registers["sc_base"] + (tile["y"] * registers["out_wb"] + tile["x0"] // cols) \
            * registers["sc_words"] + first
        for j in range(words):
            expected_reads.append(pixel + j)
            expected_captures.append((tile["buffer"], j, [memory[c][pixel + j] for c in range(cols)]))
    assert reads == expected_reads
    assert captures == expected_captures
    assert sum(events) == cols * len(expected_reads)


BUFFER_CASES = [(3, 2, 4), (5, 4, 3), (8, 8, 2), (3, 2, 3), (5, 4, None)]


@pytest.mark.parametrize("rows, cols, slot_bits", BUFFER_CASES)
@pytest.mark.parametrize("signed", [0, 1])
def test_buffer_offers_the_code_of_every_row_and_column(rows, cols, slot_bits, signed):
    """The code of row `row` is the slot at bit (s * first) mod 16 + s * row
    of the words, sign-extended to 4 bits when signed (slot_bits None: a
    core without packed slots, 4-bit slot (first mod 4) + row)."""
    config = config_of(rows, cols, packed=slot_bits is not None)
    slot_bits = slot_bits or 4
    dut = ShortcutBuffer(config)
    rng = random.Random(rows + cols)
    words_max = shortcut_words_max(rows, config.packed_activations)
    contents = [[[rng.getrandbits(16) for _ in range(words_max)] for _ in range(cols)] for _ in range(2)]

    async def testbench(ctx):
        ctx.set(dut.slot_bits, slot_bits)
        ctx.set(dut.signed, signed)
        for buffer in range(2):
            for j in range(words_max):
                ctx.set(dut.captures.valid, 1)
                ctx.set(dut.captures.payload, {"buffer": buffer, "index": j,
                                               "words": [contents[buffer][c][j] for c in range(cols)]})
                await ctx.tick()
        ctx.set(dut.captures.valid, 0)
        # Every (buffer, first channel, row, column) whose slot lies in the buffer.
        for buffer in range(2):
            for first in range(16):
                for row in range(rows):
                    start = (slot_bits * first) % 16 + slot_bits * row
                    if start + slot_bits > 16 * words_max:
                        continue
                    for col in range(cols):
                        ctx.set(dut.ppu.buffer, buffer)
                        ctx.set(dut.ppu.first, first)
                        ctx.set(dut.ppu.row, row)
                        ctx.set(dut.ppu.col, col)
                        pixel = sum(w << (16 * j) for j, w in enumerate(contents[buffer][col]))
                        code = (pixel >> start) & ((1 << slot_bits) - 1)
                        if signed and code >> (slot_bits - 1):
                            code -= 1 << slot_bits
                        assert ctx.get(dut.ppu.code) == code & 15, (buffer, first, row, col)

    simulate(dut, [testbench], cycles=20 + 2 * words_max)
