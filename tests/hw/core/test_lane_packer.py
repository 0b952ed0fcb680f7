"""The round engine's lane packer in Amaranth's simulator, at its boundary:
bit-plane taps of every precision and fold in, for every PE mode, come out
as `pack_weights` / `pack_activations` (the software twins) pack the lane
values; the mode reaches every row and `valid` passes through."""

# amaranth: UnusedElaboratable=no

import random

from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import PCODE_BITS
from hw.pe import PeMode
from hw.pe.modes import pack_activations, pack_weights
from hw.round_engine import MAX_LANES, PLANES, LanePacker

CONFIG = AcceleratorConfig("packer-test", rows=3, cols=2, program_depth=16, chunk_depth=16,
                           wptr_depth=4, param_depth=4, weight_depth=64, act_depth=64, result_depth=4)


def signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def random_step(rng, mode):
    """A step of `mode`: per row a (pcode, fold) the compiler could give it
    and its lanes' weights q, as plane bits; per column its lanes'
    activations. Lanes past the mode's hold random bits."""
    rows = []
    for _ in range(CONFIG.rows):
        choices = [(pcode, fold) for pcode in range(4) for fold in (0, 1)
                   if PCODE_BITS[pcode] + fold <= mode.weight_bits and (pcode or not fold)]
        pcode, fold = rng.choice(choices)
        bits = PCODE_BITS[pcode]
        q = [rng.randrange(-(1 << (bits - 1)), 1 << (bits - 1)) if bits else 0 for _ in range(mode.lanes)]
        q += [rng.randrange(16) for _ in range(MAX_LANES - mode.lanes)]
        # plane k's bit l is bit k of lane l's q; planes past the precision are noise.
        planes = [sum((((q[lane] >> k) & 1) if k < bits else rng.getrandbits(1)) << lane
                      for lane in range(MAX_LANES)) for k in range(PLANES)]
        rows.append((pcode, fold, [v << fold for v in q[:mode.lanes]], planes))
    acts = [[rng.randrange(1 << mode.activation_bits) for _ in range(mode.lanes)]
            + [rng.randrange(16) for _ in range(MAX_LANES - mode.lanes)] for _ in range(CONFIG.cols)]
    return rows, acts


def test_lanes_packed_for_every_mode():
    dut = LanePacker(CONFIG)
    rng = random.Random(1)
    cases = [(mode, *random_step(rng, mode)) for mode in PeMode for _ in range(60)]

    async def testbench(ctx):
        for valid, (mode, rows, acts) in enumerate(cases):
            valid &= 1
            ctx.set(dut.steps.valid, valid)
            ctx.set(dut.steps.payload.mode, mode)
            for r, (pcode, fold, _, planes) in enumerate(rows):
                ctx.set(dut.steps.payload.rows[r].pcode, pcode)
                ctx.set(dut.steps.payload.rows[r].fold, fold)
                for k, plane in enumerate(planes):
                    ctx.set(dut.taps.planes[r][k], plane)
            for c, lanes in enumerate(acts):
                for lane, value in enumerate(lanes):
                    ctx.set(dut.taps.acts[c][lane], value)
            out = dut.array.payload
            assert ctx.get(dut.array.valid) == valid
            for r, (pcode, fold, weights, _) in enumerate(rows):
                assert ctx.get(out.modes[r]) == mode
                assert ctx.get(out.weights[r]) == pack_weights(mode, weights), (mode, r, pcode, fold)
            for c, lanes in enumerate(acts):
                assert ctx.get(out.acts[c]) == pack_activations(mode, lanes[:mode.lanes]), (mode, c)

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()


def test_sign_extension_of_each_precision():
    """The extreme values of every precision, folded or not, in W4A4's one lane."""
    dut = LanePacker(CONFIG)
    mode = PeMode.W4A4
    cases = [(pcode, fold, q) for pcode in (1, 2, 3) for fold in (0, 1)
             if PCODE_BITS[pcode] + fold <= 4
             for q in (-(1 << (PCODE_BITS[pcode] - 1)), -1, 0, 1, (1 << (PCODE_BITS[pcode] - 1)) - 1)]

    async def testbench(ctx):
        ctx.set(dut.steps.payload.mode, mode)
        for pcode, fold, q in cases:
            ctx.set(dut.steps.payload.rows[0].pcode, pcode)
            ctx.set(dut.steps.payload.rows[0].fold, fold)
            for k in range(PLANES):
                ctx.set(dut.taps.planes[0][k], (q >> k) & 1 if k < PCODE_BITS[pcode] else 0)
            assert signed(ctx.get(dut.array.payload.weights[0]) & 0xF, 4) == q << fold, (pcode, fold, q)

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
