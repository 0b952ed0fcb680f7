"""Round schedules for the systolic array's tests, a simulator run of one, and
the check of every round's drained rows at the cycles the array promises."""

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from hw.pe import PeMode, pack_activations, pack_weights
from hw.pe.modes import activation_range, weight_range


@dataclass
class Schedule:
    """What the inputs carry in each cycle (None: idle) and, per round, the
    cycle of its last step and its expected sums (rows x cols)."""
    rows: int
    cols: int
    cycles: list = field(default_factory=list)
    last_cycles: list = field(default_factory=list)
    sums: list = field(default_factory=list)

    def add_round(self, rng, modes, length, *, lead, gap_chance):
        """A round of `length` steps whose first step comes `lead` idle
        cycles after the previous round's last step (0: in the next cycle),
        with an idle cycle before each later step at `gap_chance`, and idle
        cycles in front where the caller's rule needs them."""
        self.cycles += [None] * lead
        start = len(self.cycles)
        total = np.zeros((self.rows, self.cols), dtype=np.int64)
        for index in range(length):
            if index and rng.random() < gap_chance:
                self.cycles.append(None)
            mode = rng.choice(modes)
            low, high = weight_range(mode.weight_bits)
            w = [[rng.randint(low, high) for _ in range(mode.lanes)] for _ in range(self.rows)]
            a = [[rng.randint(*activation_range(mode.activation_bits)) for _ in range(mode.lanes)]
                 for _ in range(self.cols)]
            total += np.array(w) @ np.array(a).T
            self.cycles.append((mode, [pack_weights(mode, row) for row in w],
                                [pack_activations(mode, column) for column in a],
                                index == length - 1))
        if self.last_cycles:
            # The caller's rule: a round's last step at least R cycles after
            # the previous round's; pad in front of this round if needed.
            short = self.last_cycles[-1] + self.rows - (len(self.cycles) - 1)
            if short > 0:
                self.cycles[start:start] = [None] * short
        self.last_cycles.append(len(self.cycles) - 1)
        self.sums.append(total)

    def drain_cycles(self):
        """{cycle: (round, row)}: drain_out shows `row` of `round` then."""
        expected = {}
        for index, last in enumerate(self.last_cycles):
            for k in range(self.rows):
                cycle = last + self.rows + self.cols + 1 + k
                assert cycle not in expected
                expected[cycle] = (index, self.rows - 1 - k)
        return expected


def random_schedule(rng, rows, cols, modes):
    """Rounds back to back: random lengths of at least R steps with idle gaps
    inside and between them, a round of exactly R steps with no gap (last
    step exactly R cycles after the previous round's), next rounds whose
    first step follows the previous last step in the next cycle, and a
    shorter round padded to the rule."""
    schedule = Schedule(rows, cols)
    schedule.add_round(rng, modes, rng.randint(rows, 2 * rows + 3), lead=rng.randint(0, 3),
                       gap_chance=0.2)
    schedule.add_round(rng, modes, rows, lead=0, gap_chance=0)
    schedule.add_round(rng, modes, rng.randint(rows, 2 * rows + 3), lead=0, gap_chance=0.25)
    schedule.add_round(rng, modes, rng.randint(rows, 2 * rows), lead=rng.randint(1, 6),
                       gap_chance=0.2)
    schedule.add_round(rng, modes, max(1, rows // 2), lead=0, gap_chance=0)
    for _ in range(4):
        schedule.add_round(rng, modes, rng.randint(rows, 2 * rows + 2),
                           lead=rng.choice((0, 0, 1, 4)), gap_chance=0.15)
    return schedule


def run(array, schedule, *, seed=0, garbage_modes=False):
    """drain_out of every cycle while `schedule` runs and its last drain
    ends. Idle cycles carry random operands, modes and `last`, which the
    array must ignore; with `garbage_modes` the modes are random on every
    cycle (the fixed-PE array ignores them)."""
    rng = random.Random(seed)
    rows, cols = schedule.rows, schedule.cols
    length = len(schedule.cycles) + 2 * rows + cols + 2
    outputs = []

    async def testbench(ctx):
        for cycle in range(length):
            step = schedule.cycles[cycle] if cycle < len(schedule.cycles) else None
            if step is None:
                mode = rng.choice(list(PeMode))
                weights = [rng.randrange(256) for _ in range(rows)]
                activations = [rng.randrange(256) for _ in range(cols)]
                last = rng.random() < 0.5
            else:
                mode, weights, activations, last = step
            if garbage_modes:
                mode = rng.choice(list(PeMode))
            for r in range(rows):
                ctx.set(array.weights[r], weights[r])
                ctx.set(array.modes[r], mode)
            for c in range(cols):
                ctx.set(array.activations[c], activations[c])
            ctx.set(array.valid, step is not None)
            ctx.set(array.last, last)
            outputs.append([ctx.get(array.drain_out[c]) for c in range(cols)])
            await ctx.tick()

    sim = Simulator(array)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return outputs


def drained(schedule, outputs):
    """Per round, its rows as drain_out showed them at the promised cycles."""
    rounds = [np.zeros((schedule.rows, schedule.cols), dtype=np.int64) for _ in schedule.sums]
    for cycle, (index, row) in schedule.drain_cycles().items():
        rounds[index][row] = outputs[cycle]
    return rounds
