"""The round engine's descriptor reader in Amaranth's simulator, at its
boundary: chunk-descriptor and weight-pointer memories on its read ports,
requests taken with random back-pressure, the emitter's `emitted` driven by
the testbench. Requests come in order, each with its descriptor, the rows'
pointers advanced past the earlier chunks' planes and the round's tile;
the reader stays one descriptor ahead; `done` and `busy` frame the round."""

# amaranth: UnusedElaboratable=no

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import PCODE_BITS
from hw.round_engine import DescriptorReader

CONFIG = AcceleratorConfig("reader-test", rows=3, cols=2, program_depth=16, chunk_depth=32,
                           wptr_depth=8, param_depth=4, weight_depth=64, act_depth=64, result_depth=4,
                           coord_bits=10)
LAYOUT = CONFIG.chunk_layout
ADDR_MASK = CONFIG.weight_depth - 1


def memories(seed):
    rng = random.Random(seed)
    chunks = [rng.getrandbits(CONFIG.chunk_width) for _ in range(CONFIG.chunk_depth)]
    wptr = [rng.getrandbits(CONFIG.wptr_width) for _ in range(CONFIG.wptr_depth)]
    return chunks, wptr


def expected_requests(chunks, wptr, chunk_start, count, wptr_index):
    """(descriptor bits, pointers) of each request, from the memories."""
    entry = CONFIG.wptr_layout.from_bits(wptr[wptr_index])
    pointers = [int(entry[r]) for r in range(CONFIG.rows)]
    requests = []
    for i in range(count):
        bits = chunks[(chunk_start + i) % CONFIG.chunk_depth]
        requests.append((bits, list(pointers)))
        descriptor = LAYOUT.from_bits(bits)
        for r in range(CONFIG.rows):
            pointers[r] = (pointers[r] + PCODE_BITS[int(descriptor.rows[r].pcode)]) & ADDR_MASK
    return requests


def run(rounds, *, seed=0, ready=lambda cycle: True, emitted_delay=3, cycles=400):
    """Runs `rounds` of (chunk_start, count, wptr_index, y, x0, input2), each
    started once the previous one is done; `emitted` rises `emitted_delay`
    cycles after a round's last request is taken. Returns per round its
    start cycle, the requests taken (cycle, descriptor, pointers, y, x0,
    input2), the done cycles, the cycles it was busy and its descriptor
    and pointer reads."""
    chunks, wptr = memories(seed)
    m = Module()
    m.submodules.dut = dut = DescriptorReader(CONFIG)
    m.submodules.chunks = chunk_memory = memory.Memory(shape=CONFIG.chunk_width, depth=CONFIG.chunk_depth,
                                                       init=chunks)
    m.submodules.wptr = wptr_memory = memory.Memory(shape=CONFIG.wptr_width, depth=CONFIG.wptr_depth,
                                                    init=wptr)
    wiring.connect(m, chunk_memory.read_port(), dut.chunks)
    wiring.connect(m, wptr_memory.read_port(), dut.wptr)
    results = []

    async def testbench(ctx):
        cycle = 0
        for chunk_start, count, wptr_index, y, x0, input2 in rounds:
            result = {"start": cycle, "requests": [], "done": [], "busy": [], "chunk_reads": [],
                      "wptr_reads": []}
            results.append(result)
            for port, value in ((dut.chunk_start, chunk_start), (dut.chunk_count, count),
                                (dut.wptr_index, wptr_index), (dut.y, y), (dut.x0, x0),
                                (dut.input2, input2), (dut.start, 1)):
                ctx.set(port, value)
            emitted_at = None
            while not result["done"]:
                if len(result["requests"]) == count and emitted_at is None:
                    emitted_at = cycle + emitted_delay
                ctx.set(dut.emitted, emitted_at is not None and cycle >= emitted_at)
                ctx.set(dut.requests.ready, ready(cycle))
                if ctx.get(dut.requests.valid) and ready(cycle):
                    request = dut.requests.payload
                    result["requests"].append((
                        cycle, ctx.get(request.chunk.as_value()),
                        [ctx.get(request.pointers[r]) for r in range(CONFIG.rows)],
                        ctx.get(request.y), ctx.get(request.x0), ctx.get(request.input2)))
                for name, port in (("chunk_reads", dut.chunks), ("wptr_reads", dut.wptr)):
                    if ctx.get(port.en):
                        result[name].append((cycle, ctx.get(port.addr)))
                for name, port in (("done", dut.done), ("busy", dut.busy)):
                    if ctx.get(port):
                        result[name].append(cycle)
                await ctx.tick()
                ctx.set(dut.start, 0)
                cycle += 1
                assert cycle < cycles, "the round never ended"

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return results, chunks, wptr


def check(result, chunks, wptr, round_fields):
    chunk_start, count, wptr_index, y, x0, input2 = round_fields
    start = result["start"]
    expected = expected_requests(chunks, wptr, chunk_start, count, wptr_index)
    got = [(bits, pointers) for _, bits, pointers, *_ in result["requests"]]
    assert got == expected
    coord_mask = (1 << CONFIG.coord_bits) - 1
    assert all(request[3:] == (y & coord_mask, x0 & coord_mask, input2) for request in result["requests"])
    assert result["wptr_reads"] == [(start, wptr_index)]
    assert [addr for _, addr in result["chunk_reads"]] == [
        (chunk_start + i) % CONFIG.chunk_depth for i in range(count)]
    # One ahead: descriptor i is read once descriptor i - 1 is taken, or in that cycle.
    taken = [cycle for cycle, *_ in result["requests"]]
    for i, (cycle, _) in enumerate(result["chunk_reads"][1:], start=1):
        assert cycle >= taken[i - 1], f"descriptor {i} read before {i - 1} was taken"
    (done,) = result["done"]
    assert result["busy"] == list(range(start + 1, done + 1))
    return taken, done


@pytest.mark.parametrize("seed", range(3))
def test_requests_in_order_with_pointers(seed):
    rng = random.Random(seed)
    rounds = [(rng.randrange(CONFIG.chunk_depth), rng.randrange(1, 9), rng.randrange(CONFIG.wptr_depth),
               rng.getrandbits(16), rng.getrandbits(16), rng.getrandbits(1)) for _ in range(3)]
    pattern = [rng.random() < 0.5 for _ in range(400)]
    results, chunks, wptr = run(rounds, seed=seed, ready=lambda cycle: pattern[cycle])
    for result, fields in zip(results, rounds):
        check(result, chunks, wptr, fields)


def test_timing_without_back_pressure():
    """A request three cycles after start (wptr and first descriptor read),
    then one every other cycle (a descriptor read takes one); done in the
    first cycle of `emitted` (here the cycle after the last request)."""
    fields = (30, 4, 5, 2, 8, 0)        # chunk addresses 30, 31, 0, 1: wraps
    (result,), chunks, wptr = run([fields], emitted_delay=0)
    taken, done = check(result, chunks, wptr, fields)
    assert taken == [3, 5, 7, 9]
    assert done == 10


def test_round_without_chunks():
    """No descriptor is read; done waits for the pointer read."""
    fields = (0, 0, 1, 0, 0, 1)
    (result,), chunks, wptr = run([fields], emitted_delay=0)
    taken, done = check(result, chunks, wptr, fields)
    assert taken == [] and done == 2
