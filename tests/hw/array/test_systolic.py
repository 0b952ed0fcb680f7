# amaranth: UnusedElaboratable=no
"""The systolic array in Amaranth's simulator: random steps in random modes
against a numpy matrix product, then the drain order and the cleared array."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.array.systolic import SystolicArray
from hw.pe import PeMode, pack_activations, pack_weights
from hw.pe.modes import activation_range, weight_range


@pytest.mark.parametrize("rows, cols", [(1, 2), (3, 4), (4, 4), (2, 6)])
def test_array_accumulates_and_drains(rows, cols):
    rng = random.Random(rows * 10 + cols)
    array = SystolicArray(rows=rows, cols=cols, acc_width=20)
    steps = 40
    expected = np.zeros((rows, cols), dtype=np.int64)
    stimulus = []
    for _ in range(steps):
        mode = rng.choice(list(PeMode))
        low, high = weight_range(mode.weight_bits)
        w = [[rng.randint(low, high) for _ in range(mode.lanes)] for _ in range(rows)]
        a = [[rng.randint(*activation_range(mode.activation_bits)) for _ in range(mode.lanes)]
             for _ in range(cols)]
        valid = rng.random() < 0.8
        if valid:
            expected += np.array(w) @ np.array(a).T
        stimulus.append((mode, w, a, valid))

    sim = Simulator(array)
    sim.add_clock(1e-6)
    drained = []

    async def testbench(ctx):
        for mode, w, a, valid in stimulus:
            for r in range(rows):
                ctx.set(array.weights[r], pack_weights(mode, w[r]))
                ctx.set(array.modes[r], mode)
            for c in range(cols):
                ctx.set(array.activations[c], pack_activations(mode, a[c]))
            ctx.set(array.valid, valid)
            await ctx.tick()
        ctx.set(array.valid, 0)
        # Garbage on the idle operand inputs must not matter.
        for r in range(rows):
            ctx.set(array.weights[r], 0xFF)
        for c in range(cols):
            ctx.set(array.activations[c], 0xFF)
        for _ in range(rows + cols - 1):  # the last step reaches PE (R-1, C-1)
            await ctx.tick()
        ctx.set(array.drain, 1)
        for _ in range(rows):
            drained.append([ctx.get(array.drain_out[c]) for c in range(cols)])
            await ctx.tick()
        ctx.set(array.drain, 0)
        assert [ctx.get(array.drain_out[c]) for c in range(cols)] == [0] * cols

    sim.add_testbench(testbench)
    sim.run()
    # drain_out shows rows R-1 .. 0.
    assert np.array(drained[::-1]).tolist() == expected.tolist()


def test_array_rejects_bad_shapes():
    with pytest.raises(ValueError, match="rows must be an int in"):
        SystolicArray(rows=0, cols=4, acc_width=16)
