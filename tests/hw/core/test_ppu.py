"""The post-processing unit in Amaranth's simulator: requantization rounding
at ties and saturation, negative multipliers, raw outputs and 2x2 pooling
across two tiles, against common/fixedpoint.py; each with the full-width
rounding shift and with the clamped one (`ppu_barrel_shift=False`), and
without the hold registers (`ppu_hold_registers=False`) and in 4-bit slots
(`packed_activations=False`; else each code goes in a slot of its width)."""

import dataclasses
import sys

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from common import fixedpoint
from hw.config import AcceleratorConfig
from hw.isa import PARAMETER, slot_bits
from hw.ppu import PostProcessor
from hw.shortcut import ShortcutBuffer
from hw.timing import shortcut_words_max

CONFIG = AcceleratorConfig("ppu-test", rows=2, cols=4, acc_width=24, param_depth=64,
                           act_depth=256, result_depth=64)
R, C, A = CONFIG.rows, CONFIG.cols, CONFIG.acc_width
BASE_CONFIG = CONFIG


@pytest.fixture(autouse=True, params=[(True, True), (False, True), (False, False)],
                ids=["barrel", "clamped", "clamped-no-hold-4bit"])
def variant(request, monkeypatch):
    barrel, hold = request.param
    monkeypatch.setattr(sys.modules[__name__], "CONFIG",
                        dataclasses.replace(BASE_CONFIG, ppu_barrel_shift=barrel,
                                            ppu_hold_registers=hold, packed_activations=hold))
    return request.param


def slot(bits):
    """The output slot's width (isa.slot_bits; 4-bit slots also take the
    widths outside the ISA's that the unpacked PPU is tried with)."""
    return slot_bits(CONFIG.packed_activations, bits) if 2 <= bits <= 4 else 4


def key(c, k, bits, y=0, out_words=4):
    """Where channel k of column c's pixel in map row y goes: (bank, bit)
    (one pixel per bank and row: out_wb 1, out_base 0)."""
    return c, y * out_words * 16 + slot(bits) * k


class PpuWithShortcuts(Elaboratable):
    """The PPU and the shortcut buffer it reads, as the core wires them."""

    def __init__(self, config):
        self.ppu = PostProcessor(config)
        self.buffer = ShortcutBuffer(config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ppu, m.submodules.buffer = self.ppu, self.buffer
        wiring.connect(m, self.ppu.shortcut, self.buffer.ppu)
        return m


def run_ppu(tiles, params, registers, shortcuts=None, sc_bits=4):
    """`tiles`: [(y, x0, ktile, acc (R, C))]; `params`: {entry: (bias, M) or
    (bias, M, Mr)}; `shortcuts`: per tile, the words of each column
    (C lists of J words, `sc_bits`-bit slots), loaded into the tile's
    buffer before its job. Returns (act writes {(bank, bit): code}, result
    writes): a slot written at bit `bit` of its bank (word * 16 + shift)."""
    top = PpuWithShortcuts(CONFIG)
    ppu = top.ppu
    sim = Simulator(top)
    sim.add_clock(1e-6)
    oab = {}
    act_writes, result_writes = {}, []
    width = slot(registers.get("act_bits", 4))
    col_bits = (C - 1).bit_length()

    async def testbench(ctx):
        ctx.set(ppu.layer, registers)
        ctx.set(top.buffer.slot_bits, sc_bits)
        ctx.set(top.buffer.signed, registers.get("sc_signed", 0))
        for number, (y, x0, ktile, acc) in enumerate(tiles):
            buffer = number % 2
            if shortcuts is not None:
                for j in range(shortcut_words_max(R, CONFIG.packed_activations)):
                    ctx.set(top.buffer.captures.valid, 1)
                    ctx.set(top.buffer.captures.payload, {
                        "buffer": buffer, "index": j,
                        "words": [shortcuts[number][c][j] for c in range(C)]})
                    await ctx.tick()
                ctx.set(top.buffer.captures.valid, 0)
            for r in range(R):
                oab[buffer * R + r] = sum((int(v) & ((1 << A) - 1)) << (A * c)
                                          for c, v in enumerate(acc[r]))
            ctx.set(ppu.job.payload, {"y": y, "x0": x0, "ktile": ktile, "buffer": buffer})
            ctx.set(ppu.job.valid, 1)
            await ctx.tick().until(ppu.job.ready)
            ctx.set(ppu.job.valid, 0)
        await ctx.tick().until(ppu.idle)

    async def memories(ctx):
        # Synchronous read ports: answer the request of the previous cycle.
        async for clk_edge, rst, oab_en, oab_addr, p_en, p_addr in ctx.tick().sample(
                ppu.oab.en, ppu.oab.addr, ppu.params.en, ppu.params.addr):
            if oab_en:
                ctx.set(ppu.oab.data, oab[oab_addr])
            if p_en:
                bias, mult, *rmult = params[p_addr]
                ctx.set(ppu.params.data, PARAMETER.const({
                    "bias": bias, "multiplier": mult,
                    "residual_multiplier": rmult[0] if rmult else 0}).as_bits())

    async def monitor(ctx):
        async for _, _, a_en, a_addr, a_data, r_en, r_addr, r_data in ctx.tick().sample(
                ppu.activations.en, ppu.activations.addr, ppu.activations.data,
                ppu.results.en, ppu.results.addr, ppu.results.data):
            if a_en:
                # One slot of the output's width: a run of enables (4-bit
                # slots: one per slot), the code's low bits under them.
                if not CONFIG.packed_activations:
                    a_en = sum(0xF << (4 * i) for i in range(4) if a_en >> i & 1)
                shift = (a_en & -a_en).bit_length() - 1
                assert a_en == ((1 << width) - 1) << shift
                where = (a_addr & ((1 << col_bits) - 1), (a_addr >> col_bits) * 16 + shift)
                assert where not in act_writes, "a slot written twice"
                act_writes[where] = (a_data >> shift) & ((1 << width) - 1)
            if r_en:
                result_writes.append((r_addr, r_data - ((r_data >> 31) << 32)))

    sim.add_testbench(testbench)
    sim.add_process(memories)
    sim.add_process(monitor)
    sim.run_until(1e-6 * 2000)
    return act_writes, result_writes


def registers(**overrides):
    values = dict(out_base=0, out_w=C, cout=R, out_wb=1, out_words=4, pool=0, act_bits=4,
                  req_shift=0, raw=0, param_base=0, res_base=0)
    values.update(overrides)
    return values


def expected_code(acc, bias, mult, shift, bits):
    return int(fixedpoint.requantize(acc, bias, mult, shift, bits))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_requantization_ties_and_saturation(bits):
    shift = 3
    # (acc + bias) * mult lands on exact halves (ties round up), on both sides
    # of zero, and far beyond the range (saturation at 0 and 2^a - 1).
    acc = np.array([[4, 12, -4, 20], [1000, -1000, 5, 0]])
    params = {0: (0, 1), 1: (-1, 3)}
    got, _ = run_ppu([(0, 0, 0, acc)], params, registers(req_shift=shift, act_bits=bits))
    for r in range(R):
        bias, mult = params[r]
        for c in range(C):
            assert got[key(c, r, bits)] == expected_code(int(acc[r, c]), bias, mult, shift, bits), (r, c)
    # The ties really are ties: 4 * 1 / 8 = 0.5 -> 1, 12 / 8 = 1.5 -> 2, -4 / 8 -> 0.
    assert [got[key(c, 0, bits)] for c in range(3)] == [1, 2, 0]


def test_negative_multiplier_and_large_shift():
    acc = np.array([[-300, 300, -7, 7], [2**22, -(2**22), 1, -1]])
    params = {0: (5, -1000), 1: (0, 32767)}
    shift = 20
    got, _ = run_ppu([(0, 0, 0, acc)], params, registers(req_shift=shift))
    for r in range(R):
        for c in range(C):
            assert got[key(c, r, 4)] == expected_code(int(acc[r, c]), *params[r], shift, 4)


def test_raw_outputs_are_acc_plus_bias():
    acc = np.array([[-5, 6, 2**23 - 1, -(2**23)], [0, 1, 2, 3]])
    params = {0: (-7, 0), 1: (2**31 - 1, 0)}
    _, results = run_ppu([(0, 0, 0, acc)], params, registers(raw=1, out_w=C, cout=R))
    got = dict(results)
    for r in range(R):
        for c in range(C):
            value = int(acc[r, c]) + params[r][0]
            value = (value + 2**31) % 2**32 - 2**31
            assert got[c * R + r] == value


def test_pooling_takes_the_max_of_each_2x2_window_across_two_tiles():
    rng = np.random.default_rng(0)
    top = rng.integers(-20, 40, size=(R, C))
    bottom = rng.integers(-20, 40, size=(R, C))
    params = {0: (0, 1), 1: (3, 1)}
    got, _ = run_ppu([(0, 0, 0, top), (1, 0, 0, bottom)], params,
                     registers(pool=1, out_w=C, out_wb=1, out_words=4, act_bits=4))
    assert len(got) == R * C // 2      # only the odd row writes, once per window
    for r in range(R):
        codes = np.array([[expected_code(int(v), *params[r], 0, 4) for v in row]
                          for row in (top[r], bottom[r])])
        for x_out in range(C // 2):
            assert got[key(x_out, r, 4)] == codes[:, 2 * x_out:2 * x_out + 2].max()


@pytest.mark.parametrize("seed", range(6))
def test_requantization_over_every_shift_and_width(seed):
    """Random accumulators, biases and multipliers from the extremes of their
    ranges; shifts over the whole register (0 .. 63, beyond the ISA's 47)
    and activation widths 0 .. 7 (2 .. 4, the ISA's, in slots of their
    width): the written code is clamp(((acc + bias) * mult + round) >> shift,
    0, 2^a - 1), low 4 bits."""
    rng = np.random.default_rng(seed)
    for _ in range(4):
        shift = int(rng.choice([0, 1, int(rng.integers(2, 48)), 47, 48, 49, 50,
                                int(rng.integers(50, 64)), 63]))
        bits = int(rng.integers(2, 5) if CONFIG.packed_activations else rng.integers(0, 8))
        limit = 1 << (A - 1)
        acc = rng.choice([-limit, limit - 1, 0, -1, 1], size=(R, C))
        acc = np.where(rng.random((R, C)) < 0.5, rng.integers(-limit, limit, size=(R, C)), acc)
        params = {r: (int(rng.choice([-2**31, 2**31 - 1, int(rng.integers(-2**31, 2**31))])),
                      int(rng.choice([-2**15, 2**15 - 1, int(rng.integers(-2**15, 2**15))])))
                  for r in range(R)}
        got, _ = run_ppu([(0, 0, 0, acc)], params,
                          registers(req_shift=shift, act_bits=bits))
        for r in range(R):
            bias, mult = params[r]
            for c in range(C):
                scaled = ((int(acc[r, c]) + bias) * mult + ((1 << shift) >> 1)) >> shift
                expected = min(max(scaled, 0), (1 << bits) - 1) & 15
                assert got[key(c, r, bits)] == expected, (shift, bits, r, c)


@pytest.mark.parametrize("sc_signed, out_signed, sc_bits",
                         [(0, 0, 4), (1, 0, 3), (0, 1, 2), (1, 1, 3)])
def test_residual_tiles_add_their_shortcut_codes(sc_signed, out_signed, sc_bits):
    """Three tiles (buffers 0, 1, 0; channel tiles 0, 1, 1) of a residual
    layer: each element adds (code * Mr) << Sr of its own channel and column
    from its tile's buffer (requantize_sum; the code from its slot of the
    shortcut's width, which may straddle two words, sign-extended when
    signed), the clamp signed or unsigned, a signed code written as its
    low bits."""
    rng = np.random.default_rng(10 + 2 * sc_signed + out_signed)
    words = shortcut_words_max(R, CONFIG.packed_activations)
    tiles, shortcuts = [], []
    for number, ktile in enumerate((0, 1, 1)):
        tiles.append((number, 0, ktile, rng.integers(-3000, 3000, size=(R, C))))
        shortcuts.append([[int(w) for w in rng.integers(0, 1 << 16, size=words)] for _ in range(C)])
    params = {k: (int(rng.integers(-500, 500)), int(rng.integers(-2**15, 2**15)),
                  int(rng.integers(-2**15, 2**15))) for k in range(2 * R)}
    shift, sc_shift, bits = 16, 2, 3
    got, _ = run_ppu(tiles, params, registers(req_shift=shift, act_bits=bits, cout=2 * R,
                                              out_wb=1, out_words=4, sc_enable=1,
                                              sc_shift=sc_shift, sc_signed=sc_signed,
                                              out_signed=out_signed), shortcuts, sc_bits)
    assert len(got) == 3 * R * C
    width = slot(sc_bits)
    for number, (y, _, ktile, acc) in enumerate(tiles):
        for r in range(R):
            k = ktile * R + r
            bias, mult, rmult = params[k]
            e = (width * ktile * R) % 16 + width * r
            for c in range(C):
                pixel = sum(word << (16 * j) for j, word in enumerate(shortcuts[number][c]))
                code = (pixel >> e) & ((1 << width) - 1)
                residual = code - (1 << width) if sc_signed and code >> (width - 1) else code
                expected = fixedpoint.requantize_sum(int(acc[r, c]), bias, mult, shift, bits,
                                                     residual=residual, residual_multiplier=rmult,
                                                     residual_shift=sc_shift, signed=bool(out_signed))
                assert got[key(c, k, bits, y)] == expected & ((1 << slot(bits)) - 1), (number, r, c)
