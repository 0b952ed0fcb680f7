"""The host side of the serial link (docs/fpga.md): frames with retries,
memory and register commands, start and wait, and running compiled cases.

`Link` is written against a transport (`sw/fpga/transport.py`): a serial
port on a board, the simulated UART in `sim/benches/board_bench.py`. Its
methods are coroutines so that the simulation can run the very same code
under cocotb; on a board they run under `asyncio.run` and never suspend.
"""


from common.errors import UserError
from hw.isa import HostRegister
from sw import driver
from sw.fpga.protocol import MAX_WORDS, LinkStatus, ReplyParser, encode_request


class LinkError(UserError):
    pass


class Link:
    """Framed commands over `transport`.

    A frame is retried (up to `retries` times) when its reply is missing,
    corrupted or a refusal (BAD_CRC, BAD_LENGTH, TIMEOUT); before a retry the
    link waits until the line has been quiet for `quiet` seconds. A STALLED
    reply raises: the core stopped taking words, so the host resets it.
    `byte_time` is the seconds one byte takes on the wire, `latency` the
    extra seconds a reply may take (USB and OS buffering).
    """

    def __init__(self, transport, config, *, byte_time, latency, retries=3, log=None):
        self.transport = transport
        self.config = config
        self.byte_time = byte_time
        self.latency = latency
        self.retries = retries
        self.log = log or (lambda message: None)
        self.parser = ReplyParser()
        self.sequence = 0
        self.stats = {"frames": 0, "retries": 0, "bytes_sent": 0, "bytes_received": 0,
                      "refused": {}}

    # ---------------------------------------------------------------- frames
    async def transact(self, words, reply_words=0, *, reset=False):
        """Send one frame; return its `Reply` (status OK)."""
        for attempt in range(self.retries + 1):
            self.sequence = (self.sequence + 1) & 0xFF
            frame = encode_request(self.sequence, words, reply_words, reset=reset)
            await self.transport.write(frame)
            self.stats["frames"] += 1
            self.stats["bytes_sent"] += len(frame)
            timeout = self.latency + 2 * self.byte_time * (len(frame) + 4 * reply_words + 6)
            reply = await self._receive(self.sequence, timeout)
            if reply is not None and reply.status is LinkStatus.OK:
                if len(reply.words) != reply_words:
                    raise LinkError(f"reply of {len(reply.words)} words, expected {reply_words}")
                return reply
            if reply is not None and reply.status is LinkStatus.STALLED:
                raise LinkError("the core stopped taking words (STALLED); reset it "
                                "(mpq fpga run resets before every case)")
            what = ("no reply" if reply is None else
                    f"reply refused the frame ({reply.status.name if reply.status else reply.status_byte})")
            name = "NO_REPLY" if reply is None else str(reply.status and reply.status.name)
            self.stats["refused"][name] = self.stats["refused"].get(name, 0) + 1
            self.stats["retries"] += 1
            self.log(f"frame {self.sequence}: {what}; attempt {attempt + 1} of {self.retries + 1}")
            await self._drain()
        raise LinkError(f"no good reply after {self.retries + 1} attempts; is the board "
                        f"programmed and the baud rate right?")

    async def _receive(self, seq, timeout):
        """The reply to `seq` (or a refusal), or None: nothing within
        `timeout` seconds, or a reply whose CRC failed."""
        waited = 0.0
        step = max(self.byte_time * 64, 1e-6)
        while waited < timeout:
            wait = min(step, timeout - waited)
            data = await self.transport.read(wait)
            if not data:
                waited += wait
                continue
            self.stats["bytes_received"] += len(data)
            for reply in self.parser.feed(data):
                if not reply.crc_ok:
                    self.log("reply with a bad CRC")
                    return None
                if reply.seq == seq:
                    return reply
                # A late refusal of an earlier attempt, or a refusal whose
                # sequence byte was itself corrupted: not this frame's.
                self.log(f"reply to frame {reply.seq} ({reply.status and reply.status.name}) "
                         f"while waiting for {seq}: dropped")
        return None

    async def _drain(self):
        """Read until the line is quiet, and forget any partial reply."""
        quiet = self.latency + 32 * self.byte_time
        while await self.transport.read(quiet):
            pass
        self.parser.clear()

    # ---------------------------------------------------------------- commands
    async def ping(self, *, reset=False):
        """An empty frame: the reply carries the core's pins."""
        return (await self.transact([], 0, reset=reset)).pins

    async def reset(self):
        """Reset the core (its registers and host interface; memories keep
        their contents)."""
        return await self.ping(reset=True)

    async def load(self, segments):
        """Write memory segments `[(mem, bank, start, words)]` (the compiler's
        `host_word_stream`), packed into frames of whole commands."""
        shapes = self.config.memory_shapes()
        frame = []
        for mem, bank, start, words in segments:
            per_entry = driver.words_per_entry(shapes[mem][2])
            entries_per_command = (MAX_WORDS - 3) // per_entry
            for offset in range(0, len(words) // per_entry, entries_per_command):
                chunk = words[offset * per_entry:(offset + entries_per_command) * per_entry]
                command = driver.load_commands([(mem, bank, start + offset, chunk)], self.config)
                if len(frame) + len(command) > MAX_WORDS:
                    await self.transact(frame)
                    frame = []
                frame += command
        if frame:
            await self.transact(frame)

    async def read_memory(self, mem, bank, start, count):
        """`count` entries (integers) of memory `mem`, bank `bank`."""
        width = self.config.memory_shapes()[mem][2]
        per_entry = driver.words_per_entry(width)
        step = MAX_WORDS // per_entry
        entries = []
        for offset in range(0, count, step):
            n = min(step, count - offset)
            reply = await self.transact(driver.read_memory(mem, bank, start + offset, n),
                                        n * per_entry)
            entries += driver.entries_from_words(reply.words, width)
        return entries

    async def write_register(self, register, value):
        await self.transact(driver.write_register(register, value))

    async def read_register(self, register):
        return (await self.transact(driver.read_register(register), 1)).words[0]

    async def start(self):
        await self.transact(driver.start_command())

    async def status(self):
        return driver.decode_status(await self.read_register(HostRegister.STATUS))

    async def counters(self):
        commands = driver.counter_commands()
        reply = await self.transact(commands, len(commands))
        return driver.decode_counters(reply.words)

    async def wait(self, timeout, poll):
        """Poll until the core is done; returns the pins. `poll` is the pause
        between polls, `timeout` the longest wait (seconds of the transport)."""
        waited = 0.0
        while True:
            pins = await self.ping()
            if pins["done"] and not pins["busy"]:
                return pins
            if waited > timeout:
                raise LinkError(f"the core is still busy after {timeout:g} s")
            await self.transport.read(poll)   # (a pause: nothing is due on the line)
            waited += poll
