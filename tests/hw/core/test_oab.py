"""The output accumulators in Amaranth's simulator, at their ports: a round
is flushed for R + C - 2 cycles and drained in R (bottom row first), each row
shifted by the round's shift and added into its OAB entry (replacing it in
a first round); a last round's tile is offered to the PPU until taken; the
PPU reads the buffer through its port."""

import random

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.oab import OutputAccumulators

CONFIG = AcceleratorConfig("oab", rows=3, cols=4, acc_width=20)
R, C, A = CONFIG.rows, CONFIG.cols, CONFIG.acc_width


def wrap(value):
    value %= 1 << A
    return value - (value >> (A - 1) << A)


@pytest.mark.parametrize("buffer", [0, 1])
def test_rounds_drain_into_the_buffer_and_the_tile_goes_to_the_ppu(buffer):
    rng = random.Random(buffer)
    dut = OutputAccumulators(CONFIG)
    rounds = [dict(shift=0, first=1, last=0), dict(shift=4, first=0, last=0), dict(shift=9, first=0, last=1)]
    values = [[[rng.randrange(-(1 << (A - 1)), 1 << (A - 1)) for _ in range(C)] for _ in range(R)]
              for _ in rounds]
    tile = {"y": 5, "x0": 12, "ktile": 2}
    log = {"drained": [], "reads": 0, "writes": 0, "jobs": []}

    async def testbench(ctx):
        ctx.set(dut.tile, tile)
        ctx.set(dut.ppu.en, 0)
        ctx.set(dut.job.ready, 0)
        cycle = 0
        for number, round_ in enumerate(rounds):
            ctx.set(dut.round.payload, {**round_, "buffer": buffer})
            ctx.set(dut.round.valid, 1)
            accepted = cycle
            step = 0
            while True:
                # The array: the bottom row first, one row up per drain cycle.
                if ctx.get(dut.array_drain):
                    ctx.set(dut.array_out, values[number][R - 1 - step])
                    step += 1
                drained = ctx.get(dut.drained)
                log["reads"] += ctx.get(dut.reads)
                log["writes"] += ctx.get(dut.writes)
                await ctx.tick()
                ctx.set(dut.round.valid, 0)
                cycle += 1
                if drained:
                    log["drained"].append(cycle - 1 - accepted)
                    break
            assert step == R
        # The job waits for the PPU.
        for _ in range(3):
            assert ctx.get(dut.job.valid)
            await ctx.tick()
        assert ctx.get(dut.job.payload) == {**tile, "buffer": buffer}
        ctx.set(dut.job.ready, 1)
        await ctx.tick()
        ctx.set(dut.job.ready, 0)
        assert not ctx.get(dut.job.valid)
        # What the PPU reads.
        for r in range(R):
            ctx.set(dut.ppu.addr, buffer * R + r)
            ctx.set(dut.ppu.en, 1)
            await ctx.tick()
            ctx.set(dut.ppu.en, 0)
            word = ctx.get(dut.ppu.data)
            for c in range(C):
                expected = wrap(sum(values[n][r][c] << rounds[n]["shift"] for n in range(len(rounds))))
                assert wrap(word >> (A * c)) == expected, (r, c)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert log["drained"] == [R + C - 2 + R] * len(rounds)
    # Every round writes R rows; the rounds after the first read them first.
    assert log["writes"] == R * len(rounds)
    assert log["reads"] == R * (len(rounds) - 1)
