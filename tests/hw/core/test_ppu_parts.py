"""The PPU's three components in Amaranth's simulator, each at its own
boundary: `TileReader` (jobs in, elements with their accumulator and
parameters out, OAB and parameter reads), `Requantizer` (operands in, codes
out LATENCY cycles later, against common/fixedpoint.py's rule) and
`PoolWriter` (codes in, activation slots and results out). The whole PPU is
tests/hw/core/test_ppu.py."""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from common import fixedpoint
from hw.config import AcceleratorConfig
from hw.isa import PARAMETER
from hw.ppu import PoolWriter, Requantizer, TileReader

CONFIG = AcceleratorConfig("ppu-parts", rows=2, cols=4, acc_width=24, param_depth=64,
                           act_depth=256, result_depth=64)
R, C, A = CONFIG.rows, CONFIG.cols, CONFIG.acc_width


def simulate(dut, testbenches=(), processes=(), cycles=400):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)
    sim.run_until(1e-6 * cycles)


@pytest.mark.parametrize("hold", [True, False], ids=["hold", "no-hold"])
def test_tile_reader_counts_reads_and_offers_every_element(hold):
    config = dataclasses.replace(CONFIG, ppu_hold_registers=hold)
    dut = TileReader(config)
    rng = random.Random(1)
    oab = {i: rng.getrandbits(C * A) for i in range(2 * R)}
    params = {i: (rng.randrange(-2**31, 2**31), rng.randrange(-2**15, 2**15)) for i in range(64)}
    jobs = [{"y": 3, "x0": 8, "ktile": 0, "buffer": 1}, {"y": 4, "x0": 12, "ktile": 1, "buffer": 0}]
    cout, param_base = 3, 5
    elements, reads, accepted = [], [], []

    async def producer(ctx):
        ctx.set(dut.cout, cout)
        ctx.set(dut.param_base, param_base)
        for job in jobs:
            ctx.set(dut.job.payload, job)
            ctx.set(dut.job.valid, 1)
            await ctx.tick().until(dut.job.ready)
            accepted.append(len(elements))
            ctx.set(dut.job.valid, 0)

    async def memories(ctx):
        # Synchronous reads. With hold registers the ports' data may change
        # between reads (the reader must keep the row); without, it holds, as
        # the memories' data does.
        async for _, _, oab_en, oab_addr, p_en, p_addr in ctx.tick().sample(
                dut.oab.en, dut.oab.addr, dut.params.en, dut.params.addr):
            if oab_en:
                reads.append(("oab", oab_addr))
                ctx.set(dut.oab.data, oab[oab_addr])
            elif hold:
                ctx.set(dut.oab.data, rng.getrandbits(C * A))
            if p_en:
                reads.append(("params", p_addr))
                bias, mult = params[p_addr]
                ctx.set(dut.params.data, PARAMETER.const({"bias": bias, "multiplier": mult}).as_bits())
            elif hold:
                ctx.set(dut.params.data, rng.getrandbits(PARAMETER.size))

    async def consumer(ctx):
        async for _, _, valid, payload, busy in ctx.tick().sample(dut.element.valid, dut.element.payload,
                                                                 dut.busy):
            if valid:
                assert busy
                elements.append(payload)

    simulate(dut, [producer], [memories, consumer], cycles=60)
    assert len(elements) == 2 * R * C
    # One OAB read per row; parameters only for channels below cout.
    expected_reads = []
    for job in jobs:
        for r in range(R):
            k = job["ktile"] * R + r
            expected_reads.append(("oab", job["buffer"] * R + r))
            if k < cout:
                expected_reads.append(("params", param_base + k))
    assert reads == expected_reads
    for index, element in enumerate(elements):
        job = jobs[index // (R * C)]
        r, c = divmod(index % (R * C), C)
        k = job["ktile"] * R + r
        at = element.at
        assert (at.r, at.c, at.k, at.x, at.y, at.last) == (r, c, k, job["x0"] + c, job["y"],
                                                          index % (R * C) == R * C - 1)
        word = oab[job["buffer"] * R + r]
        value = (word >> (A * c)) & ((1 << A) - 1)
        assert element.acc == value - ((value >> (A - 1)) << A)
        if k < cout:
            assert (element.bias, element.multiplier) == params[param_base + k]
    # The second job is accepted with the first one's last element: no gap.
    assert accepted == [0, R * C - 1]


@pytest.mark.parametrize("barrel", [True, False], ids=["barrel", "clamped"])
def test_requantizer_follows_the_fixed_point_rule(barrel):
    config = dataclasses.replace(CONFIG, ppu_barrel_shift=barrel)
    dut = Requantizer(config)
    rng = np.random.default_rng(2)
    limit = 1 << (A - 1)
    inputs = []
    for index in range(120):
        acc = int(rng.choice([-limit, limit - 1, 0, -1, 1, int(rng.integers(-limit, limit))]))
        bias = int(rng.choice([-2**31, 2**31 - 1, 0, int(rng.integers(-2**31, 2**31))]))
        mult = int(rng.choice([-2**15, 2**15 - 1, 1, int(rng.integers(-2**15, 2**15))]))
        inputs.append((index, acc, bias, mult, bool(rng.random() < 0.8)))
    sent = [entry for entry in inputs if entry[4]]
    for shift, bits in [(0, 4), (3, 2), (20, 4), (47, 3), (49, 4), (63, 7)]:
        outputs = []

        async def producer(ctx):
            ctx.set(dut.req_shift, shift)
            ctx.set(dut.act_bits, bits)
            for index, acc, bias, mult, valid in inputs:
                ctx.set(dut.element.valid, valid)
                ctx.set(dut.element.payload, {"at": {"k": index, "last": index % 2}, "acc": acc,
                                              "bias": bias, "multiplier": mult})
                await ctx.tick()
            ctx.set(dut.element.valid, 0)

        async def consumer(ctx):
            for cycle in range(len(inputs) + Requantizer.LATENCY + 2):
                if ctx.get(dut.code.valid):
                    outputs.append((cycle, ctx.get(dut.code.payload)))
                await ctx.tick()

        simulate(dut, [producer, consumer], cycles=len(inputs) + Requantizer.LATENCY + 4)
        assert [cycle for cycle, _ in outputs] == [index + Requantizer.LATENCY for index, *_ in sent]
        for (index, acc, bias, mult, _), (_, code) in zip(sent, outputs):
            scaled = fixedpoint.rounding_shift_right((acc + bias) * mult, shift)
            assert code.value == min(max(scaled, 0), (1 << bits) - 1) & 15, (shift, bits, acc, bias, mult)
            assert code.total == (acc + bias + 2**31) % 2**32 - 2**31
            assert (code.at.k, code.at.last) == (index, index % 2)


def run_writer(codes, registers):
    """`codes`: [(r, c, k, x, y, value, total)] one per cycle. Returns (activation
    writes (bank, word, shift, value): a slot of the act_bits' width at bit
    `shift` of `word` (on into word + 1 where it straddles), result writes
    (address, value))."""
    registers = {"act_bits": 4, **registers}
    width = registers["act_bits"]
    dut = PoolWriter(CONFIG)
    col_bits = (C - 1).bit_length()
    acts, results = [], []

    async def producer(ctx):
        for name, value in registers.items():
            ctx.set(getattr(dut, name), value)
        for r, c, k, x, y, value, total in codes:
            ctx.set(dut.code.valid, 1)
            ctx.set(dut.code.payload, {"at": {"r": r, "c": c, "k": k, "x": x, "y": y},
                                       "value": value, "total": total})
            if ctx.get(dut.activations.en):
                en, addr, data = (ctx.get(dut.activations.en), ctx.get(dut.activations.addr),
                                  ctx.get(dut.activations.data))
                shift = (en & -en).bit_length() - 1
                assert en == ((1 << width) - 1) << shift
                acts.append((addr & ((1 << col_bits) - 1), addr >> col_bits, shift,
                             (data >> shift) & ((1 << width) - 1)))
            if ctx.get(dut.results.en):
                results.append((ctx.get(dut.results.addr), ctx.get(dut.results.data)))
            await ctx.tick()

    simulate(dut, [producer], cycles=len(codes) + 4)
    return acts, results


def tile_codes(rng, y, x0=0, ktile=0):
    return [(r, c, ktile * R + r, x0 + c, y, int(rng.integers(0, 16)), int(rng.integers(-2**31, 2**31)))
            for r in range(R) for c in range(C)]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_writer_places_slots_and_skips_what_is_out_of_range(bits):
    """Channel k's slot at bit bits * k of its pixel's words: channel 5 of
    a 3-bit map at bit 15, on into the next word (one write); nothing for
    k >= cout or x >= out_w."""
    rng = np.random.default_rng(3)
    codes = tile_codes(rng, y=2, x0=4, ktile=2) + tile_codes(rng, y=2, x0=4)
    registers = dict(out_base=10, out_w=7, cout=6 if bits < 4 else 1, out_wb=2, out_words=9,
                     pool=0, raw=0, res_base=0, act_bits=bits)
    acts, results = run_writer(codes, registers)
    assert results == []
    cout = registers["cout"]
    expected = [(x % C, 10 + (y * 2 + x // C) * 9 + bits * k // 16, bits * k % 16,
                 value & ((1 << bits) - 1))
                for r, c, k, x, y, value, _ in codes if k < cout and x < 7]
    assert acts == expected
    assert (bits != 3) or any(shift == 15 for _, _, shift, _ in acts)


def test_writer_pools_two_tiles_and_writes_raw_results():
    rng = np.random.default_rng(4)
    top, bottom = tile_codes(rng, y=0), tile_codes(rng, y=1)
    registers = dict(out_base=0, out_w=C, cout=R, out_wb=1, out_words=1, pool=1, raw=0, res_base=0)
    acts, _ = run_writer(top + bottom, registers)
    assert len(acts) == R * C // 2
    value = {(k, x, y): v for _, _, k, x, y, v, _ in top + bottom}
    for bank, word, shift, got in acts:
        window = [value[(shift // 4, 2 * bank + dx, dy)] for dx in (0, 1) for dy in (0, 1)]
        assert (word, got) == (0, max(window))

    registers.update(raw=1, pool=0, res_base=5, out_w=C, cout=R)
    acts, results = run_writer(top, registers)
    assert acts == []
    assert results == [(5 + (y * C + x) * R + k, total % 2**32) for _, _, k, x, y, _, total in top]


@pytest.mark.parametrize("width", [2 * C - 1, 2 * C, 2 * C + 1])
def test_writer_splits_the_columns_by_parity(width):
    """`out_split` n > 0: column x at position x div 2, plus n when x is
    even (docs/isa.md, "Activations"), unpooled and pooled, odd and even
    widths."""
    from sw.compile.encoding import act_address, even_start
    rng = np.random.default_rng(width)
    codes = [code for x0 in range(0, width, C) for code in tile_codes(rng, y=1, x0=x0)]
    wb = -(-width // C)
    registers = dict(out_base=3, out_w=width, cout=R, out_wb=wb, out_words=4, pool=0, raw=0,
                     res_base=0, out_split=even_start(width))
    acts, _ = run_writer(codes, registers)
    expected = [(*act_address(y, x, k, 3, width, R, C, 4, split=True), value)
                for _, _, k, x, y, value, _ in codes if x < width]
    assert acts == expected

    # Pooled: the map is half as wide as the conv rows written (out_w even).
    out_w = width // 2 * 2
    pooled = out_w // 2
    top = [code for x0 in range(0, width, C) for code in tile_codes(rng, y=0, x0=x0)]
    bottom = [code for x0 in range(0, width, C) for code in tile_codes(rng, y=1, x0=x0)]
    pairs = [tile for x0 in range(len(top) // (R * C))
             for tile in (top[x0 * R * C:(x0 + 1) * R * C], bottom[x0 * R * C:(x0 + 1) * R * C])]
    registers.update(pool=1, out_w=out_w, out_wb=-(-pooled // C), out_split=even_start(pooled))
    acts, _ = run_writer([code for tile in pairs for code in tile], registers)
    value = {(k, x, y): v for _, _, k, x, y, v, _ in top + bottom}
    expected = {act_address(0, x, k, 3, pooled, R, C, 4, split=True):
                max(value[(k, 2 * x + dx, dy)] for dx in (0, 1) for dy in (0, 1))
                for k in range(R) for x in range(pooled)}
    assert {(bank, word, shift): got for bank, word, shift, got in acts} == expected
    assert len(acts) == len(expected)


@pytest.mark.parametrize("barrel", [True, False], ids=["barrel", "clamped"])
def test_requantizer_adds_the_residual_term_and_clamps_signed(barrel):
    """requantize_sum's rule: (acc + bias) * M + (code * Mr) << Sr, rounded
    once, clamped unsigned or signed; shortcut codes signed or unsigned,
    every shift pair at its edges (Sr up to 47), extreme operands."""
    config = dataclasses.replace(CONFIG, ppu_barrel_shift=barrel)
    dut = Requantizer(config)
    rng = np.random.default_rng(3)
    limit = 1 << (A - 1)
    inputs = []
    for index in range(150):
        acc = int(rng.choice([-limit, limit - 1, 0, int(rng.integers(-limit, limit))]))
        bias = int(rng.choice([-2**31, 2**31 - 1, 0, int(rng.integers(-2**20, 2**20))]))
        mult = int(rng.choice([-2**15, 2**15 - 1, 1, int(rng.integers(-2**15, 2**15))]))
        rmult = int(rng.choice([-2**15, 2**15 - 1, 0, int(rng.integers(-2**15, 2**15))]))
        code = int(rng.integers(0, 16))
        inputs.append((index, acc, bias, mult, rmult, code))
    for shift, bits, sc_shift, sc_signed, out_signed in [
            (0, 4, 0, 0, 0), (14, 2, 0, 1, 1), (20, 3, 6, 0, 1), (20, 4, 6, 1, 0),
            (47, 3, 47, 1, 1), (40, 4, 30, 0, 0), (63, 2, 12, 1, 1)]:
        outputs = []

        async def producer(ctx):
            for name, value in dict(req_shift=shift, act_bits=bits, sc_enable=1, sc_shift=sc_shift,
                                    sc_signed=sc_signed, out_signed=out_signed).items():
                ctx.set(getattr(dut, name), value)
            for index, acc, bias, mult, rmult, code in inputs:
                ctx.set(dut.element.valid, 1)
                ctx.set(dut.element.payload, {"at": {"k": index}, "acc": acc, "bias": bias,
                                              "multiplier": mult, "residual_multiplier": rmult,
                                              "shortcut": code})
                await ctx.tick()
            ctx.set(dut.element.valid, 0)

        async def consumer(ctx):
            for _ in range(len(inputs) + Requantizer.LATENCY + 2):
                if ctx.get(dut.code.valid):
                    outputs.append(ctx.get(dut.code.payload))
                await ctx.tick()

        simulate(dut, [producer, consumer], cycles=len(inputs) + Requantizer.LATENCY + 4)
        assert len(outputs) == len(inputs)
        for (index, acc, bias, mult, rmult, code), out in zip(inputs, outputs):
            residual = code - 16 if sc_signed and code >= 8 else code
            expected = fixedpoint.requantize_sum(acc, bias, mult, shift, bits, residual=residual,
                                                 residual_multiplier=rmult, residual_shift=sc_shift,
                                                 signed=bool(out_signed))
            assert out.value == expected & 15, (shift, bits, sc_shift, acc, bias, mult, rmult, code)
            assert out.at.k == index
