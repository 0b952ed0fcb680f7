"""Bit-level encodings of docs/isa.md: instructions, chunk descriptors, weight
pointers, parameters, weight bit-planes and the activation layout.

The compiler writes with these functions and the golden model reads with
their inverses, so a field position is written down exactly once in the
software. Each encoder checks that its fields fit and raises ValueError
otherwise (the compiler checks the user-facing limits first and reports them
as UserError; a ValueError here is a compiler bug).
"""

import numpy as np

from hw.config import GROUP_SIZE
from hw.pe.modes import PeMode

# Opcodes (bits 63:60).
OP_HALT = 0
OP_SET = 1
OP_TILE = 2
OP_ROUND = 3

# Layer registers, in index order (docs/isa.md, "Layer registers").
REGISTERS = (
    "IN_BASE", "IN_BASE2", "IN_H", "IN_W", "IN_WORDS", "PAD", "OUT_BASE", "OUT_W",
    "COUT", "OUT_WB", "OUT_WORDS", "POOL", "ACT_BITS", "REQ_SHIFT", "RAW",
    "PARAM_BASE", "RES_BASE",
)
REGISTER_INDEX = {name: index for index, name in enumerate(REGISTERS)}

# Group precision <-> 2-bit pcode of a chunk descriptor.
PCODE_OF_BITS = {0: 0, 2: 1, 3: 2, 4: 3}
BITS_OF_PCODE = (0, 2, 3, 4)

ROUND_SHIFT_MAX = 15       # 4-bit `shift` field
ROUND_WPTR_LIMIT = 1 << 12  # 12-bit `wptr` field
FIELD16_LIMIT = 1 << 16     # y, x0, ktile, chunk_start, chunk_count
CHUNK_KERNEL_LIMIT = 16     # 4-bit ky, kx
CHUNK_BLOCK_LIMIT = 1 << 12  # 12-bit block
# Activation words a chunk reads per pixel: G 4-bit slots in 16-bit words.
ACT_SLOTS_PER_WORD = 4
CHUNK_ACT_WORDS = GROUP_SIZE // ACT_SLOTS_PER_WORD


def _field(value, bits, name):
    value = int(value)
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name}={value} does not fit {bits} bits")
    return value


# --- instructions -----------------------------------------------------------------------------

def encode_halt():
    return OP_HALT << 60


def encode_set(register, value):
    index = REGISTER_INDEX[register] if isinstance(register, str) else int(register)
    return (OP_SET << 60) | (_field(index, 6, "register") << 32) | _field(value, 32, register)


def encode_tile(y, x0, ktile):
    return ((OP_TILE << 60) | _field(y, 16, "y") | (_field(x0, 16, "x0") << 16)
            | (_field(ktile, 16, "ktile") << 32))


def encode_round(chunk_start, chunk_count, wptr, shift, input2=False, first=False, last=False):
    if chunk_count < 1:
        raise ValueError("a ROUND runs at least one chunk")
    return ((OP_ROUND << 60) | _field(chunk_start, 16, "chunk_start")
            | (_field(chunk_count, 16, "chunk_count") << 16) | (_field(wptr, 12, "wptr") << 32)
            | (_field(shift, 4, "shift") << 44) | (int(bool(input2)) << 48)
            | (int(bool(first)) << 49) | (int(bool(last)) << 50))


def decode_instruction(word):
    """`(opcode, fields)`; fields is a dict of the opcode's fields (empty for an
    unknown opcode)."""
    word = int(word)
    opcode = (word >> 60) & 0xF
    if opcode == OP_SET:
        return opcode, {"register": (word >> 32) & 0x3F, "value": word & 0xFFFFFFFF}
    if opcode == OP_TILE:
        return opcode, {"y": word & 0xFFFF, "x0": (word >> 16) & 0xFFFF,
                        "ktile": (word >> 32) & 0xFFFF}
    if opcode == OP_ROUND:
        return opcode, {"chunk_start": word & 0xFFFF, "chunk_count": (word >> 16) & 0xFFFF,
                        "wptr": (word >> 32) & 0xFFF, "shift": (word >> 44) & 0xF,
                        "input2": bool((word >> 48) & 1), "first": bool((word >> 49) & 1),
                        "last": bool((word >> 50) & 1)}
    return opcode, {}


# --- chunk descriptors, weight pointers, parameters -------------------------------------------

def encode_chunk(ky, kx, block, mode, pcodes, folds):
    word = (_field(ky, 4, "ky") | (_field(kx, 4, "kx") << 4) | (_field(block, 12, "block") << 8)
            | (_field(PeMode(mode).value, 2, "mode") << 20))
    for row, (pcode, fold) in enumerate(zip(pcodes, folds)):
        word |= (_field(pcode, 2, "pcode") | (_field(fold, 1, "fold") << 2)) << (22 + 3 * row)
    return word


def decode_chunk(word, rows):
    """`(ky, kx, block, mode, pcodes, folds)` with pcodes, folds lists of `rows`."""
    word = int(word)
    pcodes = [(word >> (22 + 3 * row)) & 0b11 for row in range(rows)]
    folds = [(word >> (24 + 3 * row)) & 1 for row in range(rows)]
    return word & 0xF, (word >> 4) & 0xF, (word >> 8) & 0xFFF, PeMode((word >> 20) & 0b11), \
        pcodes, folds


def encode_wptr(pointers, addr_bits):
    word = 0
    for row, pointer in enumerate(pointers):
        word |= _field(pointer, addr_bits, "weight pointer") << (row * addr_bits)
    return word


def decode_wptr(word, rows, addr_bits):
    mask = (1 << addr_bits) - 1
    return [(int(word) >> (row * addr_bits)) & mask for row in range(rows)]


def encode_param(bias, multiplier):
    bias, multiplier = int(bias), int(multiplier)
    if not -(1 << 31) <= bias < (1 << 31):
        raise ValueError(f"bias {bias} does not fit 32 signed bits")
    if not -(1 << 15) <= multiplier < (1 << 15):
        raise ValueError(f"multiplier {multiplier} does not fit 16 signed bits")
    return (bias & 0xFFFFFFFF) | ((multiplier & 0xFFFF) << 32)


def decode_param(word):
    """`(bias, multiplier)`, both signed."""
    word = int(word)
    bias = word & 0xFFFFFFFF
    multiplier = (word >> 32) & 0xFFFF
    return bias - ((bias >> 31) << 32), multiplier - ((multiplier >> 15) << 16)


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
    return int(max(sum(np.abs(d) << s for d, s in zip(weight_digits(w), DIGIT_SHIFTS))))


# Largest sum of |digit| << digit shift over 8-bit weights: the accumulator
# bound of one 8-bit weight (the passes' partial sums are bounded by it).
DIGIT_WEIGHT_BOUND = _digit_bound()


# --- activation layout -------------------------------------------------------------------------

def padded_channels(channels):
    """Channels rounded up to a multiple of G."""
    return -(-int(channels) // GROUP_SIZE) * GROUP_SIZE


def map_words_per_bank(height, width, channels, cols):
    """Words one bank holds of an `height x width x channels` map."""
    return height * (-(-width // cols)) * padded_channels(channels) // ACT_SLOTS_PER_WORD


def act_address(y, x, channel, base, width, channels, cols):
    """`(bank, word, slot)` of pixel (y, x), channel `channel` (numpy-friendly)."""
    wb = -(-width // cols)
    words = padded_channels(channels) // ACT_SLOTS_PER_WORD
    return (x % cols, base + (y * wb + x // cols) * words + channel // ACT_SLOTS_PER_WORD,
            channel % ACT_SLOTS_PER_WORD)
