"""The `counter_width` option (hw/config.py): the named configurations keep
48-bit counters except `ice40` (32 bits); a narrower counter reads the same
low word, its high word reads zero, and readers compare modulo 2 ** width."""

import dataclasses

import pytest
from amaranth.sim import Simulator

from hw.config import CONFIGS, AcceleratorConfig, get_config
from hw.core import Core
from hw.counters import COUNTER_WIDTH, COUNTERS, counter_reading
from hw.isa import HostRegister
from sw import driver

TINY = AcceleratorConfig("counter-test", rows=2, cols=2, program_depth=16, chunk_depth=16,
                         wptr_depth=16, param_depth=16, weight_depth=16, act_depth=16,
                         result_depth=16)


def test_named_configurations():
    for name in ("default", "small", "large", "ecp5"):
        assert CONFIGS[name].counter_width == COUNTER_WIDTH == 48
    assert get_config("ice40").counter_width == 32


@pytest.mark.parametrize("width", [15, 49, 32.0])
def test_counter_width_is_checked(width):
    with pytest.raises(ValueError, match="counter_width"):
        dataclasses.replace(TINY, counter_width=width)


def test_counter_reading_wraps():
    assert counter_reading(5, 32) == 5
    assert counter_reading((1 << 32) + 7, 32) == 7
    assert counter_reading((1 << 40) + 7) == (1 << 40) + 7
    # Phases summed on the host: the sum of wrapped readings wraps to the total.
    phases = [(1 << 32) - 3, 10]
    assert counter_reading(sum(counter_reading(p, 32) for p in phases), 32) == \
        counter_reading(sum(phases), 32)


def read_counters_after_halt(config):
    """Run the all-zero program (a HALT) and read every counter register."""
    core = Core(config)
    sim = Simulator(core)
    sim.add_clock(1e-6)
    words = []

    async def send(ctx, commands):
        for word in commands:
            ctx.set(core.host_in.payload, word)
            ctx.set(core.host_in.valid, 1)
            await ctx.tick().until(core.host_in.ready)
        ctx.set(core.host_in.valid, 0)

    async def testbench(ctx):
        await send(ctx, driver.start_command())
        await ctx.tick().until(core.done)
        await send(ctx, driver.counter_commands())

    async def receiver(ctx):
        ctx.set(core.host_out.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(core.host_out.valid,
                                                            core.host_out.payload):
            if valid:
                words.append(payload)

    sim.add_testbench(testbench)
    sim.add_process(receiver)
    sim.run_until(2e-3)
    assert len(words) == 2 * len(COUNTERS)
    return words


def test_narrow_counters_read_like_wide_ones():
    wide = read_counters_after_halt(TINY)
    narrow = read_counters_after_halt(dataclasses.replace(TINY, counter_width=16))
    assert wide[0] > 0                      # cycles: the HALT took some
    assert narrow[0::2] == wide[0::2]       # the same low words
    assert narrow[1::2] == [0] * len(COUNTERS) == wide[1::2]
    decoded = driver.decode_counters(narrow)
    assert decoded["program_reads"] == 1 and decoded["cycles"] == wide[0]
    assert HostRegister.COUNTERS == 16


def test_without_counters_only_cycles_count():
    """`counters=False` (the iCE40's option): `cycles` counts as before,
    every other counter register reads 0, and the FPGA host compares
    `cycles` alone."""
    from sw.fpga.cases import compared_counters
    for name in ("default", "small", "large", "ecp5"):
        assert CONFIGS[name].counters is True
    with pytest.raises(ValueError, match="counters"):
        dataclasses.replace(TINY, counters=0)
    wide = read_counters_after_halt(TINY)
    bare = read_counters_after_halt(dataclasses.replace(TINY, counters=False))
    assert bare[0] == wide[0] > 0
    assert bare[1:] == [0] * (2 * len(COUNTERS) - 1)
    assert wide[2 * COUNTERS.index("program_reads")] == 1
    assert compared_counters(TINY) == COUNTERS
    assert compared_counters(dataclasses.replace(TINY, counters=False)) == ("cycles",)
