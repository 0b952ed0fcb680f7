# amaranth: UnusedElaboratable=no
"""The systolic array in Amaranth's simulator: rounds of random steps in
random modes, back to back, against numpy matrix products, each round's rows
checked at exactly the cycles the array promises (hw/array/systolic.py)."""

import random

import numpy as np
import pytest

from hw.array.systolic import SystolicArray
from hw.pe import PeMode
from tests.hw.array.conftest import Schedule, drained, random_schedule, run

SHAPES = [(1, 1), (1, 3), (4, 1), (3, 4), (4, 4), (5, 3), (2, 6)]


@pytest.mark.parametrize("rows, cols", SHAPES)
def test_rounds_back_to_back_drain_in_the_background(rows, cols):
    rng = random.Random(rows * 10 + cols)
    schedule = random_schedule(rng, rows, cols, list(PeMode))
    outputs = run(SystolicArray(rows=rows, cols=cols, acc_width=20), schedule, seed=rows + cols)
    got = drained(schedule, outputs)
    assert [round_.tolist() for round_ in got] == [round_.tolist() for round_ in schedule.sums]
    # Not vacuous: consecutive rounds differ, so a round drained in another's
    # place or a sum carried into the next round would show.
    assert all((a != b).any() for a, b in zip(schedule.sums, schedule.sums[1:]))


def test_last_steps_closer_than_r_cycles_lose_sums():
    """The caller's rule is needed: a round whose last step is only R - 1
    cycles after the previous round's overwrites shadows the previous round
    has not yet passed down its column."""
    rows, cols = 4, 3
    rng = random.Random(7)
    schedule = Schedule(rows, cols)
    schedule.add_round(rng, [PeMode.W4A4], 6, lead=0, gap_chance=0)
    schedule.add_round(rng, [PeMode.W4A4], rows - 1, lead=0, gap_chance=0)
    assert schedule.last_cycles[1] - schedule.last_cycles[0] == rows   # padded to the rule
    del schedule.cycles[schedule.last_cycles[0] + 1]                   # now R - 1 cycles apart
    schedule.last_cycles[1] -= 1
    outputs = run(SystolicArray(rows=rows, cols=cols, acc_width=20), schedule)
    first = schedule.last_cycles[0] + rows + cols + 1
    got = [outputs[first + k] for k in range(rows)][::-1]
    assert not np.array_equal(got, schedule.sums[0])


def test_array_rejects_bad_shapes():
    with pytest.raises(ValueError, match="rows must be an int in"):
        SystolicArray(rows=0, cols=4, acc_width=16)
