"""The host-visible registers in Amaranth's simulator, at their bus: CTRL's
start bit (not while running), STATUS, ERROR_PC, INFO and the counters'
words as docs/host.md lists them."""

import dataclasses

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.host import HostRegisters
from hw.isa import HostRegister, counter_register

CONFIG = AcceleratorConfig("registers", rows=3, cols=4, acc_width=20)


@pytest.mark.parametrize("width", [48, 32])
def test_registers_read_and_start_writes(width):
    config = dataclasses.replace(CONFIG, counter_width=width)
    values = [(index + 1) * 0x1_0000_0001 % (1 << width) for index in range(3)]
    dut = HostRegisters(config, len(values))

    async def testbench(ctx):
        for name, value in dict(running=0, done=1, error=0, protocol_error=1, error_pc=77).items():
            ctx.set(getattr(dut, name), value)
        ctx.set(dut.counters, values)

        def read(register):
            ctx.set(dut.bus.addr, register)
            return ctx.get(dut.bus.rdata)

        assert read(HostRegister.STATUS) == 0b1010
        assert read(HostRegister.ERROR_PC) == 77
        assert read(HostRegister.INFO) == 3 | 4 << 8 | 20 << 16
        for index, value in enumerate(values):
            assert read(counter_register(index, 0)) == value & 0xFFFF_FFFF
            assert read(counter_register(index, 1)) == value >> 32      # 0 for a 32-bit counter
        assert read(counter_register(len(values), 0)) == 0                # not built
        assert read(HostRegister.CTRL) == 0

        # start: a CTRL write with bit 0, only while not running.
        ctx.set(dut.bus.addr, HostRegister.CTRL)
        for write, wdata, running, start in [(1, 1, 0, 1), (0, 1, 0, 0), (1, 0, 0, 0), (1, 1, 1, 0)]:
            ctx.set(dut.bus.write, write)
            ctx.set(dut.bus.wdata, wdata)
            ctx.set(dut.running, running)
            assert ctx.get(dut.start) == start
        ctx.set(dut.bus.addr, HostRegister.STATUS)
        ctx.set(dut.running, 0)
        assert ctx.get(dut.start) == 0

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
