# amaranth: UnusedElaboratable=no
"""PE units in Amaranth's simulator: exhaustive per mode, mode switching, reset."""

import itertools
import random

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from hw.pe import FixedPE, FusedPE, PeMode, pack_activations, pack_weights
from hw.pe.accumulator import DOT_SHAPE
from hw.pe.modes import activation_range, weight_range


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


def all_lane_values(mode):
    """Every combination of lane values the mode allows: (weights, activations)."""
    w_values = range(weight_range(mode.weight_bits)[0], weight_range(mode.weight_bits)[1] + 1)
    a_values = range(activation_range(mode.activation_bits)[1] + 1)
    for weights in itertools.product(w_values, repeat=mode.lanes):
        for activations in itertools.product(a_values, repeat=mode.lanes):
            yield weights, activations


def dot(weights, activations):
    """The reference: what one cycle adds, from the lane values alone."""
    return sum(w * a for w, a in zip(weights, activations))


def apply(ctx, pe, mode, weights, activations):
    ctx.set(pe.mode, mode)
    ctx.set(pe.weights.as_value(), pack_weights(mode, weights))
    ctx.set(pe.activations.as_value(), pack_activations(mode, activations))


def test_dot_product_fits_the_dot_shape():
    values = [dot(w, a) for mode in PeMode for w, a in all_lane_values(mode)]
    assert min(values) == -120 and max(values) == 105
    assert -(1 << (DOT_SHAPE.width - 1)) <= min(values) and max(values) < 1 << (DOT_SHAPE.width - 1)


def test_lane_counts():
    assert {mode.name: mode.lanes for mode in PeMode} == {"W4A4": 1, "W4A2": 2, "W2A4": 2, "W2A2": 4}


@pytest.mark.parametrize("mode", list(PeMode), ids=lambda mode: mode.name)
def test_fused_pe_exhaustive(mode):
    """Every value in every lane, all combinations, each cycle checked alone:
    `first` loads a random `psum_in`, so psum_out - psum_in is one dot product."""
    pe = FusedPE(acc_width=16)
    rng = random.Random(1)
    failures = []
    checked = 0

    async def testbench(ctx, rst):
        nonlocal checked
        ctx.set(pe.enable, 1)
        ctx.set(pe.first, 1)
        for weights, activations in all_lane_values(mode):
            psum_in = rng.randrange(-1000, 1000)
            apply(ctx, pe, mode, weights, activations)
            ctx.set(pe.psum_in, psum_in)
            await ctx.tick()
            got = ctx.get(pe.psum_out)
            checked += 1
            if got != psum_in + dot(weights, activations):
                failures.append((weights, activations, got - psum_in))

    simulate(pe, testbench)
    expected_count = (2 ** (mode.weight_bits + mode.activation_bits)) ** mode.lanes
    assert checked == expected_count
    assert not failures, f"{len(failures)} wrong products, first: {failures[:5]}"


def test_fused_pe_by_hand():
    """Products worked out by hand, one or two per mode."""
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
            apply(ctx, pe, mode, weights, activations)
            await ctx.tick()
            assert ctx.get(pe.psum_out) == expected, (mode, weights, activations)

    simulate(pe, testbench)


def random_lanes(rng, mode):
    low, high = weight_range(mode.weight_bits)
    weights = [rng.randint(low, high) for _ in range(mode.lanes)]
    activations = [rng.randint(*activation_range(mode.activation_bits)) for _ in range(mode.lanes)]
    return weights, activations


@pytest.mark.parametrize("acc_width", [8, 12, 24])
def test_fused_pe_mode_switches_every_cycle(acc_width):
    """A random mode on every cycle while accumulating, with stalls and
    restarts: no bubble, no wrong sum, and the accumulator wraps like an
    `acc_width`-bit register."""
    pe = FusedPE(acc_width=acc_width)
    rng = random.Random(acc_width)

    async def testbench(ctx, rst):
        acc = 0
        previous_mode = None
        switches = 0
        for _ in range(3000):
            mode = rng.choice(list(PeMode))
            switches += mode != previous_mode
            previous_mode = mode
            weights, activations = random_lanes(rng, mode)
            enable, first = rng.random() < 0.9, rng.random() < 0.1
            psum_in = wrap(rng.randrange(-500, 500), acc_width)
            apply(ctx, pe, mode, weights, activations)
            ctx.set(pe.enable, enable)
            ctx.set(pe.first, first)
            ctx.set(pe.psum_in, psum_in)
            await ctx.tick()
            if enable:
                acc = wrap((psum_in if first else acc) + dot(weights, activations), acc_width)
            assert ctx.get(pe.psum_out) == acc
        assert switches > 2000

    simulate(pe, testbench)


def test_fused_pe_reset_clears_the_accumulator():
    pe = FusedPE(acc_width=16)

    async def testbench(ctx, rst):
        apply(ctx, pe, PeMode.W4A4, [7], [15])
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
        ctx.set(pe.enable, 0)
        await ctx.tick()
        assert ctx.get(pe.psum_out) == 105

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


@pytest.mark.parametrize("pe_class", [FusedPE, FixedPE])
@pytest.mark.parametrize("acc_width", [7, 65, 16.0, True, "24"])
def test_pes_reject_bad_acc_width(pe_class, acc_width):
    with pytest.raises(ValueError, match=r"acc_width must be an int in \[8, 64\]"):
        pe_class(acc_width=acc_width)


@pytest.mark.parametrize("call, message", [
    (lambda: pack_weights(PeMode.W4A4, [8]), "outside"),
    (lambda: pack_weights(PeMode.W2A2, [0, 0, 0, 2]), "outside"),
    (lambda: pack_activations(PeMode.W4A2, [-1, 0]), "outside"),
    (lambda: pack_activations(PeMode.W2A2, [0] * 5), "takes 4 activation lanes"),
    (lambda: PeMode.for_bits(5, 4), "weight_bits"),
    (lambda: PeMode.for_bits(4, 1), "activation_bits"),
])
def test_operand_packing_rejects_bad_values(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_packing_replicates_wide_operands_across_bricks():
    # W4A4: the weight on slices 0-1 and again on 2-3; each activation slice twice.
    assert pack_weights(PeMode.W4A4, [-3]) == 0b1101_1101
    assert pack_activations(PeMode.W4A4, [0b1001]) == 0b10_10_01_01
    assert pack_weights(PeMode.W2A2, [1, -1, -2, 0]) == 0b00_10_11_01


def test_modes_for_three_bit_operands_are_four_bit():
    assert PeMode.for_bits(3, 3) is PeMode.W4A4
    assert PeMode.for_bits(2, 3) is PeMode.W2A4
    assert PeMode.for_bits(3, 2) is PeMode.W4A2
    assert PeMode.for_bits(2, 2) is PeMode.W2A2
