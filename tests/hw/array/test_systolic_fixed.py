# amaranth: UnusedElaboratable=no
"""The fixed 4-bit PE array (`SystolicArray(pe="fixed")`, the area and energy
baseline) in Amaranth's simulator: on rounds of random W4A4 steps back to
back, with idle cycles and garbage on `modes`, each round's drained rows
equal numpy's at the promised cycles, and its drain outputs equal the fused
array's there."""

import random

import pytest

from hw.array.systolic import SystolicArray
from hw.pe import PeMode
from tests.hw.array.conftest import drained, random_schedule, run


@pytest.mark.parametrize("rows, cols, seed", [(1, 2, 0), (3, 1, 1), (3, 4, 2), (4, 4, 3), (5, 2, 4)])
def test_fixed_array_matches_numpy_and_fused_on_w4a4(rows, cols, seed):
    schedule = random_schedule(random.Random(seed), rows, cols, [PeMode.W4A4])
    fused = run(SystolicArray(rows=rows, cols=cols, acc_width=20), schedule, seed=seed)
    # The fixed array ignores `modes`: drive garbage into it there.
    fixed = run(SystolicArray(rows=rows, cols=cols, acc_width=20, pe="fixed"), schedule,
                seed=seed, garbage_modes=True)
    got = [round_.tolist() for round_ in drained(schedule, fixed)]
    assert got == [round_.tolist() for round_ in schedule.sums]
    assert got == [round_.tolist() for round_ in drained(schedule, fused)]
    # Not vacuous: consecutive rounds differ, so a round drained in another's
    # place or a sum carried into the next round would show.
    assert all((a != b).any() for a, b in zip(schedule.sums, schedule.sums[1:]))


def test_array_rejects_unknown_pe():
    with pytest.raises(ValueError, match="pe must be one of fused, fixed"):
        SystolicArray(rows=2, cols=2, acc_width=16, pe="bitfusion")
