"""The counter bank in Amaranth's simulator: start clears, counters add
their events only while running and wrap at counter_width; without
config.counters only `cycles` is built."""

import dataclasses
import random

from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.counter_bank import CounterBank, built_counters, event_layout
from hw.counters import COUNTERS

CONFIG = AcceleratorConfig("counter-bank", rows=2, cols=4, counter_width=16)


def run(config, cycles):
    """`cycles`: [(start, running, {event: count})]; the counters after each cycle."""
    dut = CounterBank(config)
    seen = []

    async def testbench(ctx):
        for start, running, events in cycles:
            ctx.set(dut.start, start)
            ctx.set(dut.running, running)
            ctx.set(dut.events, {name: events.get(name, 0) for name in built_counters(config)})
            await ctx.tick()
            seen.append([ctx.get(dut.counters[i]) for i in range(len(built_counters(config)))])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return seen


def test_counts_while_running_from_start():
    rng = random.Random(1)
    layout = event_layout(CONFIG)
    assert tuple(layout.members) == COUNTERS
    cycles = [(1, 0, {})]
    for _ in range(300):
        events = {name: rng.randrange(layout.members[name].stop) for name in COUNTERS}
        cycles.append((0, int(rng.random() < 0.8), events))
    cycles.append((1, 1, {name: 1 for name in COUNTERS}))     # start wins over counting
    seen = run(CONFIG, cycles)
    totals = [0] * len(COUNTERS)
    for (start, running, events), got in zip(cycles, seen):
        if start:
            totals = [0] * len(COUNTERS)
        elif running:
            totals = [(total + events[name]) % (1 << 16) for total, name in zip(totals, COUNTERS)]
        assert got == totals


def test_counters_wrap_at_their_width():
    most = event_layout(CONFIG).members["macs_w2a2"].stop - 1
    seen = run(CONFIG, [(1, 0, {})] + [(0, 1, {"macs_w2a2": most})] * 2100)
    assert seen[-1][COUNTERS.index("macs_w2a2")] == 2100 * most % (1 << 16) < 2100 * most
    assert seen[-1][COUNTERS.index("cycles")] == 0


def test_without_counters_only_cycles_is_built():
    config = dataclasses.replace(CONFIG, counters=False)
    assert tuple(event_layout(config).members) == ("cycles",)
    seen = run(config, [(1, 0, {})] + [(0, 1, {"cycles": 1})] * 5 + [(0, 0, {"cycles": 1})])
    assert seen[-1] == [5]
