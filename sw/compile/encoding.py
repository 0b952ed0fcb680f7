"""Bit-level encodings of docs/isa.md: instructions, chunk descriptors, weight
pointers, parameters, weight bit-planes and the activation layout.

Every field position comes from the hardware's contract, `hw/isa.py`: the
encoders fill its layouts and the decoders (the golden model's) read them, so
no bit position is written down here. Each encoder checks that its fields fit
and raises ValueError otherwise (the compiler checks the user-facing limits
first and reports them as UserError, so a ValueError here is a compiler bug).
"""

import enum
import functools
from collections.abc import Mapping

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

from hw import isa
from hw.isa import ACT_WORD_BITS, GROUP_SIZE, RESULT_WIDTH, Opcode, Register
from hw.pe.modes import PeMode

# Group precision <-> pcode of a chunk descriptor.
BITS_OF_PCODE = isa.PCODE_BITS
PCODE_OF_BITS = {bits: pcode for pcode, bits in enumerate(isa.PCODE_BITS)}

# Limits the compiler checks, from the field widths.
ROUND_SHIFT_MAX = (1 << isa.field_width(isa.ROUND_FIELDS, "shift")) - 1
ROUND_WPTR_LIMIT = 1 << isa.field_width(isa.ROUND_FIELDS, "wptr")
CHUNK_ADDRESS_LIMIT = 1 << isa.field_width(isa.ROUND_FIELDS, "chunk_start")
TILE_COORD_LIMIT = 1 << isa.field_width(isa.TILE_FIELDS, "y")   # y, x0 and ktile alike
CHUNK_KERNEL_LIMIT = 1 << isa.field_width(isa.chunk_layout(1), "ky")   # ky and kx alike
CHUNK_BLOCK_LIMIT = 1 << isa.field_width(isa.chunk_layout(1), "block")
PAD_LIMIT = 1 << isa.PAD_BITS


# --- layouts to and from integers -------------------------------------------------------------

class _Codec:
    """Integers to and from the words of one Amaranth layout, with every
    field's offset, width, signedness and enum type read from the layout.

    `encode` gives the bits of `layout.const(fields)` and `decode` the fields
    of `layout.from_bits(word)` (tests/sw/compile/test_isa_contract.py checks
    both against Amaranth over random values of every field). Amaranth's own
    take 0.1 to 2 ms a word, as they re-derive nested layouts' sizes on every
    access: four times the compiler's and the golden model's whole run time."""

    def __init__(self, layout):
        self.array = isinstance(layout, data.ArrayLayout)
        self.fields = {}
        for key, field in layout:
            shape = field.shape
            cast = Shape.cast(shape)
            self.fields[key] = (field.offset, cast.width, cast.signed,
                                shape if isinstance(shape, enum.EnumMeta) else None,
                                _codec(shape) if isinstance(shape, data.Layout) else None)

    def encode(self, fields, path=""):
        word = 0
        for key, value in (fields.items() if isinstance(fields, Mapping) else enumerate(fields)):
            name = f"{path}.{key}".lstrip(".") if isinstance(key, str) else f"{path}[{key}]"
            if key not in self.fields:
                raise ValueError(f"{name} is not a field")
            offset, width, signed, enum_type, codec = self.fields[key]
            if codec is not None:
                bits = codec.encode(value, name)
            else:
                if enum_type is not None:
                    value = enum_type(value).value     # ValueError for a non-member
                value = int(value)
                low = -(1 << (width - 1)) if signed else 0
                if not low <= value < low + (1 << width):
                    raise ValueError(f"{name}={value} does not fit "
                                     f"{'signed ' if signed else ''}{width} bits")
                bits = value & ((1 << width) - 1)
            # As `const`: a later field overwrites the bits of an earlier one.
            word = (word & ~(((1 << width) - 1) << offset)) | (bits << offset)
        return word

    def field(self, word, key):
        """Field `key` of `word`: an int (signed where the field is), an enum
        member, or for a nested layout its fields (dict, or list for arrays)."""
        offset, width, signed, enum_type, codec = self.fields[key]
        bits = (word >> offset) & ((1 << width) - 1)
        if codec is not None:
            return codec.decode(bits)
        if enum_type is not None:
            return enum_type(bits)
        return bits - (1 << width) if signed and bits >> (width - 1) else bits

    def decode(self, word):
        values = [self.field(word, key) for key in self.fields]
        return values if self.array else dict(zip(self.fields, values))


@functools.cache
def _codec(layout):
    return _Codec(layout)


def encode(layout, fields):
    """The bits of `layout.const(fields)`, after checking that every field fits."""
    return _codec(layout).encode(fields)


def decode(layout, word):
    """The fields of `layout.from_bits(word)`: a dict (a list for an array
    layout) of ints, enum members and nested fields."""
    return _codec(layout).decode(int(word))


# --- instructions -----------------------------------------------------------------------------

def _instruction(opcode, operands=None):
    fields = {"opcode": opcode}
    if operands is not None:
        fields[isa.OPERANDS[opcode]] = operands
    return encode(isa.INSTRUCTION, fields)


def encode_halt():
    return _instruction(Opcode.HALT)


def encode_set(register, value):
    index = Register[register] if isinstance(register, str) else int(register)
    return _instruction(Opcode.SET, {"register": index, "value": value})


def encode_tile(y, x0, ktile):
    return _instruction(Opcode.TILE, {"y": y, "x0": x0, "ktile": ktile})


def encode_round(chunk_start, chunk_count, wptr, shift, input2=False, first=False, last=False):
    if chunk_count < 1:
        raise ValueError("a ROUND runs at least one chunk")
    return _instruction(Opcode.ROUND, {
        "chunk_start": chunk_start, "chunk_count": chunk_count, "wptr": wptr, "shift": shift,
        "input2": bool(input2), "first": bool(first), "last": bool(last)})


_ROUND_FLAGS = ("input2", "first", "last")


def decode_instruction(word):
    """`(opcode, fields)`: an `Opcode` (the bare integer for an unknown
    opcode) and a dict of its operand fields (empty for HALT and unknown
    opcodes); ROUND's flags as bools."""
    word, codec = int(word), _codec(isa.INSTRUCTION)
    offset, width = codec.fields["opcode"][:2]
    opcode = (word >> offset) & ((1 << width) - 1)
    if opcode not in Opcode._value2member_map_:
        return opcode, {}
    opcode = Opcode(opcode)
    if opcode not in isa.OPERANDS:
        return opcode, {}
    fields = codec.field(word, isa.OPERANDS[opcode])
    if opcode == Opcode.ROUND:
        fields.update((flag, bool(fields[flag])) for flag in _ROUND_FLAGS)
    return opcode, fields


# --- chunk descriptors, weight pointers, parameters -------------------------------------------

def encode_chunk(ky, kx, block, mode, pcodes, folds):
    rows = [{"pcode": pcode, "fold": fold} for pcode, fold in zip(pcodes, folds)]
    return encode(isa.chunk_layout(len(rows)),
                  {"ky": ky, "kx": kx, "block": block, "mode": PeMode(mode), "rows": rows})


def decode_chunk(word, rows):
    """`(ky, kx, block, mode, pcodes, folds)` with pcodes, folds lists of `rows`."""
    chunk = decode(isa.chunk_layout(rows), word)
    return (chunk["ky"], chunk["kx"], chunk["block"], chunk["mode"],
            [row["pcode"] for row in chunk["rows"]], [row["fold"] for row in chunk["rows"]])


def encode_wptr(pointers, addr_bits):
    return encode(isa.wptr_layout(len(pointers), addr_bits), list(pointers))


def decode_wptr(word, rows, addr_bits):
    return decode(isa.wptr_layout(rows, addr_bits), word)


def encode_param(bias, multiplier, residual_multiplier=0):
    return encode(isa.PARAMETER, {"bias": bias, "multiplier": multiplier,
                                  "residual_multiplier": residual_multiplier})


def decode_param(word):
    """`(bias, multiplier, residual_multiplier)`, all signed."""
    param = decode(isa.PARAMETER, word)
    return param["bias"], param["multiplier"], param["residual_multiplier"]


def encode_result(value):
    """A result word: `acc + bias` wrapped to RESULT_WIDTH bits (numpy-friendly)."""
    return value & ((1 << RESULT_WIDTH) - 1)


def decode_result(word):
    """The signed value of a result word."""
    word = int(word)
    return word - ((word >> (RESULT_WIDTH - 1)) << RESULT_WIDTH)


# --- weight bit-planes -------------------------------------------------------------------------

def pack_planes(values, bits):
    """The `bits` plane words of one group: word `b` holds bit `b` of every
    value's two's complement (bit `i` of the word is weight `i`)."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    if values.size > GROUP_SIZE:
        raise ValueError(f"a group has at most {GROUP_SIZE} weights, got {values.size}")
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if values.size and (values.min() < low or values.max() > high):
        raise ValueError(f"group values outside the {bits}-bit range [{low}, {high}]")
    lane = np.arange(values.size, dtype=np.int64)
    return [int((((values >> b) & 1) << lane).sum()) for b in range(bits)]


def unpack_planes(planes, bits):
    """Inverse of `pack_planes` for a whole group of GROUP_SIZE weights."""
    lane = np.arange(GROUP_SIZE, dtype=np.int64)
    value = np.zeros(GROUP_SIZE, dtype=np.int64)
    for b, word in enumerate(planes[:bits]):
        value |= ((int(word) >> lane) & 1) << b
    if bits:
        value -= ((value >> (bits - 1)) & 1) << bits
    return value


# --- 8-bit weights as signed 3-bit digits -----------------------------------------------------

DIGIT_BITS = 3
DIGIT_SHIFTS = (6, 3, 0)  # d2, d1, d0: w = d2*64 + d1*8 + d0


def weight_digits(weights):
    """`(d2, d1, d0)` with `w = d2*64 + d1*8 + d0`, each digit in [-4, 3]."""
    w = np.asarray(weights, dtype=np.int64)
    d0 = ((w + 4) & 7) - 4
    w1 = (w - d0) >> 3
    d1 = ((w1 + 4) & 7) - 4
    d2 = (w1 - d1) >> 3
    return d2, d1, d0


def _digit_bound():
    w = np.arange(-128, 128)
    d2, d1, d0 = weight_digits(w)
    prefixes = (d2 << 6, (d2 << 6) + (d1 << 3), w)
    return int(max(np.abs(prefix).max() for prefix in prefixes))


# The accumulator bound of one 8-bit weight: the largest |value| of the
# digits' passes run so far, in the compiler's order (d2, then d1, then d0:
# rounds by decreasing shift), over 8-bit weights. Every partial sum of the
# OAB is a sum of such prefixes times activations (with the passes of a
# globally pooled layer repeated per position, some positions one digit
# ahead of others: still a prefix per weight), and every single pass's
# term (|d2 << 6| <= 128, |d1 << 3| <= 32, |d0| <= 4) is within it too. It
# is 128, the bound of the plain 8-bit weight: the passes add no headroom.
DIGIT_WEIGHT_BOUND = _digit_bound()


# --- activation layout -------------------------------------------------------------------------

def padded_channels(channels):
    """Channels rounded up to a multiple of G."""
    return -(-int(channels) // GROUP_SIZE) * GROUP_SIZE


def pixel_words(channels, slot_bits):
    """Words a pixel of `channels` channels takes in `slot_bits`-bit slots
    (hw/isa.py: a chunk's G channels are `slot_bits` words)."""
    return padded_channels(channels) * slot_bits // ACT_WORD_BITS


def map_words_per_bank(height, width, channels, cols, slot_bits):
    """Words one bank holds of an `height x width x channels` map."""
    return height * (-(-width // cols)) * pixel_words(channels, slot_bits)


def slot_start(channel, slot_bits):
    """`(word, shift)`: channel `channel`'s slot starts at bit `shift` of
    word `word` of its pixel; a 3-bit slot at shift 14 or 15 goes on into
    word + 1 (numpy-friendly)."""
    bit = slot_bits * channel
    return bit // ACT_WORD_BITS, bit % ACT_WORD_BITS


def pack_slots(codes, slot_bits):
    """The pixel words of codes (P, ...) (P channels, a multiple of G, each
    code's low `slot_bits` bits): (P * slot_bits / 16, ...)."""
    codes = np.asarray(codes, dtype=np.int64) & ((1 << slot_bits) - 1)
    words = np.zeros((pixel_words(len(codes), slot_bits), *codes.shape[1:]), dtype=np.int64)
    word_mask = (1 << ACT_WORD_BITS) - 1
    for channel, code in enumerate(codes):
        word, shift = slot_start(channel, slot_bits)
        words[word] |= (code << shift) & word_mask
        if shift + slot_bits > ACT_WORD_BITS:
            words[word + 1] |= code >> (ACT_WORD_BITS - shift)
    return words


def slot_value(low, high, shift, slot_bits):
    """The slot at bit `shift` of word `low`, going on into word `high`
    (numpy-friendly; `high` is read only where the slot straddles)."""
    both = np.asarray(low, dtype=np.int64) | (np.asarray(high, dtype=np.int64) << ACT_WORD_BITS)
    return (both >> shift) & ((1 << slot_bits) - 1)


def even_start(width):
    """Where a parity-split map of `width` columns keeps its even columns:
    after its width div 2 odd ones (a power-of-two shift of the width, no
    adder, in the core)."""
    return width // 2


def column_position(x, width, split=False):
    """The position of column `x` in a map row of `width` columns: `x`, or
    in a parity-split map (the input of a stride-2 layer: odd columns
    first, then even) `x div 2` for an odd column and `even_start(width) +
    x div 2` for an even one (numpy-friendly)."""
    if not split:
        return x
    return x // 2 + (1 - x % 2) * even_start(width)


def act_address(y, x, channel, base, width, channels, cols, slot_bits, split=False):
    """`(bank, word, shift)` of pixel (y, x), channel `channel` of a map of
    `width` columns in `slot_bits`-bit slots, parity-split or not: its slot
    starts at bit `shift` of `word` (`slot_start`; numpy-friendly)."""
    wb = -(-width // cols)
    position = column_position(x, width, split)
    word, shift = slot_start(channel, slot_bits)
    return (position % cols,
            base + (y * wb + position // cols) * pixel_words(channels, slot_bits) + word, shift)
