"""The core's memories (docs/isa.md, "Memories") and who may use them.

While the core is idle the host reads and writes them, one entry at a time
(hw/host.py's MemoryAccess); while it runs, the controller, the round engine
and the PPU do, each through a port of its own (`amaranth.lib.memory` port
signatures, served here as a memory serves them). The two never overlap, so
there is nothing to arbitrate within a cycle: `running` picks the side.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.host import memory_access
from hw.isa import ACT_SLOT_BITS, Memory
from hw.ppu import activation_write_signature, result_write_signature


def read_signature(config, mem_id):
    """A read port of (each bank of) memory `mem_id`."""
    _, _, width, depth = config.memory_shapes()[mem_id]
    return memory.ReadPort.Signature(addr_width=(depth - 1).bit_length(), shape=width)


class MemoryArbiter(wiring.Component):
    """The memories of `config`: each bank with one read and one write port.

    Read ports answer the cycle after `en` and hold their data until the
    next read (the controller and the PPU rely on it). The PPU's activation
    writes name the bank in the address's low bits.
    """

    def __init__(self, config):
        self._config = config
        super().__init__({
            "host": In(memory_access(config)),
            "running": In(1),        # the core's ports own the memories, the host waits
            "program": Out(read_signature(config, Memory.PROGRAM)),
            "chunks": Out(read_signature(config, Memory.CHUNKS)),
            "wptr": Out(read_signature(config, Memory.WPTR)),
            "params": Out(read_signature(config, Memory.PARAMS)),
            "weights": Out(read_signature(config, Memory.WEIGHTS)).array(config.rows),
            "activations": Out(read_signature(config, Memory.ACTIVATIONS)).array(config.cols),
            "activation_write": Out(activation_write_signature(config)),
            "result_write": Out(result_write_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config

        ports = {}     # Memory -> [(read port, write port)], by bank
        for mem_id, (name, banks, width, depth) in config.memory_shapes().items():
            # The PPU writes one 4-bit activation slot of a word at a time.
            granularity = ACT_SLOT_BITS if mem_id == Memory.ACTIVATIONS else None
            ports[mem_id] = []
            for bank in range(banks):
                mem = memory.Memory(shape=width, depth=depth, init=[])
                m.submodules[f"{name}{bank}" if banks > 1 else name] = mem
                read = mem.read_port()
                # Read ports are enabled by default in Amaranth; ours read only
                # when asked, so their data holds.
                m.d.comb += read.en.eq(0)
                ports[mem_id].append((read, mem.write_port(granularity=granularity)))

        # ---- the host, while idle: whole entries.
        host = self.host
        for mem_id, banks in ports.items():
            for bank, (read, write) in enumerate(banks):
                selected = (host.mem == mem_id) & (host.bank == bank)
                with m.If(~self.running & host.write & selected):
                    m.d.comb += [write.addr.eq(host.addr), write.data.eq(host.wdata), write.en.eq(-1)]
                with m.If(~self.running & host.read & selected):
                    m.d.comb += [read.addr.eq(host.addr), read.en.eq(1)]
        # The read data of the port the last read selected.
        read_mem = Signal.like(host.mem)
        read_bank = Signal.like(host.bank)
        with m.If(host.read):
            m.d.sync += [read_mem.eq(host.mem), read_bank.eq(host.bank)]
        with m.Switch(Cat(read_bank, read_mem)):
            for mem_id, banks in ports.items():
                for bank, (read, _) in enumerate(banks):
                    with m.Case(bank | (mem_id << len(read_bank))):
                        m.d.comb += host.rdata.eq(read.data)

        # ---- the core's ports, while running.
        requests = {Memory.PROGRAM: [self.program], Memory.CHUNKS: [self.chunks],
                    Memory.WPTR: [self.wptr], Memory.PARAMS: [self.params],
                    Memory.WEIGHTS: list(self.weights), Memory.ACTIVATIONS: list(self.activations)}
        col_bits = (config.cols - 1).bit_length()
        with m.If(self.running):
            for mem_id, served in requests.items():
                for (read, _), request in zip(ports[mem_id], served):
                    m.d.comb += [read.addr.eq(request.addr), read.en.eq(request.en)]
            request = self.activation_write
            for bank, (_, write) in enumerate(ports[Memory.ACTIVATIONS]):
                with m.If(request.addr[:col_bits] == bank):
                    m.d.comb += [write.addr.eq(request.addr[col_bits:]), write.data.eq(request.data),
                                 write.en.eq(request.en)]
            _, write = ports[Memory.RESULTS][0]
            m.d.comb += [write.addr.eq(self.result_write.addr), write.data.eq(self.result_write.data),
                         write.en.eq(self.result_write.en)]
        for mem_id, served in requests.items():
            for (read, _), request in zip(ports[mem_id], served):
                m.d.comb += request.data.eq(read.data)
        return m
