"""PE units in Amaranth's simulator: exhaustive per mode, mode switching, reset."""

import random

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from hw.pe import FixedPE, FusedPE, PeMode, dot_reference, pack_operands
from hw.pe.accumulator import DOT_SHAPE
from hw.pe.modes import weight_range


def simulate(pe, testbench):
    """Run `testbench(ctx, reset_signal)` on `pe` in its own sync domain."""
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.pe = pe
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await testbench(ctx, sync.rst)

    sim.add_testbench(bench)
    sim.run()


def wrap(value, width):
    """Two's-complement wrap of an integer to `width` bits (the accumulator)."""
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


def operand_words(mode):
    """Every (weight word, activation word) pair whose used slices differ.

    Slices a mode does not use get random values: they must not matter.
    """
    rng = random.Random(int(mode.value))
    used_w = mode.lanes * mode.weight_bits
    used_a = mode.lanes * mode.activation_bits
    for w in range(1 << used_w):
        for a in range(1 << used_a):
            junk_w = rng.getrandbits(8) & ~((1 << used_w) - 1) & 0xFF
            junk_a = rng.getrandbits(8) & ~((1 << used_a) - 1) & 0xFF
            yield w | junk_w, a | junk_a


def test_dot_product_fits_the_dot_shape():
    values = [dot_reference(mode, w, a) for mode in PeMode
              for w, a in operand_words(mode)]
    assert min(values) == -120 and max(values) == 105
    assert -(1 << (DOT_SHAPE.width - 1)) <= min(values) and max(values) < 1 << (DOT_SHAPE.width - 1)


@pytest.mark.parametrize("mode", list(PeMode), ids=lambda mode: mode.name)
def test_fused_pe_exhaustive(mode):
    """Every operand combination of the mode, each product checked alone:
    `first` loads a random `psum_in`, so psum_out - psum_in is one dot product."""
    pe = FusedPE(acc_width=16)
    rng = random.Random(1)
    failures = []

    async def testbench(ctx, rst):
        ctx.set(pe.mode, mode)
        ctx.set(pe.enable, 1)
        ctx.set(pe.first, 1)
        for w, a in operand_words(mode):
            psum_in = rng.randrange(-1000, 1000)
            ctx.set(pe.weights.as_value(), w)
            ctx.set(pe.activations.as_value(), a)
            ctx.set(pe.psum_in, psum_in)
            await ctx.tick()
            got = ctx.get(pe.psum_out)
            expected = psum_in + dot_reference(mode, w, a)
            if got != expected:
                failures.append((hex(w), hex(a), got, expected))

    simulate(pe, testbench)
    assert not failures, f"{len(failures)} wrong products, first: {failures[:5]}"


def test_fused_pe_lanes_by_hand():
    """A few products worked out by hand, one per mode, against the wiring."""
    cases = [
        (PeMode.W4A4, [-8], [15], -120),
        (PeMode.W4A4, [7], [15], 105),
        (PeMode.W4A2, [-3, 5], [2, 3], -6 + 15),
        (PeMode.W2A4, [-2, 1], [9, 14], -18 + 14),
        (PeMode.W2A2, [-2, -1, 0, 1], [3, 2, 1, 3], -6 - 2 + 0 + 3),
    ]
    pe = FusedPE(acc_width=16)

    async def testbench(ctx, rst):
        ctx.set(pe.enable, 1)
        ctx.set(pe.first, 1)
        for mode, weights, activations, expected in cases:
            ctx.set(pe.mode, mode)
            ctx.set(pe.weights.as_value(), pack_operands(weights, mode.weight_bits, signed=True))
            ctx.set(pe.activations.as_value(), pack_operands(activations, mode.activation_bits, signed=False))
            await ctx.tick()
            assert ctx.get(pe.psum_out) == expected, (mode, weights, activations)

    simulate(pe, testbench)


def random_cycle(rng):
    return (rng.choice(list(PeMode)), rng.getrandbits(8), rng.getrandbits(8),
            rng.random() < 0.9, rng.random() < 0.1, rng.randrange(-500, 500))


@pytest.mark.parametrize("acc_width", [8, 12, 24])
def test_fused_pe_mode_switches_every_cycle(acc_width):
    """A random mode on every cycle while accumulating: no bubble, no wrong sum,
    and the accumulator wraps like a `acc_width`-bit register."""
    pe = FusedPE(acc_width=acc_width)
    rng = random.Random(acc_width)

    async def testbench(ctx, rst):
        acc = 0
        for _ in range(3000):
            mode, w, a, enable, first, psum_in = random_cycle(rng)
            psum_in = wrap(psum_in, acc_width)
            for signal, value in ((pe.mode, mode), (pe.weights.as_value(), w), (pe.activations.as_value(), a),
                                  (pe.enable, enable), (pe.first, first), (pe.psum_in, psum_in)):
                ctx.set(signal, value)
            await ctx.tick()
            if enable:
                acc = wrap((psum_in if first else acc) + dot_reference(mode, w, a), acc_width)
            assert ctx.get(pe.psum_out) == acc

    simulate(pe, testbench)


def test_fused_pe_reset_clears_the_accumulator():
    pe = FusedPE(acc_width=16)

    async def testbench(ctx, rst):
        ctx.set(pe.mode, PeMode.W4A4)
        ctx.set(pe.weights.as_value(), pack_operands([7], 4, signed=True))
        ctx.set(pe.activations.as_value(), pack_operands([15], 4, signed=False))
        ctx.set(pe.enable, 1)
        for _ in range(3):
            await ctx.tick()
        assert ctx.get(pe.psum_out) == 3 * 105
        ctx.set(rst, 1)
        await ctx.tick()
        assert ctx.get(pe.psum_out) == 0
        ctx.set(rst, 0)
        await ctx.tick()
        assert ctx.get(pe.psum_out) == 105

    simulate(pe, testbench)


def test_fused_pe_with_a_subset_of_modes_adds_zero_for_the_others():
    pe = FusedPE(acc_width=16, modes=[PeMode.W4A4, PeMode.W2A2])

    async def testbench(ctx, rst):
        ctx.set(pe.enable, 1)
        ctx.set(pe.first, 1)
        for mode in PeMode:
            ctx.set(pe.mode, mode)
            ctx.set(pe.weights.as_value(), 0x55)
            ctx.set(pe.activations.as_value(), 0xFF)
            await ctx.tick()
            expected = dot_reference(mode, 0x55, 0xFF) if mode in pe.modes else 0
            assert ctx.get(pe.psum_out) == expected

    simulate(pe, testbench)


def test_fixed_pe_exhaustive():
    pe = FixedPE(acc_width=12)
    low, high = weight_range(4)

    async def testbench(ctx, rst):
        ctx.set(pe.enable, 1)
        ctx.set(pe.first, 1)
        for w in range(low, high + 1):
            for a in range(16):
                ctx.set(pe.weight, w)
                ctx.set(pe.activation, a)
                ctx.set(pe.psum_in, -7)
                await ctx.tick()
                assert ctx.get(pe.psum_out) == -7 + w * a
        ctx.set(pe.first, 0)
        ctx.set(pe.weight, -8)
        ctx.set(pe.activation, 15)
        await ctx.tick()
        assert ctx.get(pe.psum_out) == -7 + 7 * 15 - 120

    simulate(pe, testbench)


@pytest.mark.parametrize("kwargs, message", [
    ({"acc_width": 7}, "acc_width must be an int in [8, 64]"),
    ({"acc_width": 65}, "acc_width"),
    ({"acc_width": 16.0}, "acc_width"),
    ({"acc_width": True}, "acc_width"),
    ({"modes": []}, "modes must be a non-empty collection of PeMode"),
    ({"modes": ["W4A4"]}, "modes"),
    ({"modes": 3}, "modes"),
])
def test_fused_pe_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FusedPE(**kwargs)


def test_fixed_pe_rejects_bad_acc_width():
    with pytest.raises(ValueError, match="acc_width"):
        FixedPE(acc_width=4)


@pytest.mark.parametrize("call, message", [
    (lambda: pack_operands([8], 4, signed=True), "outside"),
    (lambda: pack_operands([-1], 2, signed=False), "outside"),
    (lambda: pack_operands([0] * 5, 2, signed=False), "do not fit"),
    (lambda: pack_operands([0], 3, signed=False), "lane_bits"),
    (lambda: PeMode.for_bits(5, 4), "weight_bits"),
])
def test_operand_packing_rejects_bad_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_modes_for_three_bit_operands_are_four_bit():
    assert PeMode.for_bits(3, 3) is PeMode.W4A4
    assert PeMode.for_bits(2, 3) is PeMode.W2A4
    assert PeMode.for_bits(3, 2) is PeMode.W4A2
    assert PeMode.for_bits(2, 2) is PeMode.W2A2
