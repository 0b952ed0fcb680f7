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

`FrameBridge` connects three small components around the payload buffer:

    rx_bytes -> RequestReceiver --frame--> ReplySender -> tx_bytes
                      |                      |      ^
                write |                 feed |      | host_out, core_pins
                      v                      v
                   buffer ----read---->  WordFeeder -> host_in, core_reset

The receiver writes a request's payload into the buffer (block RAM) while
it checks the frame, then offers its header and outcome (`RequestHeader`)
to the replier, which takes it once the reply is sent (the receiver drops
the bytes that arrive meanwhile). The replier answers every frame; for an
accepted one it runs the feeder (`FEED`) meanwhile, and its `StallWatchdog`
cuts the frame short when the core stops making progress.

`SerialCore` is the board-independent top: core, bridge and UART. The board
tops (`hw/boards/top.py`) add clock, reset, pins and LEDs; the simulation
(`sim/benches/board_bench.py`) drives its `rx` and `tx` directly.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

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


def _check_buffer_words(buffer_words):
    if not isinstance(buffer_words, int) or not 1 <= buffer_words <= MAX_WORDS:
        raise ValueError(f"buffer_words must be an int in [1, {MAX_WORDS}], got {buffer_words!r}")


def _check_cycles(name, value, *, minimum=1):
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} (cycles), got {value!r}")


class RequestHeader(data.Struct):
    """A request frame as the receiver hands it to the replier: its header
    fields and the outcome of the checks. A refused frame's fields are the
    ones received before it was refused."""

    seq: 8
    flags: 8
    nwords: 8
    nreply: 8
    outcome: LinkStatus


# How the replier runs the feeder while it answers an accepted frame, from
# the replier's side.
FEED = wiring.Signature({
    "start": Out(1),       # the frame's first cycle, before `run`
    "reset": Out(1),       # with `start`: the frame asks for a core reset
    "nwords": Out(8),
    "run": Out(1),         # feed the frame's words, until the reply is sent
    "stop": Out(1),        # the frame stalled: feed nothing more
    "fed_all": In(1),      # nothing (more) to feed: every word taken, stopped, or not running
    "took": In(1),         # the core took a word this cycle
})


class RequestReceiver(wiring.Component):
    """Request frames from `rx_bytes`: their payload words into the buffer
    (through its write port, `buffer`), then the checked header on `frame`.

    `frame` stays valid until the reply has been sent (`frame.ready`); the
    bytes that arrive meanwhile are dropped, and so are bytes before a sync
    byte. A frame is refused (the header's `outcome`) for more words than
    `buffer_words` (at its `nreply` byte), for a CRC mismatch, or for more
    than `byte_timeout` idle cycles between two of its bytes. A refused frame's words
    may be in the buffer: only an accepted frame's words are fed.
    """

    def __init__(self, *, buffer_words, byte_timeout):
        _check_buffer_words(buffer_words)
        _check_cycles("byte_timeout", byte_timeout)
        self._buffer_words = buffer_words
        self._byte_timeout = byte_timeout
        super().__init__({
            "rx_bytes": In(stream.Signature(8)),
            "buffer": In(memory.WritePort.Signature(addr_width=ceil_log2(buffer_words), shape=32)),
            "frame": Out(stream.Signature(RequestHeader)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx_crc = crc = CRC(data_width=8).create()
        rx, header, buffer = self.rx_bytes, self.frame.payload, self.buffer
        byte, got = rx.payload, rx.valid
        word = Signal(32)                     # payload word being assembled
        byte_index = Signal(2)
        words_in = Signal(8)                  # payload words received
        silence = Signal(range(self._byte_timeout + 1))
        receiving = Signal()                  # after the sync byte, up to the last CRC byte

        m.d.comb += [
            rx.ready.eq(1),                   # a UART cannot wait: bytes nobody wants are dropped
            crc.data.eq(byte), crc.valid.eq(got & receiving),
            buffer.addr.eq(words_in), buffer.data.eq(Cat(word[8:32], byte)),
        ]
        with m.If(got | ~receiving):
            m.d.sync += silence.eq(0)
        with m.Elif(silence != self._byte_timeout):
            m.d.sync += silence.eq(silence + 1)

        def in_frame():                       # every state from SEQ to CRC_LOW
            m.d.comb += receiving.eq(1)
            with m.If(~got & (silence == self._byte_timeout)):
                m.d.sync += header.outcome.eq(LinkStatus.TIMEOUT)
                m.next = "REPLY"

        with m.FSM(name="request"):
            with m.State("HUNT"):
                with m.If(got & (byte == REQUEST_SYNC)):
                    m.d.comb += crc.start.eq(1)
                    m.next = "SEQ"
            for state, field, next_state in (("SEQ", header.seq, "FLAGS"), ("FLAGS", header.flags, "NWORDS"),
                                             ("NWORDS", header.nwords, "NREPLY")):
                with m.State(state):
                    in_frame()
                    with m.If(got):
                        m.d.sync += field.eq(byte)
                        m.next = next_state
            with m.State("NREPLY"):
                in_frame()
                m.d.sync += [words_in.eq(0), byte_index.eq(0)]
                with m.If(got):
                    m.d.sync += header.nreply.eq(byte)
                    too_long = header.nwords > self._buffer_words if self._buffer_words < MAX_WORDS else 0
                    with m.If(too_long):
                        m.d.sync += header.outcome.eq(LinkStatus.BAD_LENGTH)
                        m.next = "REPLY"
                    with m.Elif(header.nwords == 0):
                        m.next = "CRC_HIGH"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                in_frame()
                with m.If(got):
                    m.d.sync += [word.eq(Cat(word[8:32], byte)), byte_index.eq(byte_index + 1)]
                    with m.If(byte_index == 3):
                        m.d.comb += buffer.en.eq(1)
                        m.d.sync += words_in.eq(words_in + 1)
                        with m.If(words_in + 1 == header.nwords):
                            m.next = "CRC_HIGH"
            for state, next_state in (("CRC_HIGH", "CRC_LOW"), ("CRC_LOW", "CHECK")):
                with m.State(state):
                    in_frame()
                    with m.If(got):
                        m.next = next_state
            with m.State("CHECK"):
                # The CRC register has taken the last byte: a whole codeword
                # leaves the residue.
                m.d.sync += header.outcome.eq(Mux(crc.match_detected, LinkStatus.OK, LinkStatus.BAD_CRC))
                m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += self.frame.valid.eq(1)
                with m.If(self.frame.ready):
                    m.next = "HUNT"
        return m


class WordFeeder(wiring.Component):
    """An accepted request's words from the buffer (through its read port,
    `buffer`) into the core's `host_in`, in order, while the replier runs it
    (`feed`). `core_reset` is high in the frame's first cycle when the frame
    asks for it, before the first word. A stop drops `host_in.valid` and the
    words not yet taken (against the stream rule, on purpose: the core has
    stalled, and the host resets it next)."""

    def __init__(self, *, buffer_words):
        _check_buffer_words(buffer_words)
        self._buffer_words = buffer_words
        super().__init__({
            "feed": In(FEED),
            "buffer": In(memory.ReadPort.Signature(addr_width=ceil_log2(buffer_words), shape=32)),
            "host_in": Out(stream.Signature(32)),
            "core_reset": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        feed, buffer, host_in = self.feed, self.buffer, self.host_in
        issued = Signal(range(MAX_WORDS + 1))   # words read from the buffer
        load = Signal()
        m.d.comb += [
            self.core_reset.eq(feed.start & feed.reset),
            # The next word, read when host_in is empty or its word is taken.
            load.eq(feed.run & ~feed.stop & (~host_in.valid | host_in.ready) & (issued != feed.nwords)),
            buffer.addr.eq(issued), buffer.en.eq(load),
            host_in.payload.eq(buffer.data),
            feed.took.eq(host_in.valid & host_in.ready),
            feed.fed_all.eq(~feed.run | feed.stop | ((issued == feed.nwords) & ~host_in.valid)),
        ]
        with m.If(feed.start):
            m.d.sync += issued.eq(0)
        with m.If(load):
            m.d.sync += [issued.eq(issued + 1), host_in.valid.eq(1)]
        with m.Elif(host_in.ready | feed.stop):
            m.d.sync += host_in.valid.eq(0)
        return m


class StallWatchdog(wiring.Component):
    """`stalled` rises after `timeout` cycles of `watch` without `progress`
    and stays high until `watch` falls."""

    watch: In(1)
    progress: In(1)
    stalled: Out(1)

    def __init__(self, timeout):
        _check_cycles("timeout", timeout)
        self._timeout = timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        idle = Signal(range(self._timeout + 1))   # cycles without progress
        with m.If(~self.watch | self.progress | self.stalled):
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
            with m.If(idle == self._timeout - 1):
                m.d.sync += self.stalled.eq(1)
        with m.If(~self.watch):
            m.d.sync += self.stalled.eq(0)
        return m


class ReplySender(wiring.Component):
    """One reply on `tx_bytes` for every frame from the receiver, which it
    takes (`frame.ready`) once the reply is sent. For an accepted frame it
    runs the feeder (`feed`) meanwhile, and the answer words come from
    `host_out`; a refused one gets no words. After the answers, and once
    every word is fed, the status byte tells the outcome and `core_pins`.

    A frame whose words the core does not take, or whose answers it does
    not give, for `stall_timeout` cycles is cut short: the feeder stops, the
    owed answers go out as zeros and the status says STALLED.
    """

    frame: In(stream.Signature(RequestHeader))
    feed: Out(FEED)
    host_out: In(stream.Signature(32))
    core_pins: In(3)           # busy, done, error
    tx_bytes: Out(stream.Signature(8))

    def __init__(self, *, stall_timeout):
        _check_cycles("stall_timeout", stall_timeout)
        self._stall_timeout = stall_timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx_crc = crc = CRC(data_width=8).create()
        m.submodules.watchdog = watchdog = StallWatchdog(self._stall_timeout)
        header, feed, host_out, tx = self.frame.payload, self.feed, self.host_out, self.tx_bytes
        accepted = Signal()
        replying = Signal()                   # after the frame's first cycle, until it is taken
        answers = Signal(8)                   # answer words sent
        word = Signal(32)
        byte_index = Signal(2)
        pins = Signal(3)
        sent = Signal()
        m.d.comb += [
            accepted.eq(header.outcome == LinkStatus.OK),
            feed.nwords.eq(header.nwords), feed.reset.eq((header.flags & FLAG_RESET) != 0),
            feed.run.eq(replying & accepted), feed.stop.eq(watchdog.stalled),
            watchdog.watch.eq(feed.run),
            watchdog.progress.eq(feed.took | (host_out.valid & host_out.ready)),
            sent.eq(tx.valid & tx.ready), crc.data.eq(tx.payload),
        ]

        def send(value, next_state):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(value)]
            with m.If(sent):
                m.next = next_state

        with m.FSM(name="reply") as fsm:
            with m.State("IDLE"):
                with m.If(self.frame.valid):
                    m.d.comb += feed.start.eq(accepted)
                    m.d.sync += answers.eq(0)
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += crc.start.eq(1)
                send(REPLY_SYNC, "SEQ")
            with m.State("SEQ"):
                send(header.seq, "COUNT")
            with m.State("COUNT"):
                # A refused frame's reply has no words.
                send(Mux(accepted, header.nreply, 0), "TAKE")
                with m.If(sent & (~accepted | (header.nreply == 0))):
                    m.next = "WAIT"
            with m.State("TAKE"):
                # The next answer word (zeros once the frame has stalled).
                m.d.comb += host_out.ready.eq(~watchdog.stalled)
                with m.If(watchdog.stalled):
                    m.d.sync += [word.eq(0), byte_index.eq(0)]
                    m.next = "BYTES"
                with m.Elif(host_out.valid):
                    m.d.sync += [word.eq(host_out.payload), byte_index.eq(0)]
                    m.next = "BYTES"
            with m.State("BYTES"):
                word_bytes = Array(word[8 * i:8 * i + 8] for i in range(4))
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(word_bytes[byte_index])]
                with m.If(sent):
                    m.d.sync += byte_index.eq(byte_index + 1)
                    with m.If(byte_index == 3):
                        m.d.sync += answers.eq(answers + 1)
                        m.next = "TAKE"
                        with m.If(answers + 1 == header.nreply):
                            m.next = "WAIT"
            with m.State("WAIT"):
                # Every word fed (or the frame stalled): the status can be told.
                with m.If(feed.fed_all):
                    m.d.sync += pins.eq(self.core_pins)
                    m.next = "STATUS"
            with m.State("STATUS"):
                send(Cat(Mux(watchdog.stalled, LinkStatus.STALLED, header.outcome), Const(0, 1), pins),
                     "CRC_HIGH")
            with m.State("CRC_HIGH"):
                send(crc.crc[8:16], "CRC_LOW")
            with m.State("CRC_LOW"):
                send(crc.crc[0:8], "DONE")
            with m.State("DONE"):
                m.d.comb += self.frame.ready.eq(1)
                m.next = "IDLE"
        # The CRC covers every byte between the sync byte and the CRC.
        m.d.comb += [crc.valid.eq(sent & ~fsm.ongoing("SYNC") & ~fsm.ongoing("CRC_HIGH") & ~fsm.ongoing("CRC_LOW")),
                     replying.eq(~fsm.ongoing("IDLE"))]
        return m


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
        _check_buffer_words(buffer_words)
        _check_cycles("byte_timeout", byte_timeout, minimum=16)
        _check_cycles("stall_timeout", stall_timeout, minimum=16)
        self._buffer_words = buffer_words
        self._byte_timeout = byte_timeout
        self._stall_timeout = stall_timeout
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = RequestReceiver(buffer_words=self._buffer_words,
                                                           byte_timeout=self._byte_timeout)
        m.submodules.buffer = buffer = memory.Memory(shape=32, depth=self._buffer_words, init=[])
        m.submodules.feeder = feeder = WordFeeder(buffer_words=self._buffer_words)
        m.submodules.replier = replier = ReplySender(stall_timeout=self._stall_timeout)
        wiring.connect(m, wiring.flipped(self.rx_bytes), receiver.rx_bytes)
        wiring.connect(m, receiver.buffer, buffer.write_port())
        wiring.connect(m, receiver.frame, replier.frame)
        wiring.connect(m, replier.feed, feeder.feed)
        wiring.connect(m, buffer.read_port(), feeder.buffer)
        wiring.connect(m, feeder.host_in, wiring.flipped(self.host_in))
        wiring.connect(m, wiring.flipped(self.host_out), replier.host_out)
        wiring.connect(m, replier.tx_bytes, wiring.flipped(self.tx_bytes))
        m.d.comb += [replier.core_pins.eq(self.core_pins), self.core_reset.eq(feeder.core_reset)]
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
