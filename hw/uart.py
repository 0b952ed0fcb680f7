"""A UART (8 data bits, no parity, 1 stop bit, least significant bit first)
for the FPGA host link (docs/fpga.md).

`divisor` is the bit time in clock cycles (clock frequency / baud rate,
rounded). The receiver samples the middle of each bit, counted from the
falling edge of the start bit; it is back at idle in the middle of the stop
bit, so the next start bit is caught however soon it comes. The transmitter
takes the next byte the cycle after it has sent a stop bit.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

DATA_BITS = 8


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor must be an int >= 4 (clock cycles per bit), got {divisor!r}")


def divisor_for(clock_hz, baud):
    """The divisor closest to `clock_hz / baud`; refuses one whose baud rate
    is off by more than 2% (a UART tolerates about 4% between both ends)."""
    divisor = round(clock_hz / baud)
    _check_divisor(divisor)
    error = abs(clock_hz / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"{baud} baud from a {clock_hz / 1e6:g} MHz clock is off by "
                         f"{100 * error:.1f}% (divisor {divisor})")
    return divisor


class UartTx(wiring.Component):
    """Transmitter: bytes in through `data`, the serial line out on `tx`
    (idle high). `data.ready` is high while the line is idle."""

    data: In(stream.Signature(DATA_BITS))
    tx: Out(1, init=1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        busy = Signal()
        timer = Signal(range(self._divisor))
        bits_left = Signal(range(DATA_BITS + 2))
        shift = Signal(DATA_BITS + 1)      # data bits, then the stop bit

        m.d.comb += self.data.ready.eq(~busy)
        with m.If(busy):
            with m.If(timer == 0):
                m.d.sync += [timer.eq(self._divisor - 1), bits_left.eq(bits_left - 1)]
                with m.If(bits_left == 0):
                    m.d.sync += busy.eq(0)
                with m.Else():
                    m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], Const(1, 1)))]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        with m.Elif(self.data.valid):
            # Start bit now; then 8 data bits and the stop bit, a bit time each.
            m.d.sync += [busy.eq(1), self.tx.eq(0), timer.eq(self._divisor - 1),
                         bits_left.eq(DATA_BITS + 1),
                         shift.eq(Cat(self.data.payload, Const(1, 1)))]
        return m


class UartRx(wiring.Component):
    """Receiver: the serial line in on `rx`, bytes out through `data`.

    A UART cannot wait, so `data.valid` stays high until the byte is taken or
    the next byte replaces it (then `overrun` pulses). `framing_error` pulses
    for a byte whose stop bit was low (the byte is dropped). `rx` passes a
    two-flip-flop synchroniser first: it may come straight from a pin.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(DATA_BITS))
    overrun: Out(1)
    framing_error: Out(1)

    def __init__(self, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self._divisor))
        bits = Signal(range(DATA_BITS + 1))
        shift = Signal(DATA_BITS)

        m.d.sync += [self.overrun.eq(0), self.framing_error.eq(0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM(name="uart_rx"):
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    # Middle of the start bit: still low, or it was a glitch.
                    m.d.sync += [timer.eq(self._divisor - 1), bits.eq(0)]
                    m.next = "DATA"
                    with m.If(line):
                        m.next = "IDLE"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._divisor - 1), shift.eq(Cat(shift[1:], line)),
                                 bits.eq(bits + 1)]
                    with m.If(bits == DATA_BITS - 1):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1),
                                     self.overrun.eq(self.data.valid & ~self.data.ready)]
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                    m.next = "IDLE"
        return m
