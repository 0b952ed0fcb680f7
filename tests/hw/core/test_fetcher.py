"""The round engine's fetcher in Amaranth's simulator, at its boundary: weight
and activation memories on its read ports, fetch jobs offered at random,
the buffers' `free` random. A job is taken only when the buffer it fills
is free and the fetcher is idle or in its last read, and then always;
buffers alternate; each job gives four reads and four captures two cycles
after it is taken, with every row's planes and every column's word (turned
from its bank, zero outside the map); the read counters count the enables."""

# amaranth: UnusedElaboratable=no

import random

import pytest
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import ACT_WORD_BITS, GROUP_SIZE
from hw.pe import PeMode
from hw.round_engine import FETCH_READS, PLANES, Fetcher

CONFIG = AcceleratorConfig("fetcher-test", rows=3, cols=4, program_depth=16, chunk_depth=16,
                           wptr_depth=4, param_depth=4, weight_depth=64, act_depth=64, result_depth=4)
R, C = CONFIG.rows, CONFIG.cols


def random_job(rng):
    """A job as the addresser makes them: a bank is read when its column's
    pixel is inside the map."""
    rotate = rng.randrange(C)
    inside = [rng.random() < 0.7 for _ in range(C)]
    return {
        "mode": rng.choice(list(PeMode)),
        "rows": [(rng.randrange(4), rng.getrandbits(1)) for _ in range(R)],
        "weights": [(rng.randrange(CONFIG.weight_depth), rng.randrange(PLANES + 1)) for _ in range(R)],
        "banks": [(rng.randrange(CONFIG.act_depth), inside[(bank - rotate) % C]) for bank in range(C)],
        "inside": inside, "rotate": rotate,
    }


def run(jobs, *, seed, offer=0.6, free=0.7, cycles=None, slot_bits=4):
    rng = random.Random(seed)
    weights = [[rng.getrandbits(GROUP_SIZE) for _ in range(CONFIG.weight_depth)] for _ in range(R)]
    acts = [[rng.getrandbits(ACT_WORD_BITS) for _ in range(CONFIG.act_depth)] for _ in range(C)]
    m = Module()
    m.submodules.dut = dut = Fetcher(CONFIG)
    for r in range(R):
        m.submodules[f"w{r}"] = mem = memory.Memory(shape=GROUP_SIZE, depth=CONFIG.weight_depth, init=weights[r])
        wiring.connect(m, mem.read_port(), dut.weights[r])
    for c in range(C):
        m.submodules[f"a{c}"] = mem = memory.Memory(shape=ACT_WORD_BITS, depth=CONFIG.act_depth, init=acts[c])
        wiring.connect(m, mem.read_port(), dut.acts[c])
    trace = []
    cycles = cycles or 12 * len(jobs) + 20

    async def testbench(ctx):
        ctx.set(dut.slot_bits, slot_bits)
        queue = list(jobs)
        for _ in range(cycles):
            valid = bool(queue) and rng.random() < offer
            free_now = [int(rng.random() < free) for _ in range(2)]
            ctx.set(dut.jobs.valid, valid)
            ctx.set(dut.free, free_now[0] | free_now[1] << 1)
            if queue:
                job, payload = queue[0], dut.jobs.payload
                ctx.set(payload.header.mode, job["mode"])
                for r, ((pcode, fold), (pointer, planes)) in enumerate(zip(job["rows"], job["weights"])):
                    ctx.set(payload.header.rows[r].pcode, pcode)
                    ctx.set(payload.header.rows[r].fold, fold)
                    ctx.set(payload.plan.weights[r].pointer, pointer)
                    ctx.set(payload.plan.weights[r].planes, planes)
                for bank, (addr, read) in enumerate(job["banks"]):
                    ctx.set(payload.plan.banks[bank].addr, addr)
                    ctx.set(payload.plan.banks[bank].read, read)
                for c, inside in enumerate(job["inside"]):
                    ctx.set(payload.plan.inside[c], inside)
                ctx.set(payload.plan.rotate, job["rotate"])
            capture = dut.captures.payload
            begin = dut.begin.payload
            trace.append({
                "valid": valid, "ready": ctx.get(dut.jobs.ready), "free": free_now,
                "begin": (ctx.get(begin.buffer), ctx.get(begin.header.mode),
                          [(ctx.get(begin.header.rows[r].pcode), ctx.get(begin.header.rows[r].fold))
                           for r in range(R)]) if ctx.get(dut.begin.valid) else None,
                "capture": (ctx.get(capture.buffer), ctx.get(capture.index), ctx.get(capture.last),
                            [ctx.get(capture.planes[r]) for r in range(R)],
                            [ctx.get(capture.words[c]) for c in range(C)]) if ctx.get(dut.captures.valid) else None,
                "weight_reads": [(ctx.get(port.en), ctx.get(port.addr)) for port in dut.weights],
                "act_reads": [(ctx.get(port.en), ctx.get(port.addr)) for port in dut.acts],
                "counts": (ctx.get(dut.weight_reads), ctx.get(dut.act_reads)),
            })
            if valid and trace[-1]["ready"]:
                queue.pop(0)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return trace, weights, acts


@pytest.mark.parametrize("seed, slot_bits", [(0, 4), (1, 3), (2, 2)])
def test_jobs_fetched_into_alternate_buffers(seed, slot_bits):
    """Reads k of a fetch: plane k of each row's group (k < planes), word k
    of each read bank's pixel (k < slot_bits: the chunk's s-bit slots)."""
    rng = random.Random(100 + seed)
    jobs = [random_job(rng) for _ in range(12)]
    trace, weights, acts = run(jobs, seed=seed, slot_bits=slot_bits)
    taken = [cycle for cycle, t in enumerate(trace) if t["valid"] and t["ready"]]
    assert len(taken) == len(jobs), "every job fetched"
    reads = {}                   # cycle -> (job, read index)
    for j, (cycle, job) in enumerate(zip(taken, jobs)):
        buffer = j % 2
        target = trace[cycle]
        assert target["begin"] == (buffer, job["mode"], job["rows"]), cycle
        assert target["free"][buffer], "a job taken for a buffer that is not free"
        for k in range(FETCH_READS):
            assert cycle + 1 + k not in reads, "fetches overlap"
            reads[cycle + 1 + k] = (j, k)
            capture = trace[cycle + 2 + k]["capture"]
            assert capture is not None and capture[:3] == (buffer, k, k == FETCH_READS - 1)
            for r, (pointer, planes) in enumerate(job["weights"]):
                if k < planes:
                    assert capture[3][r] == weights[r][(pointer + k) % CONFIG.weight_depth], (j, k, r)
            for c in range(C if k < slot_bits else 0):    # the words past the slots: don't care
                bank = (c + job["rotate"]) % C
                addr, read = job["banks"][bank]
                word = acts[bank][(addr + k) % CONFIG.act_depth] if job["inside"][c] else 0
                assert capture[4][c] == word, (j, k, c)
    for cycle, t in enumerate(trace):
        if cycle in reads:
            j, k = reads[cycle]
            job = jobs[j]
            for r, (pointer, planes) in enumerate(job["weights"]):
                if k < planes:
                    assert t["weight_reads"][r] == (1, (pointer + k) % CONFIG.weight_depth), (cycle, r)
                else:
                    assert not t["weight_reads"][r][0], (cycle, r)
            for bank, (addr, read) in enumerate(job["banks"]):
                if read and k < slot_bits:
                    assert t["act_reads"][bank] == (1, (addr + k) % CONFIG.act_depth), (cycle, bank)
                else:
                    assert not t["act_reads"][bank][0], (cycle, bank)
        else:
            assert not any(en for en, _ in t["weight_reads"] + t["act_reads"])
            assert t["capture"] is None or cycle - 1 in reads
        assert t["counts"] == (sum(en for en, _ in t["weight_reads"]), sum(en for en, _ in t["act_reads"]))
        # Ready exactly when idle or in the last read, and the target buffer is free.
        busy = cycle in reads and reads[cycle][1] < FETCH_READS - 1
        target = sum(1 for start in taken if start < cycle) % 2
        assert t["ready"] == (not busy and bool(t["free"][target])), cycle


def test_back_to_back_when_always_free():
    """Offered and free in every cycle, a job is taken in the previous one's
    last read: a capture in every cycle."""
    rng = random.Random(9)
    jobs = [random_job(rng) for _ in range(5)]
    trace, _, _ = run(jobs, seed=9, offer=1.0, free=1.0, cycles=30)
    taken = [cycle for cycle, t in enumerate(trace) if t["valid"] and t["ready"]]
    assert taken == [0, 4, 8, 12, 16]
    captures = [cycle for cycle, t in enumerate(trace) if t["capture"] is not None]
    assert captures == list(range(2, 22))
