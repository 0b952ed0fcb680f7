"""The core's instruction set as data: the one definition of every field that
the compiler writes and the core reads (docs/isa.md describes them).

The layouts are Amaranth `data` layouts, so both sides use the same objects.
The RTL views its memory words through them (a `data.View` of the layout over
the read port's data, which keeps the Verilog free of per-field wires); the
compiler and the golden model encode and decode with a codec that reads each
field's offset, width and sign from the same layouts once
(`sw/compile/encoding.py`; `layout.const(...)` costs up to 2 ms a word), and
tests/sw/compile/test_isa_contract.py holds that codec equal to Amaranth's
`const`/`from_bits`. So the compiler and the core cannot disagree on a bit
position.

This module needs only Amaranth's layouts and enums and the PE modes, not the
RTL, so the compiler and the host software import it cheaply.
"""

import enum as py_enum
import functools

from amaranth.hdl import Shape, signed
from amaranth.lib import data, enum

from common.fixedpoint import MULTIPLIER_BITS
from common.layer_shapes import KERNEL_BITS, PAD_BITS
from common.weight_groups import GROUP_SIZE
from hw.pe.modes import PeMode

__all__ = [
    "ACT_SLOTS_PER_WORD", "ACT_SLOT_BITS", "ACT_WORD_BITS", "CHUNK_ACT_WORDS", "CHUNK_ROW",
    "COUNTER_REGISTERS", "GROUP_SIZE", "HOST_HEADER", "HostCommand", "HostRegister",
    "INSTRUCTION", "MAX_PLANES", "MULTIPLIER_BITS", "Memory", "OPERANDS", "Opcode", "PAD_BITS",
    "PARAMETER", "PCODE_BITS", "PeMode", "RESULT_WIDTH", "ROUND_FIELDS", "Register",
    "SET_FIELDS", "TILE_FIELDS", "chunk_layout", "counter_register", "field_width",
    "slot_bits", "wptr_layout",
]


class Memory(py_enum.IntEnum):
    """The core's memories, by the id the host protocol names them with."""
    PROGRAM = 0        # instructions (INSTRUCTION)
    CHUNKS = 1         # chunk descriptors (chunk_layout)
    WPTR = 2           # per-row weight pointers of a round (wptr_layout)
    PARAMS = 3         # per-channel bias and multiplier (PARAMETER)
    WEIGHTS = 4        # bit-planes of weight groups, one bank per array row
    ACTIVATIONS = 5    # activation slots of 2-4 bits, one bank per array column
    RESULTS = 6        # raw 32-bit outputs (acc + bias)


class Opcode(enum.IntEnum, shape=4):
    HALT = 0           # wait for the PPU, then done
    SET = 1            # set a layer register
    TILE = 2           # the tile the next ROUNDs compute
    ROUND = 3          # run chunks into the array, drain into the OAB


class Register(py_enum.IntEnum):
    """Layer registers, by their SET index."""
    IN_BASE = 0        # input map base word address
    IN_BASE2 = 1       # second input map base (low nibbles of an 8-bit input)
    IN_H = 2           # input height
    IN_W = 3           # input width
    IN_WORDS = 4       # input words per pixel (padded channels / 4)
    PAD = 5            # zero padding, the same on every side
    OUT_BASE = 6       # output map base word address
    OUT_W = 7          # conv output width (columns x >= OUT_W are not written)
    COUT = 8           # output channels (rows k >= COUT are not written)
    OUT_WB = 9         # output map pixels per bank and row, ceil(W / C) (of the pooled map)
    OUT_WORDS = 10     # output words per pixel (padded channels / 4)
    POOL = 11          # 1: 2x2 max-pool, stride 2, before writing
    ACT_BITS = 12      # output activation bits (2, 3, 4)
    REQ_SHIFT = 13     # requantization right shift
    RAW = 14           # 1: write acc + bias to the result memory instead
    PARAM_BASE = 15    # parameter entry of output channel 0
    RES_BASE = 16      # result memory base
    STRIDE2 = 17       # 1: stride-2 convolution, reading a parity-split input map
    OUT_SPLIT = 18     # 0: output columns in order; n > 0: parity-split, even columns from n
    SC_BASE = 19       # shortcut map base word address (the conv output's shape and layout)
    SC_ENABLE = 20     # 1: the layer adds a residual shortcut before its clamp
    SC_SHIFT = 21      # residual_shift Sr: the shortcut term is (code * Mr) << Sr
    SC_SIGNED = 22     # 1: shortcut codes are signed 4-bit two's complement slots
    OUT_SIGNED = 23    # 1: clamp the output to the signed a-bit range (no ReLU)
    IN_BITS = 24       # bits per stored value of the input map(s) (2, 3, 4; see `slot_bits`)
    SC_BITS = 25       # bits per stored value of the shortcut map
    SC_WORDS = 26      # shortcut map words per pixel (padded channels * SC_BITS / 16)


# ---- instructions (memory PROGRAM): operands in the low bits, opcode in 63:60.
SET_FIELDS = data.StructLayout({"value": 32, "register": 6})
TILE_FIELDS = data.StructLayout({"y": 16, "x0": 16, "ktile": 16})
ROUND_FIELDS = data.StructLayout({
    "chunk_start": 16, "chunk_count": 16, "wptr": 12, "shift": 4,
    "input2": 1, "first": 1, "last": 1,
})
# Opcode -> the name of its operand field in INSTRUCTION (HALT has none).
OPERANDS = {Opcode.SET: "set", Opcode.TILE: "tile", Opcode.ROUND: "round"}
INSTRUCTION = data.FlexibleLayout(64, {
    "set": data.Field(SET_FIELDS, 0),
    "tile": data.Field(TILE_FIELDS, 0),
    "round": data.Field(ROUND_FIELDS, 0),
    "opcode": data.Field(Opcode, 60),
})

# ---- chunk descriptors (memory CHUNKS): one weight group per array row.
# pcode: the row's group precision, PCODE_BITS[pcode] bits (0: no group, all
# zero weights); fold: the row's weight is q << fold.
PCODE_BITS = (0, 2, 3, 4)
CHUNK_ROW = data.StructLayout({"pcode": 2, "fold": 1})


@functools.cache
def chunk_layout(rows):
    """A chunk descriptor of an array with `rows` rows: kernel position
    (ky, kx), input channel block (channels block*G .. block*G + G-1), the PE
    mode and one CHUNK_ROW per row, row 0 first."""
    return data.StructLayout({
        "ky": KERNEL_BITS, "kx": KERNEL_BITS, "block": 12, "mode": PeMode,
        "rows": data.ArrayLayout(CHUNK_ROW, rows),
    })


# ---- weight pointers (memory WPTR): row r's first plane address of a round.
@functools.cache
def wptr_layout(rows, addr_bits):
    return data.ArrayLayout(addr_bits, rows)


# ---- parameters (memory PARAMS): per output channel: bias, requantization
# multiplier M and the residual shortcut's multiplier Mr (0 without one).
PARAMETER = data.StructLayout({"bias": signed(32), "multiplier": signed(MULTIPLIER_BITS),
                               "residual_multiplier": signed(MULTIPLIER_BITS)})

# ---- weights (memory WEIGHTS): a group of precision p is p plane words of
# GROUP_SIZE bits (bit i of plane b is bit b of weight i), at most MAX_PLANES.
MAX_PLANES = max(PCODE_BITS)

# ---- activations (memory ACTIVATIONS): a map stores each value in an s-bit
# slot, s = `slot_bits` of its precision: channel k of a pixel at bits
# s*k .. s*k + s - 1 of the pixel's words (bit i of the pixel is bit i mod
# 16 of its word i div 16), so a pixel of P padded channels is P*s/16 words
# and a chunk reads its G channels as s words. A 3-bit slot may straddle two
# words. ACT_SLOT_BITS is the widest slot (codes travel in it through the
# core); with 4-bit slots a word holds ACT_SLOTS_PER_WORD of them and a chunk
# is CHUNK_ACT_WORDS words.
ACT_SLOT_BITS = 4
ACT_SLOTS_PER_WORD = 4
ACT_WORD_BITS = ACT_SLOT_BITS * ACT_SLOTS_PER_WORD
CHUNK_ACT_WORDS = GROUP_SIZE // ACT_SLOTS_PER_WORD


def slot_bits(packed, bits):
    """Bits a map of `bits`-bit activations stores per value: its precision
    on a core with `packed_activations`, else 4 (a 4-bit slot each)."""
    if bits not in (2, 3, 4):
        raise ValueError(f"activation maps hold 2, 3 or 4 bits a value, got {bits!r}")
    return bits if packed else ACT_SLOT_BITS

# ---- results (memory RESULTS): acc + bias, wrapped to 32 bits.
RESULT_WIDTH = 32

# The core keeps PAD in PAD_BITS bits (common/layer_shapes.py: the compiler
# and training refuse more).


def field_width(layout, name):
    """Bits of field `name` of `layout`."""
    return Shape.cast(layout[name].shape).width


# ---- the host protocol (docs/host.md): the header word of every command and
# the host-visible registers. The driver (sw/driver.py) encodes headers with
# HOST_HEADER.const, the host interface (hw/host.py) views them through it.
class HostCommand(enum.IntEnum, shape=4):
    WRITE_MEM = 1      # address, count, then count entries
    READ_MEM = 2       # address, count; answered with count entries
    WRITE_REG = 3      # value
    READ_REG = 4       # answered with one word


HOST_HEADER = data.StructLayout({
    "register": 16,    # WRITE_REG, READ_REG
    "bank": 8,         # WRITE_MEM, READ_MEM
    "memory": 4,       # WRITE_MEM, READ_MEM: a Memory id
    "command": HostCommand,
})


class HostRegister(py_enum.IntEnum):
    """Host-visible registers, by their READ_REG/WRITE_REG number."""
    CTRL = 0           # write: bit 0 start, bit 1 clear protocol_error
    STATUS = 1         # read: busy, done, error, protocol_error (bits 0..3)
    ERROR_PC = 2       # read: the address of the bad instruction
    INFO = 3           # read: rows 7:0, columns 15:8, accumulator width 23:16
    COUNTERS = 16      # read: counter i's low word at 16 + 2i, its high word at 17 + 2i


# Words per counter register (low, high): a counter is up to 64 bits wide.
COUNTER_REGISTERS = 2


def counter_register(index, word=0):
    """The register of word `word` (0 low, 1 high) of counter `index` (hw/counters.py)."""
    return HostRegister.COUNTERS + COUNTER_REGISTERS * index + word
