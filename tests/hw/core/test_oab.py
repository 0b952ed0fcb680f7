"""The output accumulators in Amaranth's simulator, at their ports: a round's
record comes in the cycle after its last step; its rows arrive
`drain_delay + 1` cycles later, bottom row first, one per cycle, while later
records wait in order (records at least R cycles apart, as the controller
guarantees); each row, shifted by its round's shift, is added into its OAB
entry (replacing it in a first round); a last round's tile (from its own
record) is offered to the PPU until taken; `idle` says no record is in
flight; the PPU reads the buffer through its port."""

import random

import pytest
from amaranth.sim import Simulator

from hw import timing
from hw.config import AcceleratorConfig
from hw.oab import OutputAccumulators, drain_delay, records_in_flight


def wrap(value, bits):
    value %= 1 << bits
    return value - (value >> (bits - 1) << bits)


def run_rounds(config, rounds, seed):
    """`rounds`: dicts of buffer, shift, first, last, tile and `at` (the
    record's cycle). Returns the log and the values driven."""
    R, C, A = config.rows, config.cols, config.acc_width
    rng = random.Random(seed)
    values = [[[rng.randrange(-(1 << (A - 1)), 1 << (A - 1)) for _ in range(C)] for _ in range(R)]
              for _ in rounds]
    arrive = drain_delay(R, C) + 1
    rows_at = {rd["at"] + arrive + k: (n, R - 1 - k) for n, rd in enumerate(rounds) for k in range(R)}
    pushes = {rd["at"]: rd for rd in rounds}
    end = max(rows_at) + 3
    dut = OutputAccumulators(config)
    log = {"reads": 0, "writes": 0, "jobs": [], "idle": [], "contents": {}}

    async def testbench(ctx):
        ctx.set(dut.ppu.en, 0)
        ctx.set(dut.job.ready, 1)
        for cycle in range(end):
            record = pushes.get(cycle)
            ctx.set(dut.round.valid, record is not None)
            if record is not None:
                ctx.set(dut.round.payload, {k: record[k] for k in ("buffer", "shift", "first", "last", "tile")})
            if cycle in rows_at:
                n, row = rows_at[cycle]
                ctx.set(dut.array_out, values[n][row])
            else:       # garbage outside the drain windows must not matter
                ctx.set(dut.array_out, [rng.randrange(-(1 << (A - 1)), 1 << (A - 1)) for _ in range(C)])
            log["reads"] += ctx.get(dut.reads)
            log["writes"] += ctx.get(dut.writes)
            log["idle"].append(ctx.get(dut.idle))
            if ctx.get(dut.job.valid):
                log["jobs"].append((cycle, ctx.get(dut.job.payload)))
            await ctx.tick()
        ctx.set(dut.round.valid, 0)
        for entry in range(2 * R):
            ctx.set(dut.ppu.addr, entry)
            ctx.set(dut.ppu.en, 1)
            await ctx.tick()
            word = ctx.get(dut.ppu.data)
            log["contents"][entry] = [wrap(word >> (A * c), A) for c in range(C)]
        ctx.set(dut.ppu.en, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return log, values, arrive


@pytest.mark.parametrize("rows, cols", [(3, 4), (8, 8), (1, 4), (6, 2), (16, 16), (2, 32)])
def test_rounds_drain_in_the_background_and_tiles_go_to_the_ppu(rows, cols):
    config = AcceleratorConfig("oab", rows=rows, cols=cols, acc_width=20)
    R, A = rows, config.acc_width
    rng = random.Random(rows * 100 + cols)
    spacing = max(R, timing.MIN_ROUND_STEPS)
    # Tiles of 1-3 rounds alternating buffers; records as close as allowed or
    # with gaps, so several wait while one drains.
    rounds, at, tiles = [], 2, []
    for tile_number in range(5):
        count = rng.randint(1, 3)
        tile = {"y": rng.randrange(64), "x0": rng.randrange(64), "ktile": rng.randrange(8)}
        tiles.append((tile, tile_number % 2))
        for index in range(count):
            rounds.append({"buffer": tile_number % 2, "shift": rng.randrange(8), "first": index == 0,
                           "last": index == count - 1, "tile": tile, "at": at})
            at += spacing + rng.choice([0, 0, 1, 5])
    log, values, arrive = run_rounds(config, rounds, seed=rows)
    # The tiles reach the PPU in order, each in the cycle after its drain.
    ends = [rd["at"] + arrive + R for rd in rounds if rd["last"]]
    assert [payload for _, payload in log["jobs"]] == [{**tile, "buffer": b} for tile, b in tiles]
    assert [cycle for cycle, _ in log["jobs"]] == ends
    # Idle exactly when no record is between its arrival and its drain's end.
    busy = {c for rd in rounds for c in range(rd["at"] + 1, rd["at"] + arrive + R)}
    assert [not idle for idle in log["idle"]] == [c in busy for c in range(len(log["idle"]))]
    assert log["writes"] == R * len(rounds)
    assert log["reads"] == R * sum(1 for rd in rounds if not rd["first"])
    # The last two tiles' sums are in their buffers.
    for tile_number in (3, 4):
        members = [n for n, rd in enumerate(rounds) if rd["tile"] is tiles[tile_number][0]]
        for r in range(R):
            expected = [wrap(sum(values[n][r][c] << rounds[n]["shift"] for n in members), A)
                        for c in range(cols)]
            assert log["contents"][(tile_number % 2) * R + r] == expected, (tile_number, r)


def test_records_in_flight_cover_the_closest_rounds():
    for rows, cols in [(1, 1), (1, 32), (4, 4), (8, 8), (16, 16), (32, 32), (2, 32)]:
        spacing = max(rows, timing.MIN_ROUND_STEPS)
        waiting = len(range(0, drain_delay(rows, cols) + rows, spacing))   # arrival to drain end
        assert records_in_flight(rows, cols) >= waiting
