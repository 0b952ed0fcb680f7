"""Encodings at the bit positions docs/isa.md gives, bit-plane packing, the
host word stream and $readmemh text, determinism, and golden-model details."""

import json

import numpy as np
import pytest

from hw.config import CONFIGS
from hw.counters import COUNTERS
from hw.isa import Memory, Opcode, Register
from hw.pe.modes import PeMode
from sw.compile import (
    compile_layer,
    execute,
    host_word_stream,
    random_input,
    random_layer_spec,
    readmemh_text,
    reference_layer,
    run_golden,
)
from sw.compile import encoding as enc


def test_instruction_fields_at_documented_bits():
    assert enc.encode_set("REQ_SHIFT", 0xDEADBEEF) == (1 << 60) | (13 << 32) | 0xDEADBEEF
    assert enc.encode_tile(3, 16, 2) == (2 << 60) | 3 | (16 << 16) | (2 << 32)
    word = enc.encode_round(5, 7, 9, 11, input2=True, first=True, last=False)
    assert word == (3 << 60) | 5 | (7 << 16) | (9 << 32) | (11 << 44) | (1 << 48) | (1 << 49)
    assert enc.decode_instruction(word) == (Opcode.ROUND, {"chunk_start": 5, "chunk_count": 7, "wptr": 9,
                                                "shift": 11, "input2": True, "first": True,
                                                "last": False})
    assert enc.encode_halt() == 0
    assert Register.RES_BASE == 16
    with pytest.raises(ValueError):
        enc.encode_round(0, 1, 0, 16)


def test_chunk_descriptor_bits():
    word = enc.encode_chunk(2, 3, 0x123, PeMode.W4A2, [3, 0, 1], [0, 1, 1])
    assert word == (2 | (3 << 4) | (0x123 << 8) | (0b10 << 20) | (3 << 22) | (0b100 << 25)
                    | (0b101 << 28))
    assert enc.decode_chunk(word, 3) == (2, 3, 0x123, PeMode.W4A2, [3, 0, 1], [0, 1, 1])


def test_wptr_and_params():
    assert enc.encode_wptr([1, 2, 3], 12) == 1 | (2 << 12) | (3 << 24)
    assert enc.decode_wptr(1 | (2 << 12) | (3 << 24), 3, 12) == [1, 2, 3]
    word = enc.encode_param(-5, -2)
    assert word == (0xFFFFFFFB | (0xFFFE << 32))
    assert enc.decode_param(word) == (-5, -2, 0)
    word = enc.encode_param(-5, -2, -3)
    assert word == (0xFFFFFFFB | (0xFFFE << 32) | (0xFFFD << 48))
    assert enc.decode_param(word) == (-5, -2, -3)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_bit_plane_round_trip(bits):
    rng = np.random.default_rng(bits)
    for _ in range(200):
        q = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=16)
        planes = enc.pack_planes(q, bits)
        assert len(planes) == bits and all(0 <= p < 1 << 16 for p in planes)
        assert np.array_equal(enc.unpack_planes(planes, bits), q)


def test_bit_plane_example():
    # q_0 = -2 (10), q_1 = 1 (01), the rest 0: plane 0 has bit 1, plane 1 (sign) bit 0.
    assert enc.pack_planes([-2, 1] + [0] * 14, 2) == [0b10, 0b01]
    assert enc.pack_planes([-1] * 16, 3) == [0xFFFF] * 3
    with pytest.raises(ValueError):
        enc.pack_planes([2], 2)


def test_weight_digits():
    w = np.arange(-128, 128)
    d2, d1, d0 = enc.weight_digits(w)
    assert np.array_equal(d2 * 64 + d1 * 8 + d0, w)
    for d in (d2, d1, d0):
        assert d.min() >= -4 and d.max() <= 3
    # Every prefix of the passes (d2, d2 + d1, w) and every single pass
    # stays within |w| <= 128.
    assert enc.DIGIT_WEIGHT_BOUND == 128
    for prefix in (d2 * 64, d2 * 64 + d1 * 8, d1 * 8, d0):
        assert np.abs(prefix).max() <= enc.DIGIT_WEIGHT_BOUND
    assert enc.DIGIT_SHIFTS == tuple(sorted(enc.DIGIT_SHIFTS, reverse=True))


def test_activation_layout():
    # W = 10 on C = 4: WB = 3; 20 channels -> Cp 32, 8 words per pixel in
    # 4-bit slots (channel 13: word 3, bit 4), 6 in 3-bit slots (channel
    # 13: bit 39, word 2, bit 7), 4 in 2-bit slots (bit 26: word 1, bit 10).
    assert enc.act_address(1, 6, 13, 100, 10, 20, 4, 4) == (2, 100 + (1 * 3 + 1) * 8 + 3, 4)
    assert enc.act_address(1, 6, 13, 100, 10, 20, 4, 3) == (2, 100 + (1 * 3 + 1) * 6 + 2, 7)
    assert enc.act_address(1, 6, 13, 100, 10, 20, 4, 2) == (2, 100 + (1 * 3 + 1) * 4 + 1, 10)
    assert enc.map_words_per_bank(2, 10, 20, 4, 4) == 2 * 3 * 8
    assert enc.map_words_per_bank(2, 10, 20, 4, 3) == 2 * 3 * 6


@pytest.mark.parametrize("slot_bits", [2, 3, 4])
def test_slots_pack_and_read_back(slot_bits):
    """Every code comes back from its slot, a 3-bit slot that straddles two
    words (channels 5, 10, 21, ...) included; a chunk's G slots fill
    exactly `slot_bits` words, so no slot leaves its chunk."""
    rng = np.random.default_rng(slot_bits)
    codes = rng.integers(0, 1 << slot_bits, size=(32, 3))
    words = enc.pack_slots(codes, slot_bits)
    assert words.shape == (2 * slot_bits, 3) and words.max() < 1 << 16
    padded = np.concatenate([words, np.zeros_like(words[:1])])
    for channel in range(32):
        word, shift = enc.slot_start(channel, slot_bits)
        assert word // slot_bits == channel // 16
        assert np.array_equal(enc.slot_value(padded[word], padded[word + 1], shift, slot_bits),
                              codes[channel])
    straddling = [c for c in range(32) if enc.slot_start(c, slot_bits)[1] + slot_bits > 16]
    assert straddling == ([5, 10, 21, 26] if slot_bits == 3 else [])
    # Signed codes go in as their low bits.
    assert np.array_equal(enc.pack_slots(np.full((16, 1), -1), slot_bits)[:, 0],
                          [0xFFFF] * slot_bits)


@pytest.mark.parametrize("width", [1, 2, 7, 8, 9])
def test_parity_split_layout(width):
    """A stride-2 reader's map: odd columns first, then even, each column at
    one position; a stride-2 tile's columns 2(x0 + c) + d at C consecutive
    positions (one per bank) for every d, inside the map."""
    positions = [enc.column_position(x, width, split=True) for x in range(width)]
    assert sorted(positions) == list(range(width))
    assert positions[1::2] == list(range(width // 2))
    assert positions[0::2] == list(range(width // 2, width))
    assert [enc.column_position(x, width) for x in range(width)] == list(range(width))
    cols = 4
    for d in range(-1, 3):
        for x0 in range(0, width, cols):
            inside = [p for p in (2 * (x0 + c) + d for c in range(cols)) if 0 <= p < width]
            where = [enc.column_position(p, width, split=True) for p in inside]
            assert where == list(range(where[0], where[0] + len(where))) if where else True
    # W = 10 on C = 4, split: column 6 at 5 + 3 = 8, bank 0, word row 2.
    assert enc.act_address(1, 6, 13, 100, 10, 20, 4, 4, split=True) == (0, 100 + (1 * 3 + 2) * 8 + 3, 4)


def test_host_word_stream_and_readmemh():
    config = CONFIGS["small"]   # chunk entries are 22 + 12 = 34 bits: two words each
    images = {Memory.CHUNKS: [{0: (1 << 33) | 5, 1: 7, 5: 9}],
              Memory.WEIGHTS: [{} for _ in range(4)]}
    images[Memory.WEIGHTS][2] = {3: 0xBEEF}
    assert host_word_stream(images, config) == [
        (Memory.CHUNKS, 0, 0, [5, 2, 7, 0]), (Memory.CHUNKS, 0, 5, [9, 0]),
        (Memory.WEIGHTS, 2, 3, [0xBEEF])]
    assert readmemh_text(images[Memory.CHUNKS][0], 34) == "@0\n200000005\n000000007\n@5\n000000009\n"


def test_program_words_and_manifest_are_plain():
    rng = np.random.default_rng(7)
    spec = random_layer_spec(rng, kind="conv", raw=False)
    compiled = compile_layer(spec, CONFIGS["small"])
    json.dumps(compiled.manifest)
    assert set(compiled.expected_counters) == set(COUNTERS)
    assert all(isinstance(word, int) and 0 <= word < 1 << 64 for word in compiled.program)
    assert compiled.images[Memory.PROGRAM][0] == dict(enumerate(compiled.program))


def test_determinism():
    specs = [random_layer_spec(np.random.default_rng(11), name="same") for _ in range(2)]
    a, b = (compile_layer(spec, CONFIGS["default"]) for spec in specs)
    assert a.program == b.program and a.images == b.images and a.manifest == b.manifest
    x = random_input(np.random.default_rng(12), specs[0])
    ra, rb = run_golden(a, x), run_golden(b, x)
    assert np.array_equal(ra.output, rb.output) and ra.counters == rb.counters
    for memory in (Memory.WEIGHTS, Memory.ACTIVATIONS, Memory.RESULTS):
        assert np.array_equal(ra.memories[memory], rb.memories[memory])
    assert host_word_stream(a.memories(x), a.config) == host_word_stream(b.memories(x),
                                                                         b.config)


def test_golden_reads_the_weight_memory():
    """Flip one weight plane bit: the golden output changes (no shortcut)."""
    rng = np.random.default_rng(13)
    spec = random_layer_spec(rng, kind="linear", raw=True, in_channels=16, out_channels=4,
                             style="uniform4", act_bits_in=4)
    compiled = compile_layer(spec, CONFIGS["small"])
    x = np.full(spec.input_shape, 15)
    images = compiled.memories(x)
    images[Memory.WEIGHTS][0][0] ^= 1          # row 0, plane 0, weight 0: changes by +-1
    execution = execute(compiled.config, images)
    output = compiled.decode_output(execution.memories)
    expected = reference_layer(spec, x)
    assert abs(int(output[0, 0, 0] - expected[0, 0, 0])) == 15
    assert np.array_equal(output[1:], expected[1:])


def test_golden_stops_on_unknown_opcode():
    config = CONFIGS["small"]
    images = {Memory.PROGRAM: [{0: enc.encode_set("PAD", 1), 1: 7 << 60}]}   # opcode 7
    execution = execute(config, images)
    assert execution.error and execution.error_pc == 1
    assert execution.counters["program_reads"] == 2


def test_a_cases_file_from_before_packed_slots_still_reads():
    """An FPGA cases output written before packed slots names no slot
    width: its map is in 4-bit slots, and decodes as such."""
    from hw.config import get_config
    from sw.fpga.cases import decode_output, readback_ranges
    config = get_config("small")
    codes = np.arange(2 * 3 * 5).reshape(5, 2, 3) % 16          # (channels, height, width)
    banks = [dict() for _ in range(config.cols)]
    for k in range(5):
        for y in range(2):
            for x in range(3):
                bank, word, shift = enc.act_address(y, x, k, 7, 3, 5, config.cols, 4)
                banks[bank][word] = banks[bank].get(word, 0) | int(codes[k, y, x]) << shift
    old = {"memory": "activations", "base": 7, "shape": [5, 2, 3]}
    ranges = readback_ranges(old, config)
    entries = [[banks[bank].get(start + i, 0) for i in range(count)] for _, bank, start, count in ranges]
    assert np.array_equal(decode_output(old, config, entries), codes)
