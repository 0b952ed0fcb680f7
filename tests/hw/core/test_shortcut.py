"""The residual shortcut's two components in Amaranth's simulator, each at
its ports: `ShortcutLoader` (a tile in, the words of docs/isa.md "Residual
shortcut" read from every bank, one a cycle, and handed on as captures) and
`ShortcutBuffer` (captures in, the code of any row and column of either
buffer out), on arrays whose channel tiles start at every slot of a word
(R = 3, 5: J differs between tiles) and on ones that do not (R = 4, 8)."""

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.shortcut import ShortcutBuffer, ShortcutLoader
from hw.timing import shortcut_reads_hidden, shortcut_words_max

BASE = AcceleratorConfig("shortcut", rows=4, cols=4, act_depth=1024)


def config_of(rows, cols):
    return dataclasses.replace(BASE, rows=rows, cols=cols)


def simulate(dut, testbenches=(), processes=(), cycles=200):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run_until(1e-6 * cycles)


def test_words_max_and_the_drain_window():
    # Channel tiles of R channels start at slot (ktile * R) mod 4.
    for rows in range(1, 33):
        spans = {((k * rows + rows - 1) // 4 - k * rows // 4 + 1) for k in range(8)}
        assert max(spans) == shortcut_words_max(rows), rows
        for cols in (2, 4, 8, 16, 32):
            assert shortcut_reads_hidden(rows, cols)


@pytest.mark.parametrize("rows, cols", [(3, 2), (4, 4), (5, 4), (8, 8)])
def test_loader_reads_the_tile_words_and_hands_them_on(rows, cols):
    config = config_of(rows, cols)
    dut = ShortcutLoader(config)
    rng = random.Random(rows * 10 + cols)
    memory = [[rng.getrandbits(16) for _ in range(config.act_depth)] for _ in range(cols)]
    tiles = [dict(y=int(rng.randrange(4)), x0=cols * rng.randrange(3), ktile=k, buffer=k % 2)
             for k in range(5)]
    registers = dict(sc_base=37, out_wb=3, out_words=5)
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
            await ctx.tick().repeat(shortcut_words_max(rows) + 2)
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

    simulate(dut, [driver], [memories, consumer], cycles=len(tiles) * (shortcut_words_max(rows) + 3) + 10)
    expected_reads, expected_captures = [], []
    for tile in tiles:
        first = tile["ktile"] * rows // 4
        words = (tile["ktile"] * rows + rows - 1) // 4 - first + 1
        pixel = registers["sc_base"] + (tile["y"] * registers["out_wb"] + tile["x0"] // cols) \
            * registers["out_words"] + first
        for j in range(words):
            expected_reads.append(pixel + j)
            expected_captures.append((tile["buffer"], j, [memory[c][pixel + j] for c in range(cols)]))
    assert reads == expected_reads
    assert captures == expected_captures
    assert sum(events) == cols * len(expected_reads)


@pytest.mark.parametrize("rows, cols", [(3, 2), (5, 4), (8, 8)])
def test_buffer_offers_the_code_of_every_row_and_column(rows, cols):
    config = config_of(rows, cols)
    dut = ShortcutBuffer(config)
    rng = random.Random(rows + cols)
    words_max = shortcut_words_max(rows)
    contents = [[[rng.getrandbits(16) for _ in range(words_max)] for _ in range(cols)] for _ in range(2)]

    async def testbench(ctx):
        for buffer in range(2):
            for j in range(words_max):
                ctx.set(dut.captures.valid, 1)
                ctx.set(dut.captures.payload, {"buffer": buffer, "index": j,
                                               "words": [contents[buffer][c][j] for c in range(cols)]})
                await ctx.tick()
        ctx.set(dut.captures.valid, 0)
        # Every (buffer, offset, row, column) whose slot lies in the buffer.
        for buffer in range(2):
            for offset in range(4):
                for row in range(rows):
                    e = offset + row
                    if e >= 4 * words_max:
                        continue
                    for col in range(cols):
                        ctx.set(dut.ppu.buffer, buffer)
                        ctx.set(dut.ppu.offset, offset)
                        ctx.set(dut.ppu.row, row)
                        ctx.set(dut.ppu.col, col)
                        word = contents[buffer][col][e // 4]
                        assert ctx.get(dut.ppu.code) == (word >> (4 * (e % 4))) & 15

    simulate(dut, [testbench], cycles=20 + 2 * words_max)
