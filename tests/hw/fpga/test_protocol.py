"""The serial protocol's framing on the host side: request and reply
layout, CRC on good and bad frames, resynchronisation on garbage, and the
link's retry rules (with a scripted transport standing in for the board)."""

import asyncio

import pytest
from amaranth.sim import Simulator

from hw.boards.link import CRC, REPLY_SYNC, REQUEST_SYNC
from hw.config import get_config
from hw.isa import Memory
from sw.fpga.link import Link, LinkError
from sw.fpga.protocol import LinkStatus, ReplyParser, crc16, encode_reply, encode_request


def test_request_layout():
    frame = encode_request(0x12, [0x11223344, 5], 3, reset=True)
    assert frame[0] == REQUEST_SYNC
    assert list(frame[1:5]) == [0x12, 1, 2, 3]
    assert frame[5:9] == bytes([0x44, 0x33, 0x22, 0x11])        # little-endian words
    assert int.from_bytes(frame[-2:], "big") == crc16(frame[1:-2])
    assert len(frame) == 1 + 4 + 8 + 2


def test_crc_is_the_catalogue_ccitt_false():
    assert crc16(b"123456789") == 0x29B1                           # its check value


def test_hardware_crc_detects_the_codeword():
    """The bridge checks a frame with the CRC processor's residue: the host's
    frames must leave it, and a one-bit change must not."""
    frame = encode_request(7, [1, 2, 3], 0)
    body = frame[1:]

    def match_after(data):
        dut = CRC(data_width=8).create()
        seen = []

        async def bench(ctx):
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            for byte in data:
                ctx.set(dut.data, byte)
                ctx.set(dut.valid, 1)
                await ctx.tick()
            ctx.set(dut.valid, 0)
            seen.append(ctx.get(dut.match_detected))

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        return seen[0]

    assert match_after(body)
    damaged = bytearray(body)
    damaged[4] ^= 0x20
    assert not match_after(bytes(damaged))


def test_reply_parser_good_bad_and_garbage():
    parser = ReplyParser()
    good = encode_reply(3, [0xDEADBEEF, 1], 0x20)
    bad = bytearray(encode_reply(4, [2], 0))
    bad[4] ^= 1
    replies = parser.feed(b"\x00\x13" + good[:5])
    assert replies == [] and parser.skipped == 2
    replies = parser.feed(good[5:] + bytes(bad) + encode_reply(5, [], LinkStatus.BAD_CRC))
    assert [(r.seq, r.crc_ok) for r in replies] == [(3, True), (4, False), (5, True)]
    assert replies[0].words == [0xDEADBEEF, 1] and replies[0].status is LinkStatus.OK
    assert replies[0].pins == {"busy": False, "done": True, "error": False}
    assert replies[2].status is LinkStatus.BAD_CRC and replies[2].words == []
    assert REPLY_SYNC == good[0]


def test_frame_limits():
    with pytest.raises(ValueError):
        encode_request(0, [0] * 256)
    with pytest.raises(ValueError):
        encode_request(0, [1 << 32])


class ScriptedBoard:
    """A transport that answers each request with the next scripted reply
    ("ok": a good reply with the words asked for; a LinkStatus: a refusal;
    None: silence; "corrupt": a good reply with a flipped bit)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        self.pending = b""

    async def write(self, data):
        seq, reply_words = data[1], data[4]
        self.requests.append(data)
        action = self.script.pop(0) if self.script else "ok"
        if action == "ok":
            self.pending += encode_reply(seq, list(range(reply_words)), 0x20)
        elif action == "corrupt":
            reply = bytearray(encode_reply(seq, list(range(reply_words)), 0x20))
            reply[3] ^= 1
            self.pending += bytes(reply)
        elif isinstance(action, LinkStatus):
            self.pending += encode_reply(seq, [], action)

    async def read(self, timeout):
        data, self.pending = self.pending, b""
        return data

    def close(self):
        pass


def make_link(script):
    board = ScriptedBoard(script)
    return Link(board, get_config("ice40"), byte_time=1e-6, latency=1e-4, retries=3), board


def test_link_retries_refused_silent_and_corrupt_frames():
    link, board = make_link([LinkStatus.BAD_CRC, None, "corrupt", "ok"])
    value = asyncio.run(link.read_register(3))
    assert value == 0
    assert len(board.requests) == 4
    assert link.stats["retries"] == 3
    assert link.stats["refused"] == {"BAD_CRC": 1, "NO_REPLY": 2}
    # Every attempt is a new sequence number.
    assert len({request[1] for request in board.requests}) == 4


def test_link_gives_up_and_reports_stalls():
    link, _ = make_link([None] * 4)
    with pytest.raises(LinkError, match="no good reply"):
        asyncio.run(link.ping())
    link, _ = make_link([LinkStatus.STALLED])
    with pytest.raises(LinkError, match="STALLED"):
        asyncio.run(link.ping())


def test_load_packs_whole_commands_into_frames():
    link, board = make_link([])
    config = link.config
    # 600 words of 64-bit program entries and a short activation segment.
    asyncio.run(link.load([(Memory.PROGRAM, 0, 0, list(range(600))),
                           (Memory.ACTIVATIONS, 1, 10, [1, 2, 3])]))
    frames = [request[5:-2] for request in board.requests]
    words = [[int.from_bytes(f[i:i + 4], "little") for i in range(0, len(f), 4)] for f in frames]
    assert all(len(w) <= 255 for w in words)
    # Each frame starts with a WRITE_MEM header: no command spans two frames.
    assert all(w[0] >> 28 == 1 for w in words)
    payload = [x for w in words for x in w]
    assert payload.count(0x10000000) + payload.count(0x15010000) >= 3
    assert config.memory_shapes()[Memory.PROGRAM][2] == 64
