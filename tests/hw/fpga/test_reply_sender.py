# amaranth: UnusedElaboratable=no
"""The replier and its stall watchdog in Amaranth's simulator, at their own
boundaries: a checked header offered on `frame`, a model feeder on `feed`,
answer words on `host_out`, the reply bytes taken from `tx_bytes` with
back-pressure. The bytes (CRC included) are the host's `encode_reply` of
the answers; a refused frame gets no words and never runs the feeder; the
status waits for the feeder; a stalled frame is answered with zeros and
STALLED."""

import random

import pytest
from amaranth.sim import Simulator

from hw.boards.link import FLAG_RESET, LinkStatus, ReplySender, RequestHeader, StallWatchdog
from sw.fpga.protocol import encode_reply

STALL_TIMEOUT = 30


def reply(*, seq=9, nreply=0, outcome=LinkStatus.OK, answers=(), answer_every=1, tx_ready=1.0,
          fed_after=3, pins=lambda cycle: 0b010, seed=1, cycles=2000):
    """Offer one header; the model feeder reports everything fed `fed_after`
    cycles after `run` rises (taking a word every cycle until then), the
    core answers `answers` one every `answer_every` cycles; the run ends a
    few cycles after the frame is taken. Returns the bytes sent and a
    per-cycle trace of (frame.valid, frame.ready, feed.start, feed.run,
    feed.stop)."""
    dut = ReplySender(stall_timeout=STALL_TIMEOUT)
    rng = random.Random(seed)
    header = RequestHeader.const({"seq": seq, "nwords": 2, "nreply": nreply, "outcome": outcome})
    sent, trace, answers = bytearray(), [], list(answers)

    async def testbench(ctx):
        ctx.set(dut.frame.payload, header)
        ctx.set(dut.frame.valid, 1)
        running, taken_at = 0, None
        for cycle in range(cycles):
            if taken_at is not None and cycle > taken_at + 5:
                break
            ctx.set(dut.core_pins, pins(cycle))
            ctx.set(dut.feed.fed_all, not ctx.get(dut.feed.run) or running >= fed_after)
            ctx.set(dut.feed.took, ctx.get(dut.feed.run) and running < fed_after)
            ctx.set(dut.host_out.valid, bool(answers) and cycle % answer_every == 0)
            ctx.set(dut.host_out.payload, answers[0] if answers else 0)
            ctx.set(dut.tx_bytes.ready, rng.random() < tx_ready)
            valid, ready = ctx.get(dut.frame.valid), ctx.get(dut.frame.ready)
            trace.append((valid, ready, ctx.get(dut.feed.start), ctx.get(dut.feed.run), ctx.get(dut.feed.stop)))
            if ctx.get(dut.tx_bytes.valid) and ctx.get(dut.tx_bytes.ready):
                sent.append(ctx.get(dut.tx_bytes.payload))
            if ctx.get(dut.host_out.valid) and ctx.get(dut.host_out.ready):
                answers.pop(0)
            running += ctx.get(dut.feed.run)
            await ctx.tick()
            if valid and ready:
                ctx.set(dut.frame.valid, 0)
                taken_at = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return bytes(sent), trace


def test_reply_bytes_and_crc():
    words = [0xCAFEF00D, 5, 0xFFFFFFFF]
    sent, trace = reply(seq=7, nreply=3, answers=words, answer_every=5, tx_ready=0.3, pins=lambda c: 0b011)
    assert sent == encode_reply(7, words, LinkStatus.OK | 0b011 << 4)
    # The frame is taken once, after its last byte; the feeder started on
    # the first cycle and ran from the next one until then.
    [taken_at] = [c for c, (valid, ready, *_) in enumerate(trace) if valid and ready]
    assert [c for c, t in enumerate(trace) if t[2]] == [0]
    assert [c for c, t in enumerate(trace) if t[3]] == list(range(1, taken_at + 1))


def test_no_answers_and_a_slow_line():
    sent, _ = reply(seq=1, nreply=0, tx_ready=0.1, pins=lambda c: 0b001)
    assert sent == encode_reply(1, [], LinkStatus.OK | 0b001 << 4)


def test_refused_frame_gets_no_words_and_no_feeding():
    for outcome in (LinkStatus.BAD_CRC, LinkStatus.BAD_LENGTH, LinkStatus.TIMEOUT):
        sent, trace = reply(seq=4, nreply=3, outcome=outcome, answers=[1, 2, 3])
        assert sent == encode_reply(4, [], outcome | 0b010 << 4)
        assert not any(start or run for _, _, start, run, _ in trace)


def test_feed_start_carries_the_reset_flag_only_when_accepted():
    for outcome, expected in ((LinkStatus.OK, True), (LinkStatus.BAD_CRC, False)):
        dut = ReplySender(stall_timeout=STALL_TIMEOUT)
        seen = []

        async def testbench(ctx, outcome=outcome):
            ctx.set(dut.frame.payload, RequestHeader.const({"nwords": 3, "flags": FLAG_RESET,
                                                             "outcome": outcome}))
            ctx.set(dut.frame.valid, 1)
            seen.append((ctx.get(dut.feed.start), ctx.get(dut.feed.reset), ctx.get(dut.feed.nwords)))

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(testbench)
        sim.run()
        assert seen == [(expected, True, 3)]


def test_status_waits_for_every_word_fed():
    # The line is fast and nothing is answered: the status byte goes out
    # only after the feeder is done, with the pins of that moment.
    # (run rises at cycle 1: everything is fed at cycle 101.)
    sent, trace = reply(seq=2, fed_after=100, pins=lambda cycle: 0b001 if cycle < 101 else 0b100)
    assert sent == encode_reply(2, [], LinkStatus.OK | 0b100 << 4)
    [taken_at] = [c for c, (valid, ready, *_) in enumerate(trace) if valid and ready]
    assert taken_at == 101 + 4                  # status, two CRC bytes, then taken


def test_stalled_frame_sends_zeros_and_stalled():
    # The core takes the words but never answers.
    sent, trace = reply(seq=3, nreply=2, answers=[], fed_after=2)
    assert sent == encode_reply(3, [0, 0], LinkStatus.STALLED | 0b010 << 4)
    # The last word was taken at cycle 2: stalled STALL_TIMEOUT cycles later.
    assert [c for c, t in enumerate(trace) if t[4]][0] == 3 + STALL_TIMEOUT


def test_slow_answers_within_the_timeout_do_not_stall():
    words = [1, 2, 3]
    sent, _ = reply(seq=5, nreply=3, answers=words, answer_every=STALL_TIMEOUT - 5)
    assert sent == encode_reply(5, words, LinkStatus.OK | 0b010 << 4)


def watchdog_trace(watch, progress, timeout=16):
    dut = StallWatchdog(timeout)
    stalled = []

    async def testbench(ctx):
        for w, p in zip(watch, progress):
            ctx.set(dut.watch, w)
            ctx.set(dut.progress, p)
            stalled.append(ctx.get(dut.stalled))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return stalled


def test_watchdog_counts_cycles_without_progress():
    stalled = watchdog_trace([1] * 40, [0] * 40)
    assert stalled.index(1) == 16 and all(stalled[16:])
    # Progress at cycle 5 starts the count again.
    stalled = watchdog_trace([1] * 40, [int(c == 5) for c in range(40)])
    assert stalled.index(1) == 6 + 16


def test_watchdog_holds_until_watch_falls_and_sleeps_without_it():
    stalled = watchdog_trace([1] * 25 + [0] * 3 + [1] * 5, [0] * 20 + [1] * 13)
    assert stalled == [0] * 16 + [1] * 10 + [0] * 7
    assert not any(watchdog_trace([0] * 40, [0] * 40))


def test_timeouts_checked():
    with pytest.raises(ValueError, match="stall_timeout"):
        ReplySender(stall_timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        StallWatchdog(1.5)
