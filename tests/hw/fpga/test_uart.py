"""The UART in Amaranth's simulator: bit timing, framing, back-to-back bytes,
a receiver against clocks a few percent off, and a framing error."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from hw.uart import UartRx, UartTx, divisor_for


def simulate(dut, *testbenches, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run()


def line_bits(byte, stop=1):
    return [0] + [byte >> i & 1 for i in range(8)] + [stop]


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_tx_bit_timing_back_to_back(divisor):
    dut = UartTx(divisor)
    data = [0x55, 0x00, 0xFF, 0xA5, 0x3C]
    line = []

    async def producer(ctx):
        for byte in data:
            ctx.set(dut.data.payload, byte)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)

    async def monitor(ctx):
        for _ in range(len(data) * (10 * divisor + 1) + 20):
            await ctx.tick()
            line.append(ctx.get(dut.tx))

    simulate(dut, producer, monitor)
    # Decode: each byte is 10 bit times of exactly `divisor` cycles, and the
    # next start bit follows the stop bit after at most one cycle.
    position = line.index(0)
    for byte in data:
        expected = line_bits(byte)
        for bit, value in enumerate(expected):
            chunk = line[position + bit * divisor:position + (bit + 1) * divisor]
            assert chunk == [value] * divisor, f"byte {byte:#x} bit {bit}"
        position += 10 * divisor
        if byte is not data[-1]:
            gap = line[position:].index(0)
            assert gap <= 1
            position += gap
    assert all(line[position:])


def drive_line(dut, bytes_and_stops, divisor, period_scale=1.0, idle=3):
    """A testbench driving `rx` with bit times of `divisor * period_scale` cycles."""
    async def driver(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(idle)
        elapsed = 0.0
        cycle = 0
        for byte, stop in bytes_and_stops:
            for value in line_bits(byte, stop):
                elapsed += divisor * period_scale
                ctx.set(dut.rx, value)
                while cycle < round(elapsed):
                    await ctx.tick()
                    cycle += 1
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4 * divisor)
    return driver


def receive(dut, received, errors, cycles):
    async def monitor(ctx):
        ctx.set(dut.data.ready, 1)
        for _ in range(cycles):
            await ctx.tick()
            if ctx.get(dut.data.valid):
                received.append(ctx.get(dut.data.payload))
            if ctx.get(dut.framing_error):
                errors.append(len(received))
    return monitor


@pytest.mark.parametrize("divisor,scale", [(4, 1.0), (16, 1.0), (16, 0.97), (16, 1.03), (25, 1.02)])
def test_rx_back_to_back(divisor, scale):
    dut = UartRx(divisor)
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(12)]
    received, errors = [], []
    cycles = int(len(data) * 10 * divisor * scale) + 10 * divisor
    simulate(dut, drive_line(dut, [(b, 1) for b in data], divisor, scale),
             receive(dut, received, errors, cycles))
    assert received == data
    assert errors == []


def test_rx_framing_error_drops_the_byte_and_recovers():
    divisor = 8
    dut = UartRx(divisor)
    received, errors = [], []
    simulate(dut, drive_line(dut, [(0x12, 1), (0x34, 0), (0x56, 1)], divisor),
             receive(dut, received, errors, 40 * divisor))
    assert received == [0x12, 0x56]
    assert errors == [1]


def test_rx_ignores_a_glitch():
    divisor = 16
    dut = UartRx(divisor)
    received, errors = [], []

    async def glitch_then_byte(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        ctx.set(dut.rx, 0)       # shorter than half a bit
        await ctx.tick().repeat(3)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        for value in line_bits(0x9A):
            ctx.set(dut.rx, value)
            await ctx.tick().repeat(divisor)

    simulate(dut, glitch_then_byte, receive(dut, received, errors, 15 * divisor))
    assert received == [0x9A]


def test_loopback_random_bytes():
    divisor = 5
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    data = bytes(random.Random(3).randrange(256) for _ in range(40))
    received = []

    async def producer(ctx):
        for byte in data:
            ctx.set(tx.data.payload, byte)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
        ctx.set(tx.data.valid, 0)

    async def consumer(ctx):
        ctx.set(rx.data.ready, 1)
        while len(received) < len(data):
            await ctx.tick()
            if ctx.get(rx.data.valid):
                received.append(ctx.get(rx.data.payload))

    simulate(m, producer, consumer)
    assert bytes(received) == data


def test_divisor_for():
    assert divisor_for(12e6, 115200) == 104
    assert divisor_for(25e6, 115200) == 217
    with pytest.raises(ValueError, match="off by"):
        divisor_for(12e6, 1_600_000)
    with pytest.raises(ValueError, match="divisor"):
        divisor_for(12e6, 4_000_000)          # 3 cycles a bit: too few to sample
