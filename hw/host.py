"""Host interface: a framed command stream in, a response stream out.

The same interface serves the cocotb testbenches and the FPGA's UART bridge.
Commands are 32-bit words (docs/host.md):

  WRITE_MEM  header, address, count, then count entries of W words each
  READ_MEM   header, address, count; answered with count entries of W words
  WRITE_REG  header, value
  READ_REG   header; answered with one word

where W = ceil(memory width / 32) (entries wider than 32 bits travel as
little-endian words). Memory commands wait (the stream stalls) while the
core runs; register commands do not. An unknown command word sets the sticky
`protocol_error` flag and is dropped.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.isa import HOST_HEADER, HostCommand, HostRegister, counter_register

COMMANDS = {command.name: command.value for command in HostCommand}
# CTRL bits the core sees (bit 0: start). Bit 1 (clear the protocol error)
# is the host interface's own.
CTRL_BITS = 1


def words_per_entry(width):
    return (width + 31) // 32


class MemoryAccess(wiring.Signature):
    """One memory entry read or write by the host (addresses and entries as
    wide as the widest memory needs)."""

    def __init__(self, addr_width, data_width):
        super().__init__({
            "mem": Out(HOST_HEADER["memory"].shape), "bank": Out(HOST_HEADER["bank"].shape),
            "addr": Out(addr_width), "wdata": Out(data_width),
            "write": Out(1), "read": Out(1), "rdata": In(data_width),
        })


def memory_access(config):
    """The MemoryAccess of `config`'s memories."""
    shapes = config.memory_shapes()
    return MemoryAccess(max((depth - 1).bit_length() for _, _, _, depth in shapes.values()),
                        max(width for _, _, width, _ in shapes.values()))


class RegisterAccess(wiring.Signature):
    """A register read or write; `wdata` is as wide as the core's widest
    writable register (CTRL's start bit)."""

    def __init__(self, write_bits):
        super().__init__({
            "addr": Out(HOST_HEADER["register"].shape), "wdata": Out(write_bits),
            "write": Out(1), "read": Out(1),
            "rdata": In(32),
        })


class HostInterface(wiring.Component):
    def __init__(self, config):
        self._widths = {mem_id: width for mem_id, (_, _, width, _) in config.memory_shapes().items()}
        super().__init__({
            "host_in": In(stream.Signature(32)),
            "host_out": Out(stream.Signature(32)),
            "memory": Out(memory_access(config)),
            "registers": Out(RegisterAccess(CTRL_BITS)),
            "core_busy": In(1),
            "protocol_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        words = max(words_per_entry(width) for width in self._widths.values())

        command = Signal(HOST_HEADER)     # the header of the command being served
        addr = Signal.like(self.memory.addr)
        count = Signal(32)
        word = Signal(range(words + 1))
        entry_words = Signal(range(words + 1))
        entry_table = Array(words_per_entry(self._widths.get(i, 32)) for i in range(16))
        buffer = Array(Signal(32, name=f"word{i}") for i in range(words))

        m.d.comb += [self.memory.mem.eq(command.memory), self.memory.bank.eq(command.bank),
                     self.memory.addr.eq(addr), self.registers.addr.eq(command.register)]

        host_in, host_out = self.host_in, self.host_out
        with m.FSM(name="host"):
            with m.State("HEADER"):
                m.d.comb += host_in.ready.eq(1)
                with m.If(host_in.valid):
                    header = HOST_HEADER(host_in.payload)
                    m.d.sync += [command.eq(header), entry_words.eq(entry_table[header.memory])]
                    with m.Switch(header.command):
                        with m.Case(HostCommand.WRITE_MEM, HostCommand.READ_MEM):
                            m.next = "ADDRESS"
                        with m.Case(HostCommand.WRITE_REG):
                            m.next = "REG_VALUE"
                        with m.Case(HostCommand.READ_REG):
                            m.next = "REG_READ"
                        with m.Default():
                            m.d.sync += self.protocol_error.eq(1)
            with m.State("ADDRESS"):
                m.d.comb += host_in.ready.eq(1)
                with m.If(host_in.valid):
                    m.d.sync += addr.eq(host_in.payload)
                    m.next = "COUNT"
            with m.State("COUNT"):
                m.d.comb += host_in.ready.eq(1)
                with m.If(host_in.valid):
                    m.d.sync += [count.eq(host_in.payload), word.eq(0)]
                    with m.If(host_in.payload == 0):
                        m.next = "HEADER"
                    with m.Elif(command.command == HostCommand.WRITE_MEM):
                        m.next = "WRITE_DATA"
                    with m.Else():
                        m.next = "READ_ISSUE"
            with m.State("WRITE_DATA"):
                m.d.comb += host_in.ready.eq(~self.core_busy)
                with m.If(host_in.valid & host_in.ready):
                    m.d.sync += [buffer[word].eq(host_in.payload), word.eq(word + 1)]
                    with m.If(word == entry_words - 1):
                        # Write the entry: the words so far plus this one.
                        entry = Cat(*(Mux(word == index, host_in.payload, buffer[index])
                                      for index in range(words)))
                        m.d.comb += self.memory.wdata.eq(entry)
                        m.d.comb += self.memory.write.eq(1)
                        m.d.sync += [word.eq(0), addr.eq(addr + 1), count.eq(count - 1)]
                        with m.If(count == 1):
                            m.next = "HEADER"
            with m.State("READ_ISSUE"):
                with m.If(~self.core_busy):
                    m.d.comb += self.memory.read.eq(1)
                    m.next = "READ_LATCH"
            with m.State("READ_LATCH"):
                for index in range(words):
                    m.d.sync += buffer[index].eq(self.memory.rdata[32 * index:32 * (index + 1)])
                m.d.sync += word.eq(0)
                m.next = "READ_SEND"
            with m.State("READ_SEND"):
                m.d.comb += [host_out.valid.eq(1), host_out.payload.eq(buffer[word])]
                with m.If(host_out.ready):
                    m.d.sync += word.eq(word + 1)
                    with m.If(word == entry_words - 1):
                        m.d.sync += [addr.eq(addr + 1), count.eq(count - 1)]
                        with m.If(count == 1):
                            m.next = "HEADER"
                        with m.Else():
                            m.next = "READ_ISSUE"
            with m.State("REG_VALUE"):
                m.d.comb += host_in.ready.eq(1)
                with m.If(host_in.valid):
                    m.d.comb += [self.registers.write.eq(1), self.registers.wdata.eq(host_in.payload)]
                    with m.If((command.register == HostRegister.CTRL) & host_in.payload[1]):
                        m.d.sync += self.protocol_error.eq(0)
                    m.next = "HEADER"
            with m.State("REG_READ"):
                m.d.comb += self.registers.read.eq(1)
                m.d.sync += buffer[0].eq(self.registers.rdata)
                m.next = "REG_SEND"
            with m.State("REG_SEND"):
                m.d.comb += [host_out.valid.eq(1), host_out.payload.eq(buffer[0])]
                with m.If(host_out.ready):
                    m.next = "HEADER"
        return m


class HostRegisters(wiring.Component):
    """The core's host-visible registers (docs/host.md, "Registers"): CTRL's
    start bit (ignored while running), STATUS, ERROR_PC, INFO and the
    counters' low and high words (a counter's high word reads 0 when it is
    32 bits or narrower, an unbuilt counter's words read 0). Reads answer in
    the same cycle."""

    def __init__(self, config, counters):
        """`counters`: how many counters the core builds (counter i at
        counter_register(i))."""
        self._config = config
        super().__init__({
            "bus": In(RegisterAccess(CTRL_BITS)),
            "start": Out(1),
            "running": In(1), "done": In(1), "error": In(1), "protocol_error": In(1),
            "error_pc": In(32),
            "counters": In(data.ArrayLayout(config.counter_width, counters)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        bus = self.bus
        m.d.comb += self.start.eq(bus.write & (bus.addr == HostRegister.CTRL) & bus.wdata[0] & ~self.running)

        info = Signal(32)
        m.d.comb += info.eq(config.rows | (config.cols << 8) | (config.acc_width << 16))
        status = Signal(32)
        m.d.comb += status.eq(Cat(self.running, self.done, self.error, self.protocol_error))
        with m.Switch(bus.addr):
            with m.Case(HostRegister.STATUS):
                m.d.comb += bus.rdata.eq(status)
            with m.Case(HostRegister.ERROR_PC):
                m.d.comb += bus.rdata.eq(self.error_pc)
            with m.Case(HostRegister.INFO):
                m.d.comb += bus.rdata.eq(info)
            for index in range(len(self.counters)):
                counter = self.counters[index]
                with m.Case(counter_register(index, 0)):
                    m.d.comb += bus.rdata.eq(counter[:32])
                if len(counter) > 32:
                    with m.Case(counter_register(index, 1)):
                        m.d.comb += bus.rdata.eq(counter[32:])
        return m
