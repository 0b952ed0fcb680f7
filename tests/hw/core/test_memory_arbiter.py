"""The memory arbiter in Amaranth's simulator, at its ports: the host
writes and reads every bank of every memory while the core is idle (and is
ignored while it runs); while running, the core's read ports answer the
cycle after `en` and hold their data, the PPU's activation writes reach the
bank in their address's low bits and only the enabled slot (a 4-bit slot,
or with packed_activations a 3-bit one that straddles two words), and
result writes land."""

import dataclasses

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import Memory
from hw.memory_arbiter import MemoryArbiter

CONFIG = AcceleratorConfig("arbiter", rows=2, cols=2, program_depth=16, chunk_depth=16,
                           wptr_depth=16, param_depth=16, weight_depth=16, act_depth=16,
                           result_depth=16)
SHAPES = CONFIG.memory_shapes()


def value(mem_id, bank, addr):
    width = SHAPES[mem_id][2]
    return (0x9E3779B97F4A7C15 * (mem_id * 64 + bank * 16 + addr + 1)) % (1 << width)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "4-bit"])
def test_host_and_core_access(packed):
    dut = MemoryArbiter(dataclasses.replace(CONFIG, packed_activations=packed))

    async def testbench(ctx):
        host = dut.host

        async def host_write(mem_id, bank, addr, data):
            ctx.set(host.mem, mem_id)
            ctx.set(host.bank, bank)
            ctx.set(host.addr, addr)
            ctx.set(host.wdata, data)
            ctx.set(host.write, 1)
            await ctx.tick()
            ctx.set(host.write, 0)

        async def host_read(mem_id, bank, addr):
            ctx.set(host.mem, mem_id)
            ctx.set(host.bank, bank)
            ctx.set(host.addr, addr)
            ctx.set(host.read, 1)
            await ctx.tick()
            ctx.set(host.read, 0)
            ctx.set(host.mem, 0)             # the answer follows the read's selection
            ctx.set(host.bank, 0)
            return ctx.get(host.rdata)

        everywhere = [(mem_id, bank) for mem_id, (_, banks, _, _) in SHAPES.items() for bank in range(banks)]
        for mem_id, bank in everywhere:
            for addr in (3, 5):
                await host_write(mem_id, bank, addr, value(mem_id, bank, addr))
        for mem_id, bank in everywhere:
            assert await host_read(mem_id, bank, 3) == value(mem_id, bank, 3), (mem_id, bank)

        # While running the host neither writes nor reads.
        ctx.set(dut.running, 1)
        await host_write(Memory.PROGRAM, 0, 3, 1234)
        # The core's ports: data the cycle after en, held while en is low.
        served = [(dut.program, Memory.PROGRAM, 0), (dut.chunks, Memory.CHUNKS, 0),
                  (dut.wptr, Memory.WPTR, 0), (dut.params, Memory.PARAMS, 0),
                  (dut.weights[1], Memory.WEIGHTS, 1), (dut.activations[0], Memory.ACTIVATIONS, 0)]
        for port, _, _ in served:
            ctx.set(port.en, 0)
        for port, mem_id, bank in served:
            ctx.set(port.addr, 5)
            ctx.set(port.en, 1)
            await ctx.tick()
            ctx.set(port.en, 0)
            ctx.set(port.addr, 3)
            assert ctx.get(port.data) == value(mem_id, bank, 5), mem_id
            await ctx.tick()
            assert ctx.get(port.data) == value(mem_id, bank, 5), mem_id
        # A slot of bank 1 from word 3: bits 8..11 (4-bit), or bits 14..16
        # (3-bit, into word 4: the other half's next entry); a result.
        ctx.set(dut.activation_write.addr, (3 << 1) | 1)
        ctx.set(dut.activation_write.data, 0x5AAAA if packed else 0xAAAA)
        ctx.set(dut.activation_write.en, 0x7 << 14 if packed else 0b0100)   # bit or slot enables
        ctx.set(dut.result_write.addr, 5)
        ctx.set(dut.result_write.data, 0xDEADBEEF)
        ctx.set(dut.result_write.en, 1)
        await ctx.tick()
        ctx.set(dut.activation_write.en, 0)
        ctx.set(dut.result_write.en, 0)
        ctx.set(dut.running, 0)

        assert await host_read(Memory.PROGRAM, 0, 3) == value(Memory.PROGRAM, 0, 3)
        old = value(Memory.ACTIVATIONS, 1, 3)
        if packed:       # 0b110 at bit 14: bits 14, 15 of word 3 are 0, 1; bit 0 of word 4 is 1
            assert await host_read(Memory.ACTIVATIONS, 1, 3) == (old & ~0xC000) | 0x8000
            assert await host_read(Memory.ACTIVATIONS, 1, 4) == 1
            assert await host_read(Memory.ACTIVATIONS, 1, 5) == value(Memory.ACTIVATIONS, 1, 5)
        else:
            assert await host_read(Memory.ACTIVATIONS, 1, 3) == (old & ~0x0F00) | 0x0A00
        assert await host_read(Memory.ACTIVATIONS, 0, 3) == value(Memory.ACTIVATIONS, 0, 3)
        assert await host_read(Memory.RESULTS, 0, 5) == 0xDEADBEEF

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
