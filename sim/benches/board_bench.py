"""cocotb bench for the board-level top (`hw.boards.link.SerialCore`: core,
frame bridge and UART, without the board's IO buffers).

The host program's own code (`sw/fpga/link.py`, `sw/fpga/cases.py`) runs
here unchanged: only its transport differs. `SimulatedUart` drives the
`rx` line bit by bit at the UART divisor and decodes the `tx` line, so every
command crosses the serial path. It can also damage the traffic (flip a bit
of a request, cut a request short, flip a bit of a reply) to show that bad
frames are refused and the link recovers.

Environment:
  MPQ_BOARD_CASES    JSON: {"config": name, "cases": [...]} (sw/fpga/cases.py)
  MPQ_BOARD_RESULTS  JSON written here: {"results": [...], "stats": {...}, "sim_ns": int}
  MPQ_DIVISOR        UART bit time in clock cycles
  MPQ_BYTE_TIMEOUT   the bridge's byte timeout (cycles), for the link's patience
  MPQ_DAMAGE         comma-separated damages, each KIND@N: "flip@N" flips a bit
                     of request frame N, "cut@N" sends only half of it,
                     "reply@N" flips a bit of the reply to the Nth request
                     that asks for words
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer

from hw.config import get_config
from sw.fpga.cases import run_cases
from sw.fpga.link import Link

PERIOD_NS = 10


class SimulatedUart:
    """A transport (sw/fpga/transport.py) on the simulated UART lines; its
    seconds are simulated seconds."""

    def __init__(self, dut, divisor, damage=()):
        self.dut = dut
        self.bit_ns = divisor * PERIOD_NS
        self.received = bytearray()
        self.arrived = Event()
        self.damage = {}
        for item in damage:
            kind, _, index = item.partition("@")
            self.damage.setdefault(kind, set()).add(int(index))
        self.frames = 0
        self.read_frames = 0
        self.flip_next_reply = False
        self.reply_bytes = 0
        dut.rx.value = 1
        cocotb.start_soon(self._monitor())

    async def write(self, data):
        data = bytearray(data)
        self.frames += 1
        if self.frames in self.damage.get("flip", ()):
            data[len(data) // 2] ^= 0x04
        if self.frames in self.damage.get("cut", ()):
            data = data[:len(data) // 2]
        self.reply_bytes = 0
        if len(data) > 4 and data[4]:
            self.read_frames += 1
            self.flip_next_reply = self.read_frames in self.damage.get("reply", ())
        for byte in data:
            for bit in [0] + [byte >> i & 1 for i in range(8)] + [1]:
                self.dut.rx.value = bit
                await Timer(self.bit_ns, unit="ns")

    async def _monitor(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.tx)
            await Timer(self.bit_ns // 2, unit="ns")
            if int(dut.tx.value):
                continue                      # not a start bit
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, unit="ns")
                byte |= int(dut.tx.value) << i
            await Timer(self.bit_ns, unit="ns")
            if not int(dut.tx.value):
                dut._log.warning("framing error on tx")
            self.reply_bytes += 1
            if self.flip_next_reply and self.reply_bytes == 4:   # a payload byte
                byte ^= 0x01
                self.flip_next_reply = False
            self.received.append(byte)
            self.arrived.set()

    async def read(self, timeout):
        if not self.received and timeout > 0:
            self.arrived.clear()
            await First(self.arrived.wait(), Timer(max(1, round(timeout * 1e9)), unit="ns"))
        data = bytes(self.received)
        self.received.clear()
        return data

    def close(self):
        pass


@cocotb.test()
async def run_over_uart(dut):
    spec = json.load(open(os.environ["MPQ_BOARD_CASES"]))
    config = get_config(spec["config"])
    divisor = int(os.environ["MPQ_DIVISOR"])
    byte_timeout = int(os.environ["MPQ_BYTE_TIMEOUT"])
    damage = [item for item in os.environ.get("MPQ_DAMAGE", "").split(",") if item]
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    dut.rx.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    uart = SimulatedUart(dut, divisor, damage)
    byte_time = 10 * divisor * PERIOD_NS * 1e-9
    link = Link(uart, config, byte_time=byte_time,
                latency=(byte_timeout + 200 * divisor) * PERIOD_NS * 1e-9,
                log=dut._log.info)
    results = await run_cases(link, spec["cases"], wait_timeout=1.0,
                              poll=2000 * PERIOD_NS * 1e-9, log=dut._log.info)
    with open(os.environ["MPQ_BOARD_RESULTS"], "w") as file:
        json.dump({"results": results, "stats": link.stats,
                   "sim_ns": int(cocotb.utils.get_sim_time("ns"))}, file)
