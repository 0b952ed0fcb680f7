# amaranth: UnusedElaboratable=no
"""The word feeder in Amaranth's simulator, at its own boundary: a buffer
(a memory holding the words) on its read port, the replier's `feed` driven
by the testbench, and the core's `host_in` taken with back-pressure. Words
in order, one a cycle when the core keeps up, the core reset before them,
`fed_all`, a stop, and a restart from the first word."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from hw.boards.link import WordFeeder

WORDS = [0x11111111, 0x22222222, 0xDEADBEEF, 0x0, 0xFFFFFFFF, 0x12345678]


def feed(nwords, *, reset=False, ready=lambda cycle: True, stop_at=None, run_cycles=40, restart=False):
    """The replier's side: `start` (with `reset`) for a cycle, then `run`
    for `run_cycles`; `stop` from cycle `stop_at` on. `restart` runs the
    same frame a second time. Returns, per cycle, (core_reset, host_in
    valid, the word taken or None, fed_all, took)."""
    m = Module()
    m.submodules.buffer = buffer = memory.Memory(shape=32, depth=len(WORDS), init=WORDS)
    m.submodules.dut = dut = WordFeeder(buffer_words=len(WORDS))
    wiring.connect(m, buffer.read_port(), dut.buffer)
    trace = []
    schedule = (["start"] + ["run"] * run_cycles) * (2 if restart else 1) + ["idle"] * 3

    async def testbench(ctx):
        ctx.set(dut.feed.nwords, nwords)
        ctx.set(dut.feed.reset, reset)
        for cycle, phase in enumerate(schedule):
            ctx.set(dut.feed.start, phase == "start")
            ctx.set(dut.feed.run, phase == "run")
            ctx.set(dut.feed.stop, stop_at is not None and cycle >= stop_at)
            ctx.set(dut.host_in.ready, ready(cycle))
            valid = ctx.get(dut.host_in.valid)
            taken = ctx.get(dut.host_in.payload) if valid and ready(cycle) else None
            trace.append((ctx.get(dut.core_reset), valid, taken, ctx.get(dut.feed.fed_all),
                          ctx.get(dut.feed.took)))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return trace


def taken(trace):
    return [(cycle, word) for cycle, (_, _, word, _, _) in enumerate(trace) if word is not None]


def test_words_in_order_one_a_cycle():
    trace = feed(5)
    # start at cycle 0, run from 1: the first word is read at 1 and taken at 2.
    assert taken(trace) == [(2 + i, WORDS[i]) for i in range(5)]
    fed_all = [f for _, _, _, f, _ in trace]
    assert fed_all[0] and not any(fed_all[1:7]) and all(fed_all[7:])
    assert [t for _, _, w, _, t in trace] == [w is not None for _, _, w, _, _ in trace]
    assert not any(r for r, _, _, _, _ in trace)


def test_back_pressure():
    rng = random.Random(2)
    pattern = [rng.random() < 0.4 for _ in range(100)]
    trace = feed(6, ready=lambda cycle: pattern[cycle], run_cycles=60)
    assert [word for _, word in taken(trace)] == WORDS
    # host_in.valid never falls before its word is taken.
    for cycle in range(len(trace) - 1):
        if trace[cycle][1] and trace[cycle][2] is None:
            assert trace[cycle + 1][1]


def test_core_reset_with_start_only():
    trace = feed(2, reset=True)
    assert [r for r, _, _, _, _ in trace] == [1] + [0] * (len(trace) - 1)


def test_stop_drops_the_rest():
    trace = feed(6, ready=lambda cycle: cycle < 4, stop_at=10)
    assert [word for _, word in taken(trace)] == WORDS[:2]
    assert trace[10][1] and not trace[11][1]          # valid falls the cycle after the stop
    assert not trace[9][3] and all(f for _, _, _, f, _ in trace[10:])


def test_no_words_and_restart():
    assert taken(feed(0)) == [] and all(f for _, _, _, f, _ in feed(0))
    trace = feed(3, restart=True, run_cycles=10)
    assert [word for _, word in taken(trace)] == WORDS[:3] * 2


def test_buffer_words_checked():
    with pytest.raises(ValueError, match="buffer_words"):
        WordFeeder(buffer_words=0)
