"""The frame bridge in Amaranth's simulator, byte streams on one side and a
model of the core's host streams on the other: good frames reach the core
word for word and are answered; bad ones (CRC, length, a truncated frame)
are refused without reaching the core and the next good frame works; a core
that stops taking words is cut short."""

import random

import pytest
from amaranth.sim import Simulator

from hw.boards.link import FrameBridge, LinkStatus
from sw.fpga.protocol import ReplyParser, encode_request

BYTE_TIMEOUT = 64
STALL_TIMEOUT = 200


def run_bridge(frames, *, answers=(), buffer_words=32, core_ready=True, pins=0b010,
               gap=0, rng_seed=1, cycles=None):
    """Send `frames` (bytes, one after the other once the previous reply is
    in); the model core takes every host_in word (unless `core_ready` is
    False) and answers with the words of `answers` in order. Returns
    (replies, words the core took, cycles with core_reset high)."""
    dut = FrameBridge(buffer_words=buffer_words, byte_timeout=BYTE_TIMEOUT,
                      stall_timeout=STALL_TIMEOUT)
    rng = random.Random(rng_seed)
    taken, resets, replies = [], [], []
    parser = ReplyParser()
    answers = list(answers)
    state = {"done": False}

    async def host(ctx):
        ctx.set(dut.core_pins, pins)
        for frame in frames:
            expected = len(replies) + 1
            for byte in frame:
                ctx.set(dut.rx_bytes.payload, byte)
                ctx.set(dut.rx_bytes.valid, 1)
                await ctx.tick()
                ctx.set(dut.rx_bytes.valid, 0)
                for _ in range(gap + rng.randrange(2)):
                    await ctx.tick()
            for _ in range(100_000):
                if len(replies) >= expected:
                    break
                await ctx.tick()
            else:
                raise AssertionError("no reply")
        state["done"] = True

    async def wire(ctx):
        # tx_bytes: always ready (the UART transmitter, sped up); core model.
        ctx.set(dut.tx_bytes.ready, 1)
        while not state["done"]:
            ctx.set(dut.host_in.ready, int(core_ready and rng.random() < 0.7))
            ctx.set(dut.host_out.valid, int(bool(answers)))
            if answers:
                ctx.set(dut.host_out.payload, answers[0])
            _, _, tx_valid, tx_payload, in_valid, in_ready, in_payload, out_ready, reset = \
                await ctx.tick().sample(
                    dut.tx_bytes.valid, dut.tx_bytes.payload, dut.host_in.valid,
                    dut.host_in.ready, dut.host_in.payload, dut.host_out.ready, dut.core_reset)
            if tx_valid:
                replies.extend(parser.feed(bytes([tx_payload])))
            if in_valid and in_ready:
                taken.append(in_payload)
            if answers and out_ready:
                answers.pop(0)
            if reset:
                resets.append(len(taken))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(wire, background=True)
    sim.run()
    return replies, taken, resets


def test_good_frames_reach_the_core_and_are_answered():
    words1 = [0x30000000, 0x12345678, 0xDEADBEEF]
    words2 = [0x40000001]
    replies, taken, resets = run_bridge(
        [encode_request(7, words1, 0), encode_request(8, words2, 2)], answers=[0xCAFEF00D, 5])
    assert taken == words1 + words2
    assert [r.seq for r in replies] == [7, 8]
    assert all(r.crc_ok and r.status is LinkStatus.OK for r in replies)
    assert replies[0].words == [] and replies[1].words == [0xCAFEF00D, 5]
    assert replies[1].pins == {"busy": False, "done": True, "error": False}
    assert resets == []


def test_empty_frame_is_a_ping():
    replies, taken, _ = run_bridge([encode_request(1, [], 0)], pins=0b001)
    assert taken == [] and replies[0].status is LinkStatus.OK and replies[0].pins["busy"]


def test_full_buffer_frame():
    words = list(range(1, 33))
    replies, taken, _ = run_bridge([encode_request(2, words, 0)], buffer_words=32)
    assert taken == words and replies[0].status is LinkStatus.OK


@pytest.mark.parametrize("where", [1, 3, 5, 9, -2, -1])
def test_corrupted_frame_is_refused_then_recovered(where):
    bad = bytearray(encode_request(4, [1, 2], 0))
    bad[where] ^= 0x10 if where != 3 else 0x01
    good = encode_request(5, [3, 4], 0)
    replies, taken, _ = run_bridge([bytes(bad), good])
    assert taken == [3, 4], "the corrupted frame reached the core"
    # Byte 3 is nwords: one word more than sent, so the line goes quiet first.
    expected = LinkStatus.TIMEOUT if where == 3 else LinkStatus.BAD_CRC
    assert replies[0].status is expected and replies[0].words == []
    assert replies[-1].seq == 5 and replies[-1].status is LinkStatus.OK


def test_too_long_frame_is_refused():
    replies, taken, _ = run_bridge([encode_request(1, list(range(9)), 0),
                                    encode_request(2, [6], 0)], buffer_words=8)
    assert replies[0].status is LinkStatus.BAD_LENGTH
    # The refused frame's payload is hunted through for a sync byte (none
    # here), then the next frame runs.
    assert replies[-1].seq == 2 and replies[-1].status is LinkStatus.OK and taken == [6]


def test_truncated_frame_times_out_then_recovers():
    frame = encode_request(1, [1, 2, 3], 0)
    replies, taken, _ = run_bridge([frame[:7], encode_request(2, [9], 0)])
    assert replies[0].status is LinkStatus.TIMEOUT
    assert replies[1].status is LinkStatus.OK and taken == [9]


def test_garbage_before_sync_is_skipped():
    replies, taken, _ = run_bridge([bytes([0x00, 0xFF, 0x13]) + encode_request(3, [8], 0)])
    assert replies[0].status is LinkStatus.OK and taken == [8]


def test_stalled_core_is_cut_short():
    replies, taken, _ = run_bridge([encode_request(1, [1, 2], 2)], core_ready=False)
    assert taken == []
    assert replies[0].status is LinkStatus.STALLED and replies[0].words == [0, 0]


def test_reset_flag_resets_the_core_before_the_words():
    replies, taken, resets = run_bridge([encode_request(1, [1], 0, reset=True)])
    assert resets == [0] and taken == [1] and replies[0].status is LinkStatus.OK
