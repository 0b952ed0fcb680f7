"""Small layers whose images, program and counters are worked out by hand
from docs/isa.md. Cycle counts are written in terms of the hw/timing.py
constants (FETCH_CYCLES, PREFETCH_CYCLES, PIPE_CYCLES, PPU_CYCLES,
HALT_CYCLES), never as numbers, so they follow a change of a constant but
not of a rule."""

import numpy as np

from hw import timing
from hw.config import CONFIGS
from hw.isa import Memory, Opcode, Register
from hw.pe.modes import PeMode
from sw.compile import LayerSpec, compile_layer, reference_layer, run_golden
from sw.compile import encoding as enc
from sw.compile.layer import LayerInput


def one_by_one(cout, width, weight_bits=2, act_bits=2, cin=16, name="hand"):
    rng = np.random.default_rng(cout * 100 + width)
    low, high = -(1 << (weight_bits - 1)), 1 << (weight_bits - 1)
    weights = rng.integers(low, high, size=(cout, cin, 1, 1))
    groups = (cout, 1, 1, -(-cin // 16))
    return LayerSpec(kind="conv", weights=weights, precision=np.full(groups, weight_bits),
                     shift=np.zeros(groups, np.int64), bias=rng.integers(-20, 20, cout),
                     multiplier=np.full(cout, 1 << 13), requant_shift=14, act_bits_in=act_bits,
                     act_bits_out=2, input_shape=(cin, 1, width), name=name)


F, P, PIPE, PPU, HANDOFF = (timing.FETCH_CYCLES, timing.PREFETCH_CYCLES, timing.PIPE_CYCLES,
                            timing.PPU_CYCLES, timing.HANDOFF_CYCLES)
HALT = timing.HALT_CYCLES
SETS = len(Register)     # a layer's program starts with a SET of every register


def round_cycles(rows, cols, steps):
    """From a ROUND's start to the first cycle after its drain: the
    prefetch, the steps, the last one's way to PE (R-1, C-1), the hand-off
    and R drain cycles."""
    return P + steps + rows + cols - 1 + PIPE + HANDOFF + rows


def test_single_chunk_layer():
    """1x1 conv, 16 -> 4 channels, a 1x4 map, 2-bit weights and activations on
    the 4x4 `small` array: one tile, one ROUND of one W2A2 chunk."""
    config = CONFIGS["small"]
    spec = one_by_one(cout=4, width=4)
    compiled = compile_layer(spec, config)
    # Program: a SET per register, TILE, ROUND, HALT.
    assert len(compiled.program) == SETS + 3
    assert enc.decode_instruction(compiled.program[SETS]) == (Opcode.TILE, {"y": 0, "x0": 0,
                                                                           "ktile": 0})
    assert enc.decode_instruction(compiled.program[SETS + 1]) == (Opcode.ROUND, {
        "chunk_start": 0, "chunk_count": 1, "wptr": 0, "shift": 0, "input2": False,
        "first": True, "last": True})
    assert compiled.program[SETS + 2] == 0
    # One chunk: ky = kx = block = 0, W2A2, every row pcode 1 (2-bit), fold 0.
    assert compiled.images[Memory.CHUNKS][0] == {0: (PeMode.W2A2.value << 20)
                                                 | sum(1 << (22 + 3 * r) for r in range(4))}
    # Row r's two planes at addresses 0, 1 of bank r; the pointer entry is all zero.
    assert compiled.images[Memory.WPTR][0] == {0: 0}
    for r in range(4):
        q = spec.weights[r, :, 0, 0]
        plane0 = sum(((int(v) >> 0) & 1) << i for i, v in enumerate(q))
        plane1 = sum(((int(v) >> 1) & 1) << i for i, v in enumerate(q))
        assert compiled.images[Memory.WEIGHTS][r] == {0: plane0, 1: plane1}
    x = np.random.default_rng(0).integers(0, 4, size=(16, 1, 4))
    run = run_golden(compiled, x)
    assert np.array_equal(run.output, reference_layer(spec, x))
    # SETS + 2 instructions' fetches, then the ROUND's prefetch, 4 steps, the
    # R + C - 1 + PIPE cycles to cross the array, the hand-off and 4 drain
    # cycles. The PPU accepts the tile in the next cycle, counts 16 elements
    # and is idle PPU cycles after the last; HALT (fetched the cycle after
    # the ROUND started) waits for it, and the cycle done rises in counts too.
    start = (SETS + 2) * F
    drain_end = start + round_cycles(4, 4, 4)
    cycles = max(start + 1 + F + HALT, drain_end + 16 + PPU + 1)
    assert run.counters == {
        "cycles": cycles, "busy_cycles": 4, "stall_cycles": 0,
        "macs_w4a4": 0, "macs_w4a2": 0, "macs_w2a4": 0, "macs_w2a2": 4 * 4 * 4 * 4,
        "weight_reads": 4 * 2, "act_reads": 4 * 2, "act_writes": 16, "result_writes": 0,
        "chunk_reads": 1, "wptr_reads": 1, "param_reads": 4, "program_reads": SETS + 3,
        "oab_reads": 4, "oab_writes": 4, "shortcut_reads": 0}


def test_ragged_rows_and_columns():
    """3 output channels on 4 rows, a 1x3 map on 4 columns: row 3 has pcode 0
    and no weights; column 3 reads nothing; 9 slots and 3 params. The A2
    input map's chunk is 2 words (2-bit slots) in each of 3 banks."""
    config = CONFIGS["small"]
    spec = one_by_one(cout=3, width=3)
    compiled = compile_layer(spec, config)
    _, _, _, _, pcodes, _ = enc.decode_chunk(compiled.images[Memory.CHUNKS][0][0], 4)
    assert pcodes == [1, 1, 1, 0]
    assert compiled.images[Memory.WEIGHTS][3] == {}
    counters = compiled.expected_counters
    assert counters["weight_reads"] == 6
    assert counters["act_reads"] == 3 * 2
    assert counters["act_writes"] == 9
    assert counters["param_reads"] == 3
    start = (SETS + 2) * F
    drain_end = start + round_cycles(4, 4, 4)
    assert counters["cycles"] == max(start + 1 + F + HALT, drain_end + 16 + PPU + 1)


def test_stall_on_the_default_array():
    """1x1 conv, 16 -> 8 channels, a 1x24 map on the 8x8 array: three tiles of
    one W2A2 chunk. A ROUND is much shorter than a 64-element PPU job, so
    tile 2 waits for the PPU job of tile 0 (the other user of its OAB buffer).
    A ROUND starts once the engine is done (the cycle after the last step);
    its TILE and ROUND are fetched meanwhile.
    The PPU accepts a job in the cycle after the drain, or in the cycle of
    the previous job's last element, and is done with it PPU cycles after
    its own last element."""
    config = CONFIGS["default"]
    spec = one_by_one(cout=8, width=24)
    compiled = compile_layer(spec, config)
    length = round_cycles(8, 8, 4)
    free = P + 4                             # start to the engine's done (the next may start)
    start0 = (SETS + 2) * F
    last0 = start0 + length + 64             # tile 0's last PPU element
    start1 = max(start0 + 1 + 2 * F, start0 + free)
    last1 = max(start1 + length, last0) + 64
    ready2 = start1 + 1 + 2 * F              # ROUND 2 decoded
    stall = max(0, last0 + PPU - ready2)     # until tile 0's PPU job is done
    start2 = max(ready2 + stall, start1 + free)
    last2 = max(start2 + length, last1) + 64
    ppu2 = last2 + PPU + 1                   # idle, and done rises, in that cycle
    counters = compiled.expected_counters
    assert stall > 0
    assert counters["stall_cycles"] == stall
    assert counters["cycles"] == max(start2 + 1 + F + HALT, ppu2)
    assert counters["busy_cycles"] == 12
    assert counters["program_reads"] == SETS + 3 * 2 + 1
    assert counters["macs_w2a2"] == 3 * 4 * 64 * 4
    assert counters["weight_reads"] == 3 * 8 * 2
    assert counters["act_reads"] == 3 * 8 * 2       # A2: 2-bit slots, 2 words a chunk
    assert counters["act_writes"] == 3 * 64
    assert (counters["oab_reads"], counters["oab_writes"], counters["param_reads"]) == (24, 24, 24)
    x = np.random.default_rng(1).integers(0, 4, size=(16, 1, 24))
    run = run_golden(compiled, x)
    assert np.array_equal(run.output, reference_layer(spec, x))
    assert run.counters == counters


def test_mpq_modes_folds_and_round_shifts():
    """Two positions' worth of groups on 4 rows: a chunk mixing (p=2, e=1)
    and (p=3, e=0) runs W4 at shift 0 with fold 1 on the coarse rows; a chunk
    of only (p=2, e=1) runs W2 at shift 1, in a second round."""
    config = CONFIGS["small"]
    precision = np.array([[2, 2], [3, 2], [2, 2], [3, 2]])    # (Cout=4, blocks=2)
    shift = np.array([[1, 1], [0, 1], [1, 1], [0, 1]])
    rng = np.random.default_rng(2)
    q = rng.integers(-(1 << (precision - 1)), 1 << (precision - 1))
    weights = np.repeat(q << shift, 16, axis=1)
    spec = LayerSpec(kind="linear", weights=weights, precision=precision, shift=shift,
                     bias=np.zeros(4, np.int64), multiplier=None, requant_shift=None,
                     act_bits_in=4, act_bits_out=None, input_shape=(32,), raw=True, name="mpq")
    compiled = compile_layer(spec, config)
    (high, low), = compiled.round_groups
    assert (high.shift, low.shift) == (1, 0)
    assert [c.mode for c in high.chunks] == [PeMode.W2A4]
    assert [c.mode for c in low.chunks] == [PeMode.W4A4]
    assert low.chunks[0].pcodes == [1, 2, 1, 2] and low.chunks[0].folds == [1, 0, 1, 0]
    assert high.chunks[0].block == 1 and low.chunks[0].block == 0
    # Weights: block 1's 2-bit groups (2 words) first, then block 0's.
    assert compiled.manifest["regions"]["weights"]["entries_per_bank"] == [4, 5, 4, 5]
    x = rng.integers(0, 16, size=(32, 1, 1))
    run = run_golden(compiled, x)
    assert np.array_equal(run.output, reference_layer(spec, x))
    assert compiled.manifest["precision_histogram"] == {"p2e1": 6, "p3e0": 2}


def test_eight_bit_weights_and_input():
    """An 8-bit layer on an 8-bit input: digit passes at shifts 6, 3, 0, each
    run on the high nibbles (+4, input2 = 0) then the low ones (+0, input2)."""
    config = CONFIGS["small"]
    rng = np.random.default_rng(3)
    weights = rng.integers(-128, 128, size=(2, 3, 3, 3))
    spec = LayerSpec(kind="conv", weights=weights, precision=np.full((2, 3, 3, 1), 8),
                     shift=np.zeros((2, 3, 3, 1), np.int64), bias=np.array([5, -7]),
                     multiplier=None, requant_shift=None, act_bits_in=8, act_bits_out=None,
                     input_shape=(3, 4, 4), padding=1, raw=True, name="first")
    compiled = compile_layer(spec, config)
    rounds = [enc.decode_instruction(word)[1] for word in compiled.program
              if enc.decode_instruction(word)[0] == Opcode.ROUND][:6]
    assert [(r["shift"], r["input2"]) for r in rounds] == [(10, False), (7, False), (4, False),
                                                            (6, True), (3, True), (0, True)]
    assert [r["first"] for r in rounds] == [True] + [False] * 5
    assert [r["last"] for r in rounds] == [False] * 5 + [True]
    x = rng.integers(0, 256, size=(3, 4, 4))
    run = run_golden(compiled, x)
    assert np.array_equal(run.output, reference_layer(spec, x))


def test_pooled_rows_come_in_pairs_and_skip_the_odd_edge():
    config = CONFIGS["small"]
    rng = np.random.default_rng(4)
    weights = rng.integers(-2, 2, size=(4, 16, 1, 1))
    spec = LayerSpec(kind="conv", weights=weights, precision=np.full((4, 1, 1, 1), 2),
                     shift=np.zeros((4, 1, 1, 1), np.int64), bias=np.zeros(4, np.int64),
                     multiplier=np.full(4, 1 << 14), requant_shift=14, act_bits_in=2,
                     act_bits_out=2, input_shape=(16, 5, 7), pool=True, name="pool")
    compiled = compile_layer(spec, config)
    # Conv output 5x7 -> pooled 2x3: rows 0..3 only, columns 0..5 in tiles x0 = 0, 4.
    assert compiled.tiles == [(0, 0, 0), (1, 0, 0), (0, 4, 0), (1, 4, 0),
                              (2, 0, 0), (3, 0, 0), (2, 4, 0), (3, 4, 0)]
    assert compiled.registers["OUT_W"] == 6 and compiled.registers["OUT_WB"] == 1
    assert compiled.expected_counters["act_writes"] == 4 * 2 * 3
    x = rng.integers(0, 4, size=(16, 5, 7))
    run = run_golden(compiled, x)
    assert np.array_equal(run.output, reference_layer(spec, x))


def test_residual_shortcut_reads_add_no_cycles():
    """The single-chunk layer with a residual shortcut: the same program
    length and cycles (the shortcut is read while the tile drains), 4 banks
    x 1 word of shortcut reads (channels 0..3 are word 0), the residual rule
    of docs/model_format.md by hand on a few outputs, signed shortcut and
    signed output."""
    config = CONFIGS["small"]
    plain = one_by_one(cout=4, width=4)
    cout = 4
    spec = LayerSpec(kind="conv", weights=plain.weights, precision=plain.precision,
                     shift=plain.shift, bias=plain.bias, multiplier=plain.multiplier,
                     requant_shift=14, act_bits_in=2, act_bits_out=3, input_shape=(16, 1, 4),
                     residual_multiplier=np.array([1 << 13, -(1 << 13), 3 << 12, 0]),
                     residual_shift=1, shortcut_bits=4, shortcut_signed=True, act_signed=True,
                     name="hand_residual")
    compiled = compile_layer(spec, config)
    assert compiled.registers["SC_ENABLE"] == 1 and compiled.registers["SC_SIGNED"] == 1
    assert compiled.registers["SC_SHIFT"] == 1 and compiled.registers["OUT_SIGNED"] == 1
    assert compiled.registers["SC_BASE"] == compiled.registers["OUT_BASE"] + 3   # after the output (3-bit slots)
    counters = compiled.expected_counters
    plain_counters = compile_layer(plain, config).expected_counters
    assert counters["shortcut_reads"] == 4 * 1
    assert {k: v for k, v in counters.items() if k != "shortcut_reads"} == \
        {k: v for k, v in plain_counters.items() if k != "shortcut_reads"}
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(16, 1, 4))
    shortcut = rng.integers(-8, 8, size=(cout, 1, 4))
    run = run_golden(compiled, LayerInput(x, shortcut))
    acc = np.einsum("oc,chw->ohw", spec.weights[:, :, 0, 0], x)
    for k in range(cout):
        for col in range(4):
            total = ((int(acc[k, 0, col]) + int(spec.bias[k])) * (1 << 13)
                     + ((int(shortcut[k, 0, col]) * int(spec.residual_multiplier[k])) << 1))
            expected = min(max((total + (1 << 13)) >> 14, -4), 3)
            assert run.output[k, 0, col] == expected
    assert np.array_equal(run.output, reference_layer(spec, LayerInput(x, shortcut)))
