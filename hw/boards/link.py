"""The serial host link: framed commands over a UART into the core's host
streams (docs/fpga.md, "Protocol").

`FrameBridge` takes request frames byte by byte, checks them (length, CRC),
and only then feeds their 32-bit words into the core's `host_in`; it frames
the core's `host_out` answers into one reply per request. A request is

    0xA5, seq, flags, nwords, nreply, nwords * 4 payload bytes (words
    little-endian), CRC-16 (big-endian)

and the reply

    0x5A, seq, nreply, nreply * 4 payload bytes, status, CRC-16

The CRC is CRC-16/CCITT-FALSE (`amaranth.lib.crc`, the host uses the same
definition) over every byte after the sync byte. `status` bits 2:0 are the
frame's outcome (`LinkStatus`), bits 4, 5, 6 the core's busy, done and error
pins after the frame ran. A bad frame is answered with a reply of no words
and a failure code, and never reaches the core; the bridge then hunts for
the next sync byte.

`SerialCore` is the board-independent top: core, bridge and UART. The board
tops (`hw/boards/top.py`) add clock, reset, pins and LEDs; the simulation
(`sim/benches/board_bench.py`) drives its `rx` and `tx` directly.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import enum, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from hw.core import Core
from hw.uart import UartRx, UartTx

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
FLAG_RESET = 0x01          # reset the core (registers and host interface) before the words
MAX_WORDS = 255            # nwords and nreply are one byte each
CRC = catalog.CRC16_CCITT_FALSE


class LinkStatus(enum.IntEnum, shape=3):
    OK = 0
    BAD_CRC = 1            # the CRC did not match: nothing was fed to the core
    BAD_LENGTH = 2         # nwords larger than the bridge's buffer
    TIMEOUT = 3            # the line went quiet inside a frame
    STALLED = 4            # the core took no word and gave no answer for too long


STATUS_PINS = {"busy": 4, "done": 5, "error": 6}


class FrameBridge(wiring.Component):
    """Frames from `rx_bytes` to `host_in`, answers from `host_out` to `tx_bytes`.

    Parameters:
      buffer_words    request payload buffer (words); a frame with more words
                      is refused (BAD_LENGTH).
      byte_timeout    cycles of silence inside a request frame before it is
                      abandoned (TIMEOUT reply).
      stall_timeout   cycles without progress (no word taken by the core, no
                      answer) before a running frame is cut short: the owed
                      answer words are sent as zeros and the status says
                      STALLED; the host should then reset the core.
    """

    rx_bytes: In(stream.Signature(8))
    tx_bytes: Out(stream.Signature(8))
    host_in: Out(stream.Signature(32))
    host_out: In(stream.Signature(32))
    core_pins: In(3)           # busy, done, error
    core_reset: Out(1)

    def __init__(self, *, buffer_words=MAX_WORDS, byte_timeout, stall_timeout):
        if not isinstance(buffer_words, int) or not 1 <= buffer_words <= MAX_WORDS:
            raise ValueError(f"buffer_words must be an int in [1, {MAX_WORDS}], got {buffer_words!r}")
        for name, value in (("byte_timeout", byte_timeout), ("stall_timeout", stall_timeout)):
            if not isinstance(value, int) or value < 16:
                raise ValueError(f"{name} must be an int >= 16 (cycles), got {value!r}")
        self._buffer_words = buffer_words
        self._byte_timeout = byte_timeout
        self._stall_timeout = stall_timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        rx, tx = self.rx_bytes, self.tx_bytes
        m.submodules.rx_crc = rx_crc = CRC(data_width=8).create()
        m.submodules.tx_crc = tx_crc = CRC(data_width=8).create()
        m.submodules.buffer = buffer = memory.Memory(shape=32, depth=self._buffer_words, init=[])
        buffer_write = buffer.write_port()
        buffer_read = buffer.read_port()

        seq = Signal(8)
        flags = Signal(8)
        nwords = Signal(8)
        nreply = Signal(8)
        word = Signal(32)                     # request payload word being assembled
        byte_index = Signal(2)
        words_in = Signal(8)                  # request payload words received
        silence = Signal(range(self._byte_timeout + 1))
        receiving = Signal()                  # inside a request frame
        outcome = Signal(LinkStatus)

        # ------------------------------------------------ request: receive and check
        m.d.comb += rx.ready.eq(1)           # a UART cannot wait: bytes nobody wants are dropped
        byte, got = rx.payload, rx.valid
        with m.If(got | ~receiving):
            m.d.sync += silence.eq(0)
        with m.Elif(silence != self._byte_timeout):
            m.d.sync += silence.eq(silence + 1)
        quiet = Signal()
        m.d.comb += quiet.eq(~got & (silence == self._byte_timeout))
        m.d.comb += [rx_crc.data.eq(byte), buffer_write.addr.eq(words_in),
                     buffer_write.data.eq(Cat(word[8:32], byte))]

        # The frame in progress (FEED) and its reply (the reply FSM).
        feeding_state = Signal()
        reply_start = Signal()
        reply_done = Signal()
        issued = Signal(range(MAX_WORDS + 1))   # words read from the buffer
        feeding = Signal()                      # host_in.valid
        stalled = Signal()
        fed_all = Signal()

        def in_frame():
            m.d.comb += receiving.eq(1)
            with m.If(quiet):
                m.d.sync += outcome.eq(LinkStatus.TIMEOUT)
                m.next = "REFUSE"

        with m.FSM(name="link"):
            with m.State("HUNT"):
                with m.If(got & (byte == REQUEST_SYNC)):
                    m.d.comb += rx_crc.start.eq(1)
                    m.next = "SEQ"
            for state, target, next_state in (("SEQ", seq, "FLAGS"), ("FLAGS", flags, "NWORDS"),
                                              ("NWORDS", nwords, "NREPLY")):
                with m.State(state):
                    m.d.comb += rx_crc.valid.eq(got)
                    with m.If(got):
                        m.d.sync += target.eq(byte)
                        m.next = next_state
                    in_frame()
            with m.State("NREPLY"):
                m.d.comb += rx_crc.valid.eq(got)
                m.d.sync += [words_in.eq(0), byte_index.eq(0)]
                with m.If(got):
                    m.d.sync += nreply.eq(byte)
                    too_long = nwords > self._buffer_words if self._buffer_words < MAX_WORDS else 0
                    with m.If(too_long):
                        m.d.sync += outcome.eq(LinkStatus.BAD_LENGTH)
                        m.next = "REFUSE"
                    with m.Elif(nwords == 0):
                        m.next = "CRC_HIGH"
                    with m.Else():
                        m.next = "PAYLOAD"
                in_frame()
            with m.State("PAYLOAD"):
                m.d.comb += rx_crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += [word.eq(Cat(word[8:32], byte)), byte_index.eq(byte_index + 1)]
                    with m.If(byte_index == 3):
                        m.d.comb += buffer_write.en.eq(1)
                        m.d.sync += words_in.eq(words_in + 1)
                        with m.If(words_in + 1 == nwords):
                            m.next = "CRC_HIGH"
                in_frame()
            with m.State("CRC_HIGH"):
                m.d.comb += rx_crc.valid.eq(got)
                with m.If(got):
                    m.next = "CRC_LOW"
                in_frame()
            with m.State("CRC_LOW"):
                m.d.comb += rx_crc.valid.eq(got)
                with m.If(got):
                    m.next = "CHECK"
                in_frame()
            with m.State("CHECK"):
                # The CRC register has taken the last byte: a whole codeword
                # leaves the residue.
                with m.If(rx_crc.match_detected):
                    m.d.sync += outcome.eq(LinkStatus.OK)
                    m.next = "RUN"
                with m.Else():
                    m.d.sync += outcome.eq(LinkStatus.BAD_CRC)
                    m.next = "REFUSE"
            with m.State("REFUSE"):
                m.d.comb += reply_start.eq(1)
                m.d.sync += [nreply.eq(0), issued.eq(0), stalled.eq(0)]
                m.next = "REPLY"
            with m.State("RUN"):
                m.d.comb += [reply_start.eq(1), self.core_reset.eq(flags[0])]
                m.d.sync += [issued.eq(0), stalled.eq(0)]
                m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += feeding_state.eq(1)
                with m.If(reply_done):
                    m.next = "HUNT"
            with m.State("REPLY"):
                with m.If(reply_done):
                    m.next = "HUNT"

        # ------------------------------------------------ feeding the core from the buffer
        host_in = self.host_in
        load = Signal()
        m.d.comb += [
            load.eq(feeding_state & ~stalled & (~feeding | host_in.ready) & (issued != nwords)),
            buffer_read.addr.eq(issued), buffer_read.en.eq(load),
            host_in.valid.eq(feeding), host_in.payload.eq(buffer_read.data),
            fed_all.eq(stalled | ((issued == nwords) & ~feeding)),
        ]
        with m.If(load):
            m.d.sync += [issued.eq(issued + 1), feeding.eq(1)]
        with m.Elif(host_in.ready | stalled):
            m.d.sync += feeding.eq(0)

        # ------------------------------------------------ the reply
        host_out = self.host_out
        answers = Signal(8)                   # answer words sent
        out_word = Signal(32)
        out_byte = Signal(2)
        stall = Signal(range(self._stall_timeout + 1))
        pins = Signal(3)
        covered = Signal()                    # this byte goes into the CRC
        sent = Signal()
        m.d.comb += [sent.eq(tx.valid & tx.ready), tx_crc.data.eq(tx.payload),
                     tx_crc.valid.eq(sent & covered)]

        # Watchdog: a frame whose words the core does not take, or whose
        # answers it does not give, is cut short.
        progress = (host_in.valid & host_in.ready) | (host_out.valid & host_out.ready)
        with m.If(~feeding_state | progress | stalled):
            m.d.sync += stall.eq(0)
        with m.Else():
            m.d.sync += stall.eq(stall + 1)
            with m.If(stall == self._stall_timeout - 1):
                m.d.sync += stalled.eq(1)

        with m.FSM(name="reply"):
            with m.State("IDLE"):
                with m.If(reply_start):
                    m.d.sync += answers.eq(0)
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(REPLY_SYNC), tx_crc.start.eq(1)]
                with m.If(sent):
                    m.next = "SEQ"
            with m.State("SEQ"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(seq), covered.eq(1)]
                with m.If(sent):
                    m.next = "COUNT"
            with m.State("COUNT"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(nreply), covered.eq(1)]
                with m.If(sent):
                    m.next = "TAKE"
                    with m.If(nreply == 0):
                        m.next = "WAIT"
            with m.State("TAKE"):
                # The next answer word (zeros once the frame has stalled).
                m.d.comb += host_out.ready.eq(~stalled)
                with m.If(stalled):
                    m.d.sync += [out_word.eq(0), out_byte.eq(0)]
                    m.next = "BYTES"
                with m.Elif(host_out.valid):
                    m.d.sync += [out_word.eq(host_out.payload), out_byte.eq(0)]
                    m.next = "BYTES"
            with m.State("BYTES"):
                out_bytes = Array(out_word[8 * i:8 * i + 8] for i in range(4))
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(out_bytes[out_byte]), covered.eq(1)]
                with m.If(sent):
                    m.d.sync += out_byte.eq(out_byte + 1)
                    with m.If(out_byte == 3):
                        m.d.sync += answers.eq(answers + 1)
                        m.next = "TAKE"
                        with m.If(answers + 1 == nreply):
                            m.next = "WAIT"
            with m.State("WAIT"):
                # Every word fed (or the frame stalled): the status can be told.
                with m.If(~feeding_state | fed_all):
                    m.d.sync += pins.eq(self.core_pins)
                    m.next = "STATUS"
            with m.State("STATUS"):
                code = Signal(LinkStatus)
                m.d.comb += code.eq(Mux(stalled, LinkStatus.STALLED, outcome))
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(Cat(code, Const(0, 1), pins)),
                             covered.eq(1)]
                with m.If(sent):
                    m.next = "CRC_HIGH"
            with m.State("CRC_HIGH"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(tx_crc.crc[8:16])]
                with m.If(sent):
                    m.next = "CRC_LOW"
            with m.State("CRC_LOW"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(tx_crc.crc[0:8])]
                with m.If(sent):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += reply_done.eq(1)
                m.next = "IDLE"
        return m


class SerialCore(wiring.Component):
    """The accelerator behind a UART: what a board top instantiates and the
    serial-path simulation runs.

    `divisor` is the UART bit time in cycles; `byte_timeout` and
    `stall_timeout` are the bridge's (cycles). `activity` is high while a
    frame is received or answered (for an LED)."""

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    done: Out(1)
    error: Out(1)
    activity: Out(1)

    def __init__(self, config, *, divisor, byte_timeout=None, stall_timeout=None,
                 buffer_words=MAX_WORDS):
        self._config = config
        self._divisor = divisor
        # Defaults: 64 byte times of silence ends a frame; a million cycles without progress.
        self._byte_timeout = byte_timeout or 640 * divisor
        self._stall_timeout = stall_timeout or 1 << 20
        self._buffer_words = buffer_words
        super().__init__()

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UartRx(self._divisor)
        m.submodules.uart_tx = uart_tx = UartTx(self._divisor)
        m.submodules.bridge = bridge = FrameBridge(buffer_words=self._buffer_words,
                                                   byte_timeout=self._byte_timeout,
                                                   stall_timeout=self._stall_timeout)
        core = Core(self._config)
        m.submodules.core = ResetInserter(bridge.core_reset)(core)
        m.d.comb += [uart_rx.rx.eq(self.rx), self.tx.eq(uart_tx.tx)]
        wiring.connect(m, uart_rx.data, bridge.rx_bytes)
        wiring.connect(m, bridge.tx_bytes, uart_tx.data)
        wiring.connect(m, bridge.host_in, core.host_in)
        wiring.connect(m, core.host_out, bridge.host_out)
        m.d.comb += [bridge.core_pins.eq(Cat(core.busy, core.done, core.error)),
                     self.busy.eq(core.busy), self.done.eq(core.done), self.error.eq(core.error),
                     self.activity.eq(~uart_rx.rx | ~uart_tx.tx | ~uart_tx.data.ready)]
        return m
