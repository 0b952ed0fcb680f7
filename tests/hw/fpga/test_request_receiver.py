# amaranth: UnusedElaboratable=no
"""The request receiver in Amaranth's simulator, at its own boundary: bytes
in on `rx_bytes`, payload words out through the buffer's write port, the
checked header on `frame` (held until the replier takes it). Good frames,
pings, a bad CRC, a frame too long for the buffer, silence inside a frame
(on either side of the timeout), garbage before the sync byte, and bytes
that arrive while a frame is held."""

import random

import pytest
from amaranth.sim import Simulator

from hw.boards.link import REQUEST_SYNC, LinkStatus, RequestReceiver
from sw.fpga.protocol import encode_request

BYTE_TIMEOUT = 20


def paced(data, gap=0):
    """One line entry per cycle: a byte, then `gap` idle cycles (None)."""
    return [entry for byte in data for entry in [byte] + [None] * gap]


def receive(line, *, buffer_words=8, hold=3, tail=None):
    """Run `line` (a byte or None per cycle) into the receiver; a model
    replier takes each frame `hold` cycles after it turns valid. Returns
    the frames as (first valid cycle, header), the buffer writes as
    (cycle, address, word), and the cycle of every byte sent."""
    dut = RequestReceiver(buffer_words=buffer_words, byte_timeout=BYTE_TIMEOUT)
    frames, writes = [], []
    sent = [cycle for cycle, byte in enumerate(line) if byte is not None]
    line = list(line) + [None] * (tail if tail is not None else BYTE_TIMEOUT + hold + 10)

    async def testbench(ctx):
        held = 0
        for cycle, byte in enumerate(line):
            ctx.set(dut.rx_bytes.valid, byte is not None)
            ctx.set(dut.rx_bytes.payload, byte or 0)
            assert ctx.get(dut.rx_bytes.ready)
            ready = False
            if ctx.get(dut.frame.valid):
                header = ctx.get(dut.frame.payload)
                if held == 0:
                    frames.append((cycle, header))
                assert header == frames[-1][1], "the header changed while held"
                ready = held == hold
                held = 0 if ready else held + 1
            ctx.set(dut.frame.ready, ready)
            if ctx.get(dut.buffer.en):
                writes.append((cycle, ctx.get(dut.buffer.addr), ctx.get(dut.buffer.data)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return frames, writes, sent


def fields(header):
    return (header.seq, header.flags, header.nwords, header.nreply, header.outcome)


def test_good_frame_header_and_words():
    words = [0x30000000, 0x12345678, 0xDEADBEEF]
    frame = encode_request(7, words, 2, reset=True)
    frames, writes, sent = receive(paced(frame, gap=2))
    [(cycle, header)] = frames
    assert fields(header) == (7, 1, 3, 2, LinkStatus.OK)
    assert [(address, word) for _, address, word in writes] == list(enumerate(words))
    # Each word is written as its last byte arrives; the header is offered
    # two cycles after the last CRC byte (the CRC check takes one).
    assert [c for c, _, _ in writes] == [sent[5 + 4 * i + 3] for i in range(3)]
    assert cycle == sent[-1] + 2


def test_next_frame_right_after_a_taken_one_and_a_ping():
    rng = random.Random(3)
    words = [rng.getrandbits(32) for _ in range(8)]
    # Taken as soon as offered, the frame leaves the receiver hunting again
    # on the third cycle after its last byte.
    line = paced(encode_request(1, words, 0)) + [None] * 2 + paced(encode_request(2, [], 5))
    frames, writes, _ = receive(line, hold=0)
    assert [fields(h) for _, h in frames] == [(1, 0, 8, 0, LinkStatus.OK), (2, 0, 0, 5, LinkStatus.OK)]
    assert [word for _, _, word in writes] == words


def test_bad_crc_is_refused():
    for where in (5, 9, -1):
        frame = bytearray(encode_request(4, [1, 2], 1))
        frame[where] ^= 0x10
        frames, _, sent = receive(paced(frame, gap=1))
        [(cycle, header)] = frames
        assert header.outcome is LinkStatus.BAD_CRC and header.seq == 4
        assert cycle == sent[-1] + 2


def test_too_long_is_refused_at_its_length_and_the_rest_hunted_through():
    long_frame = encode_request(1, [0x11111111] * 5, 0)
    frames, writes, sent = receive(paced(long_frame) + paced(encode_request(2, [6], 0)), buffer_words=4, hold=0)
    assert [fields(h) for _, h in frames] == [(1, 0, 5, 0, LinkStatus.BAD_LENGTH), (2, 0, 1, 0, LinkStatus.OK)]
    assert frames[0][0] == sent[4] + 1          # right after the nreply byte
    assert [(address, word) for _, address, word in writes] == [(0, 6)]


def test_full_buffer_is_accepted():
    frames, writes, _ = receive(paced(encode_request(3, list(range(4)), 0)), buffer_words=4)
    assert frames[0][1].outcome is LinkStatus.OK and len(writes) == 4


def test_silence_inside_a_frame():
    frame = encode_request(5, [7, 8], 0)
    # BYTE_TIMEOUT idle cycles between two bytes are still one frame ...
    line = paced(frame[:6]) + [None] * BYTE_TIMEOUT + paced(frame[6:])
    frames, _, _ = receive(line)
    assert [h.outcome for _, h in frames] == [LinkStatus.OK]
    # ... one more and it is abandoned, at the cycle it went quiet.
    line = paced(frame[:6]) + [None] * (BYTE_TIMEOUT + 1)
    frames, writes, sent = receive(line)
    [(cycle, header)] = frames
    assert header.outcome is LinkStatus.TIMEOUT and header.seq == 5 and writes == []
    assert cycle == sent[-1] + BYTE_TIMEOUT + 2


def test_silence_before_a_frame_is_no_timeout():
    frames, _, _ = receive([None] * (3 * BYTE_TIMEOUT) + paced(encode_request(6, [1], 0)))
    assert [h.outcome for _, h in frames] == [LinkStatus.OK]


def test_garbage_before_sync_is_skipped():
    line = paced(bytes([0x00, 0xFF, 0x13, 0x5A]) + encode_request(3, [8], 0), gap=1)
    frames, writes, _ = receive(line)
    assert [fields(h) for _, h in frames] == [(3, 0, 1, 0, LinkStatus.OK)]
    assert [word for _, _, word in writes] == [8]


def test_bytes_while_a_frame_is_held_are_dropped():
    first, second = encode_request(1, [1], 0), encode_request(2, [2], 0)
    assert REQUEST_SYNC in second
    # The second frame arrives while the first is held: nothing of it is
    # written or offered; a third one after the release is received.
    line = paced(first) + [None] * 2 + paced(second) + [None] * 4 + paced(encode_request(3, [3], 0))
    frames, writes, _ = receive(line, hold=len(second) + 3)
    assert [(h.seq, h.outcome) for _, h in frames] == [(1, LinkStatus.OK), (3, LinkStatus.OK)]
    assert [word for _, _, word in writes] == [1, 3]


def test_parameters_checked():
    with pytest.raises(ValueError, match="buffer_words"):
        RequestReceiver(buffer_words=256, byte_timeout=BYTE_TIMEOUT)
    with pytest.raises(ValueError, match="byte_timeout"):
        RequestReceiver(buffer_words=8, byte_timeout=0)
