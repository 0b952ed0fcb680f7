"""The serial link's frames (docs/fpga.md, "Protocol"), host side.

The same constants and CRC definition as the bridge (`hw/boards/link.py`),
so the two cannot drift apart. Nothing here does I/O: `encode_request`
builds a request's bytes and `ReplyParser` turns received bytes into
`Reply`s, whatever carries them (a serial port or the simulated UART).
"""

import dataclasses

from hw.boards.link import CRC, FLAG_RESET, MAX_WORDS, REPLY_SYNC, REQUEST_SYNC, STATUS_PINS, LinkStatus

__all__ = ["FLAG_RESET", "MAX_WORDS", "LinkStatus", "Reply", "ReplyParser", "crc16",
           "encode_request", "encode_reply"]

_CRC = CRC(data_width=8)


def crc16(data):
    return _CRC.compute(bytes(data))


def _words_bytes(words):
    out = bytearray()
    for word in words:
        if not 0 <= word <= 0xFFFFFFFF:
            raise ValueError(f"word {word!r} is not a 32-bit unsigned value")
        out += int(word).to_bytes(4, "little")
    return out


def encode_request(seq, words, reply_words=0, *, reset=False):
    """One request frame: `words` for the core's host_in, `reply_words` the
    number of words the core will answer to them."""
    if len(words) > MAX_WORDS or not 0 <= reply_words <= MAX_WORDS:
        raise ValueError(f"a frame carries at most {MAX_WORDS} words each way, got "
                         f"{len(words)} and {reply_words}")
    body = bytes([seq & 0xFF, FLAG_RESET if reset else 0, len(words), reply_words])
    body += _words_bytes(words)
    return bytes([REQUEST_SYNC]) + body + crc16(body).to_bytes(2, "big")


def encode_reply(seq, words, status):
    """A reply frame as the bridge sends it (for tests and a loopback model)."""
    body = bytes([seq & 0xFF, len(words)]) + _words_bytes(words) + bytes([status])
    return bytes([REPLY_SYNC]) + body + crc16(body).to_bytes(2, "big")


@dataclasses.dataclass
class Reply:
    seq: int
    words: list
    status_byte: int
    crc_ok: bool = True

    @property
    def status(self):
        try:
            return LinkStatus(self.status_byte & 7)
        except ValueError:
            return None

    @property
    def pins(self):
        return {name: bool(self.status_byte >> bit & 1) for name, bit in STATUS_PINS.items()}


class ReplyParser:
    """Bytes in, replies out. Bytes before a sync byte are skipped (and
    counted in `skipped`); a reply whose CRC fails comes out with
    `crc_ok = False`."""

    def __init__(self):
        self._buffer = bytearray()
        self.skipped = 0

    def feed(self, data):
        self._buffer += data
        replies = []
        while True:
            start = self._buffer.find(REPLY_SYNC)
            if start < 0:
                self.skipped += len(self._buffer)
                self._buffer.clear()
                return replies
            self.skipped += start
            del self._buffer[:start]
            if len(self._buffer) < 3:
                return replies
            count = self._buffer[2]
            size = 1 + 2 + 4 * count + 1 + 2
            if len(self._buffer) < size:
                return replies
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            body = frame[1:-2]
            words = [int.from_bytes(body[2 + 4 * i:6 + 4 * i], "little") for i in range(count)]
            replies.append(Reply(seq=body[0], words=words, status_byte=body[-1],
                                 crc_ok=crc16(body) == int.from_bytes(frame[-2:], "big")))

    def pending(self):
        """Bytes held for a reply not complete yet."""
        return len(self._buffer)

    def clear(self):
        self._buffer.clear()
