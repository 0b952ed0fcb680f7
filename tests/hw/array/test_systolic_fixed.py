# amaranth: UnusedElaboratable=no
"""The fixed 4-bit PE array (`SystolicArray(pe="fixed")`, the area and energy
baseline) in Amaranth's simulator: on random W4A4 step sequences, with idle
cycles, its drain outputs equal the fused array's, cycle for cycle."""

import random

import pytest
from amaranth.sim import Simulator

from hw.array.systolic import SystolicArray
from hw.pe import PeMode, pack_activations, pack_weights
from hw.pe.modes import activation_range, weight_range


def _drained(array, stimulus, rows, cols):
    """drain_out of every drain cycle (rows R-1 .. 0) after `stimulus`."""
    sim = Simulator(array)
    sim.add_clock(1e-6)
    drained = []

    async def testbench(ctx):
        for w, a, valid, mode in stimulus:
            for r in range(rows):
                ctx.set(array.weights[r], w[r])
                ctx.set(array.modes[r], mode)
            for c in range(cols):
                ctx.set(array.activations[c], a[c])
            ctx.set(array.valid, valid)
            await ctx.tick()
        ctx.set(array.valid, 0)
        for _ in range(rows + cols - 1):
            await ctx.tick()
        ctx.set(array.drain, 1)
        for _ in range(rows):
            drained.append([ctx.get(array.drain_out[c]) for c in range(cols)])
            await ctx.tick()
        ctx.set(array.drain, 0)
        drained.append([ctx.get(array.drain_out[c]) for c in range(cols)])

    sim.add_testbench(testbench)
    sim.run()
    return drained


@pytest.mark.parametrize("rows, cols, seed", [(1, 2, 0), (3, 4, 1), (4, 4, 2), (2, 6, 3)])
def test_fixed_array_matches_fused_on_w4a4(rows, cols, seed):
    rng = random.Random(seed)
    low, high = weight_range(4)
    stimulus = []
    for _ in range(40):
        w = [pack_weights(PeMode.W4A4, [rng.randint(low, high)]) for _ in range(rows)]
        a = [pack_activations(PeMode.W4A4, [rng.randint(*activation_range(4))])
             for _ in range(cols)]
        # The fixed array ignores `modes`: drive garbage into it there.
        stimulus.append((w, a, rng.random() < 0.8, PeMode.W4A4))
    fused = _drained(SystolicArray(rows=rows, cols=cols, acc_width=20), stimulus, rows, cols)
    garbage = [(w, a, valid, rng.choice(list(PeMode))) for w, a, valid, _ in stimulus]
    fixed = _drained(SystolicArray(rows=rows, cols=cols, acc_width=20, pe="fixed"),
                     garbage, rows, cols)
    assert fixed == fused
    assert any(value for row in fused for value in row)   # not a vacuous all-zero match
    assert fused[-1] == [0] * cols                         # cleared after the drain


def test_array_rejects_unknown_pe():
    with pytest.raises(ValueError, match="pe must be one of fused, fixed"):
        SystolicArray(rows=2, cols=2, acc_width=16, pe="bitfusion")
