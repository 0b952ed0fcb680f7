"""The core's memories (docs/isa.md, "Memories") and who may use them.

While the core is idle the host reads and writes them, one entry at a time
(hw/host.py's MemoryAccess); while it runs, the controller, the round engine
and the PPU do, each through a port of its own (`amaranth.lib.memory` port
signatures, served here as a memory serves them). The two never overlap, so
there is nothing to arbitrate within a cycle: `running` picks the side.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.host import memory_access
from hw.isa import ACT_SLOT_BITS, ACT_WORD_BITS, Memory
from hw.ppu import activation_write_signature, result_write_signature


def read_signature(config, mem_id):
    """A read port of (each bank of) memory `mem_id`."""
    _, _, width, depth = config.memory_shapes()[mem_id]
    return memory.ReadPort.Signature(addr_width=(depth - 1).bit_length(), shape=width)


class ActivationBank(wiring.Component):
    """One activation bank: a read port (as a memory's) and the PPU's write
    (`activation_write_signature`). With packed_activations it is two
    memories of half the depth, the even words and the odd words, with bit
    write enables: words w and w + 1 are never in the same one, so a slot
    that straddles them is one write. Without, one memory with an enable
    per 4-bit slot."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "read": Out(read_signature(config, Memory.ACTIVATIONS)),
            "write": Out(activation_write_signature(config, bank_bits=0)),
        })

    def elaborate(self, platform):
        m = Module()
        config, read, write = self._config, self.read, self.write
        depth = config.act_depth
        if not config.packed_activations:
            m.submodules.mem = mem = memory.Memory(shape=ACT_WORD_BITS, depth=depth, init=[])
            port = mem.read_port()
            writer = mem.write_port(granularity=ACT_SLOT_BITS)
            m.d.comb += [port.addr.eq(read.addr), port.en.eq(read.en), read.data.eq(port.data),
                         writer.addr.eq(write.addr), writer.data.eq(write.data), writer.en.eq(write.en)]
            return m
        low, high = write.data[:ACT_WORD_BITS], write.data[ACT_WORD_BITS:]
        low_en, high_en = write.en[:ACT_WORD_BITS], write.en[ACT_WORD_BITS:]
        halves = []
        for parity in ("even", "odd"):
            mem = memory.Memory(shape=ACT_WORD_BITS, depth=depth // 2, init=[])
            m.submodules[parity] = mem
            halves.append((mem.read_port(), mem.write_port(granularity=1)))
        (even_read, even_write), (odd_read, odd_write) = halves
        # Word w is entry w div 2 of the half of its parity.
        odd_word = write.addr[0]
        entry = write.addr[1:]
        m.d.comb += [
            # Word w into its half, word w + 1 into the other (entry + 1 when w is odd).
            even_write.addr.eq(Mux(odd_word, entry + 1, entry)),
            even_write.data.eq(Mux(odd_word, high, low)),
            even_write.en.eq(Mux(odd_word, high_en, low_en)),
            odd_write.addr.eq(entry),
            odd_write.data.eq(Mux(odd_word, low, high)),
            odd_write.en.eq(Mux(odd_word, low_en, high_en)),
        ]
        read_odd = Signal()       # the last read's half: the data holds until the next read
        with m.If(read.en):
            m.d.sync += read_odd.eq(read.addr[0])
        for port, _ in halves:
            m.d.comb += [port.addr.eq(read.addr[1:]), port.en.eq(read.en)]
        m.d.comb += read.data.eq(Mux(read_odd, odd_read.data, even_read.data))
        return m


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
            ports[mem_id] = []
            for bank in range(banks):
                label = f"{name}{bank}" if banks > 1 else name
                if mem_id == Memory.ACTIVATIONS:
                    m.submodules[label] = activation_bank = ActivationBank(config)
                    read, write = activation_bank.read, activation_bank.write
                else:
                    mem = memory.Memory(shape=width, depth=depth, init=[])
                    m.submodules[label] = mem
                    read, write = mem.read_port(), mem.write_port()
                # Read ports are enabled by default in Amaranth; ours read only
                # when asked, so their data holds.
                m.d.comb += read.en.eq(0)
                ports[mem_id].append((read, write))

        # ---- the host, while idle: whole entries (an activation bank's
        # write: the enables of its first word).
        host = self.host
        word_enables = (1 << (ACT_WORD_BITS if config.packed_activations
                              else ACT_WORD_BITS // ACT_SLOT_BITS)) - 1
        for mem_id, banks in ports.items():
            for bank, (read, write) in enumerate(banks):
                selected = (host.mem == mem_id) & (host.bank == bank)
                with m.If(~self.running & host.write & selected):
                    whole = word_enables if mem_id == Memory.ACTIVATIONS else -1
                    m.d.comb += [write.addr.eq(host.addr), write.data.eq(host.wdata), write.en.eq(whole)]
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
