"""The round engine's emitter in Amaranth's simulator, at its boundary: chunk
headers offered on `chunks` whenever a testbench "buffer" holds one, and its
steps, progress and `idle` recorded. Each chunk gives G / lanes steps in a
row with its header, starting the cycle after it is taken; a chunk offered
in time is taken in the previous chunk's last step (no gap); `last`,
`ending` and `shift` mark the steps the buffers act on; no more than
`chunk_count` chunks are taken per round."""

# amaranth: UnusedElaboratable=no

import random

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import GROUP_SIZE
from hw.pe import PeMode
from hw.round_engine import Emitter, header_layout

CONFIG = AcceleratorConfig("emitter-test", rows=2, cols=2, program_depth=16, chunk_depth=16,
                           wptr_depth=4, param_depth=4, weight_depth=64, act_depth=64, result_depth=4)


def random_header(rng):
    """A chunk header's bits."""
    mode = rng.choice(list(PeMode))
    rows = [{"pcode": rng.randrange(4), "fold": rng.getrandbits(1)} for _ in range(CONFIG.rows)]
    return header_layout(CONFIG).const({"mode": mode, "rows": rows}).as_value().value


def steps_of(header):
    return GROUP_SIZE // PeMode(header_layout(CONFIG).from_bits(header).mode).lanes


def run(rounds, *, ready_at=lambda index: 0, cycles=200):
    """Rounds of (chunk_count, headers offered), each started when the
    previous one's chunks are all presented; chunk i of a round is offered
    from cycle `ready_at(i)` of the round on. Returns the trace, per cycle:
    a dict of the emitter's outputs and whether a chunk was taken; and the
    cycles in which the rounds ended (`idle` again)."""
    dut = Emitter(CONFIG)
    trace, ends = [], []

    async def testbench(ctx):
        cycle = 0
        for count, headers in rounds:
            queue = list(headers)
            ctx.set(dut.start, 1)
            ctx.set(dut.chunk_count, count)
            round_cycle, offered = 0, 0
            while True:
                valid = bool(queue) and round_cycle >= ready_at(offered)
                ctx.set(dut.chunks.valid, valid)
                if queue:
                    ctx.set(dut.chunks.payload.as_value(), queue[0])
                taken = valid and ctx.get(dut.chunks.ready)
                trace.append({
                    "start": ctx.get(dut.start), "taken": taken,
                    "header": queue[0] if taken else None,
                    "valid": ctx.get(dut.steps.valid), "step": ctx.get(dut.steps.payload.as_value()),
                    "mode": ctx.get(dut.steps.payload.mode), "shift": ctx.get(dut.progress.shift),
                    "pmode": ctx.get(dut.progress.mode), "last": ctx.get(dut.progress.last),
                    "ending": ctx.get(dut.progress.ending), "idle": ctx.get(dut.idle),
                    "round_last": ctx.get(dut.last),
                })
                if taken:
                    queue.pop(0)
                    offered += 1
                await ctx.tick()
                ctx.set(dut.start, 0)
                cycle += 1
                round_cycle += 1
                if ctx.get(dut.idle) and round_cycle > 2:
                    ends.append(cycle)
                    break
                if cycle >= cycles:
                    return

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return trace, ends


def check_steps(trace):
    """Every taken chunk's steps follow it, G / lanes of them, with its header
    and the progress flags; returns the cycles of the taken chunks."""
    taken = [cycle for cycle, t in enumerate(trace) if t["taken"]]
    expected = {}
    for cycle in taken:
        steps = steps_of(trace[cycle]["header"])
        for s in range(steps):
            assert cycle + 1 + s not in expected, "two chunks' steps overlap"
            expected[cycle + 1 + s] = (trace[cycle]["header"], s, steps)
    for cycle, t in enumerate(trace):
        assert t["shift"] == t["valid"]
        if cycle not in expected:
            assert not t["valid"] and not t["last"] and not t["ending"], cycle
            continue
        header, s, steps = expected[cycle]
        assert t["valid"] and t["step"] == header and t["pmode"] == t["mode"], cycle
        assert t["last"] == (s == steps - 1) and t["ending"] == (s >= steps - 2), (cycle, s)
    return taken


@pytest.mark.parametrize("seed", range(4))
def test_chunks_back_to_back(seed):
    rng = random.Random(seed)
    headers = [random_header(rng) for _ in range(6)]
    trace, ends = run([(6, headers)])
    taken = check_steps(trace)
    # The count is in from the cycle after start.
    assert len(taken) == 6 and taken[0] == 1
    # Each later chunk is taken in its predecessor's last step: a step every cycle.
    for previous, cycle in zip(taken, taken[1:]):
        assert trace[cycle]["last"] and cycle > previous
    steps = [t for t in trace if t["valid"]]
    assert len(steps) == sum(steps_of(header) for header in headers)
    assert not any(t["idle"] for t in trace[1:]) and ends == [len(trace)]


def test_late_chunks_leave_gaps():
    rng = random.Random(7)
    headers = [random_header(rng) for _ in range(4)]
    trace, _ = run([(4, headers)], ready_at=lambda index: 1 + 30 * index)
    assert check_steps(trace) == [1, 31, 61, 91]


def test_at_most_chunk_count_chunks():
    rng = random.Random(3)
    trace, ends = run([(2, [random_header(rng) for _ in range(5)])])
    assert len(check_steps(trace)) == 2 and len(ends) == 1


def test_rounds_one_after_another():
    rng = random.Random(5)
    rounds = [(count, [random_header(rng) for _ in range(count)]) for count in (1, 3, 2)]
    trace, ends = run(rounds)
    assert len(check_steps(trace)) == 6 and len(ends) == 3
    assert [cycle for cycle, t in enumerate(trace) if t["start"]] == [0] + ends[:2]
    # `last` marks each round's last step only: the cycle before it ends.
    assert [cycle for cycle, t in enumerate(trace) if t["round_last"]] == [end - 1 for end in ends]


def test_the_round_last_step_waits_for_a_late_last_chunk():
    rng = random.Random(9)
    trace, ends = run([(3, [random_header(rng) for _ in range(3)])], ready_at=lambda index: 1 + 25 * index)
    assert [cycle for cycle, t in enumerate(trace) if t["round_last"]] == [ends[0] - 1]
