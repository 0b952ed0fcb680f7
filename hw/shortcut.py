"""The residual shortcut: a tile's shortcut codes, read from the activation
memory into a buffer beside the OAB for the PPU (docs/isa.md, "Residual
shortcut").

  ShortcutLoader   at `start` (a residual tile's last ROUND is done)
                   latches the tile, then reads its J words per
                   bank, one a cycle, every bank at once, and hands each
                   read's data to the buffer (`captures`).
  ShortcutBuffer   two tiles' words per bank (tile n in buffer n mod 2, as
                   the OAB); offers the PPU the code of any (row, column)
                   of either buffer, combinationally.

The reads run in the cycles after the tile's last round is done, before
the next round's first activation read (the controller starts it
`shortcut_start_gap` cycles late where they would not fit), so they share
the round engine's activation read ports without a conflict; they end
before the tile reaches the PPU (hw/timing.py).
"""

import functools

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.isa import ACT_SLOT_BITS, ACT_WORD_BITS
from hw.timing import shortcut_reads_hidden, shortcut_words_max


def _words_max(config):
    return shortcut_words_max(config.rows, config.packed_activations)


def _slot_bits(component, config):
    """The shortcut map's slot width: SC_BITS with packed_activations, else 4."""
    return component.slot_bits if config.packed_activations else ACT_SLOT_BITS


def _act_addr_bits(config):
    return (config.act_depth - 1).bit_length()


@functools.cache
def shortcut_capture_layout(config):
    """One read's data for the buffer: word `index` of every bank's pixel, into `buffer`."""
    return data.StructLayout({
        # At least 1 bit: a 0-bit field is a [-1:0] wire in the Verilog.
        "buffer": 1, "index": range(max(_words_max(config), 2)),
        "words": data.ArrayLayout(ACT_WORD_BITS, config.cols),
    })


def shortcut_read_signature(config):
    """The PPU's look-up, from the PPU's side: the code of row `row` (output
    channel ktile*R + row), column `col` of buffer `buffer`, whose first
    channel is `first` ((ktile * R) mod 16: its slot's bit offset in the
    first word is s * first mod 16)."""
    return wiring.Signature({
        "buffer": Out(1), "row": Out(range(max(config.rows, 2))), "col": Out(range(config.cols)),
        "first": Out(4), "code": In(ACT_SLOT_BITS),
    })


class ShortcutLoader(wiring.Component):
    """Reads a tile's shortcut words: at `start`, the tile (`y`, `x0`,
    `ktile`) and its buffer; then bank c reads words
    `sc_base + (y * out_wb + x0 div C) * sc_words + (s * ktile*R) div 16 + j`,
    j = 0 .. J - 1 with J the words channels ktile*R .. ktile*R + R - 1
    span in s-bit slots (timing.shortcut_words; s = `slot_bits` with
    packed_activations, else 4), in J consecutive cycles, and `captures` carries each read's data
    the cycle after. `reads` counts this cycle's words (shortcut_reads)."""

    def __init__(self, config):
        if not shortcut_reads_hidden(config.rows, config.cols, config.packed_activations):
            raise ValueError(f"a {config.rows}x{config.cols} array has no time to read a "
                             f"shortcut before the tile reaches the PPU")
        self._config = config
        coord = config.coord_bits
        super().__init__({
            "start": In(1), "buffer": In(1),
            "y": In(coord), "x0": In(coord), "ktile": In(coord),
            "sc_base": In(32), "out_wb": In(16), "sc_words": In(16), "slot_bits": In(3),
            "acts": In(memory.ReadPort.Signature(addr_width=_act_addr_bits(config),
                                                 shape=ACT_WORD_BITS)).array(config.cols),
            "captures": Out(stream.Signature(shortcut_capture_layout(config), always_ready=True)),
            "reads": Out(range(config.cols + 1)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols = config.rows, config.cols
        col_bits = (cols - 1).bit_length()
        words_max = _words_max(config)

        address = Signal(32)                     # the next word every bank reads
        left = Signal(range(words_max + 1))      # words still to read
        index = Signal(range(max(words_max, 2)))
        buffer = Signal()
        slot = _slot_bits(self, config)
        # The words of the tile's first and last channels' slots.
        first_word = Signal(config.coord_bits + 3)
        last_word = Signal(config.coord_bits + 3)
        m.d.comb += [first_word.eq((self.ktile * rows * slot) >> 4),
                     last_word.eq(((self.ktile * rows + rows) * slot - 1) >> 4)]
        with m.If(self.start):
            m.d.sync += [
                address.eq(self.sc_base + (self.y * self.out_wb + (self.x0 >> col_bits)) * self.sc_words
                           + first_word),
                left.eq(last_word - first_word + 1),
                index.eq(0), buffer.eq(self.buffer),
            ]
        reading = Signal()
        m.d.comb += [reading.eq(left != 0), self.busy.eq(reading | self.captures.valid),
                     self.reads.eq(Mux(reading, cols, 0))]
        for port in self.acts:
            m.d.comb += [port.addr.eq(address), port.en.eq(reading)]
        with m.If(reading & ~self.start):
            m.d.sync += [address.eq(address + 1), left.eq(left - 1)]

        # The read's data, the cycle after.
        captures = self.captures
        m.d.sync += [captures.valid.eq(reading & ~self.start), captures.p.index.eq(index),
                     captures.p.buffer.eq(buffer)]
        with m.If(reading & ~self.start):
            m.d.sync += index.eq(index + 1)
        for c, port in enumerate(self.acts):
            m.d.comb += captures.p.words[c].eq(port.data)
        return m


class ShortcutBuffer(wiring.Component):
    """Two tiles' shortcut words per bank (buffer b's J words of bank c),
    written by the loader's captures and read by the PPU: `ppu.code` is
    the s-bit slot at bit (s * first) mod 16 + s * row of column `col`'s
    words (s = `slot_bits` with packed_activations, else 4), sign-extended
    to 4 bits when `signed`."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "captures": In(stream.Signature(shortcut_capture_layout(config), always_ready=True)),
            "ppu": In(shortcut_read_signature(config)),
            "slot_bits": In(3), "signed": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        words_max = _words_max(config)
        captures, capture = self.captures, self.captures.payload
        words = [[[Signal(ACT_WORD_BITS, name=f"b{b}_c{c}_w{j}") for j in range(words_max)]
                  for c in range(config.cols)] for b in range(2)]
        for b in range(2):
            for c in range(config.cols):
                for j in range(words_max):
                    with m.If(captures.valid & (capture.buffer == b) & (capture.index == j)):
                        m.d.sync += words[b][c][j].eq(capture.words[c])

        ppu = self.ppu
        pixel = Array(Array(Cat(*words[b][c]) for c in range(config.cols)) for b in range(2))
        bits = pixel[ppu.buffer][ppu.col]
        if not config.packed_activations:
            # 4-bit slots: slot (first mod 4) + row of the words.
            m.d.comb += ppu.code.eq(bits.word_select(ppu.first[:2] + ppu.row, ACT_SLOT_BITS))
            return m
        code = Signal(ACT_SLOT_BITS)
        with m.Switch(self.slot_bits):
            for s in (2, 3, 4):
                with m.Case(s):
                    # Every slot start a row can have (a mux, not a shifter).
                    starts = range(max(s * f % 16 for f in range(16)) + s * (config.rows - 1) + 1)
                    fields = Array(bits[i:i + s] if i + s <= len(bits) else 0 for i in starts)
                    field = Signal(s, name=f"field{s}")
                    m.d.comb += [field.eq(fields[(ppu.first * s)[:4] + ppu.row * s]),
                                 code.eq(Mux(self.signed, field.as_signed(), field))]
        m.d.comb += ppu.code.eq(code)
        return m
