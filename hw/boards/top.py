"""Board tops: the accelerator behind a UART on an amaranth-boards platform.

A board is a platform, the accelerator configuration that fits it, where its
UART is and which LEDs it has (docs/fpga.md). The core runs on the board's
own clock (no PLL): the reports say whether timing met it.
"""

import dataclasses

from amaranth.build import Attrs, Pins, Resource, ResourceError, Subsignal
from amaranth.hdl import Elaboratable, Module, ResetInserter, Signal
from amaranth.lib import io

from common.errors import UserError
from hw.boards.link import SerialCore
from hw.config import get_config
from hw.uart import divisor_for

DEFAULT_BAUD = 115200
# Silence inside a request frame before the bridge gives up on it, and the
# longest a frame may make no progress (a core that stopped taking words).
BYTE_TIMEOUT_S = 0.05
STALL_TIMEOUT_S = 1.0
ACTIVITY_S = 0.02
# Status outputs in LED order: a board with fewer LEDs shows the first ones.
LED_SIGNALS = ("busy", "done", "error", "activity")


def _icebreaker():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


def _ulx3s():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


def _orangecrab():
    from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
    platform = OrangeCrabR0_2_85FPlatform()
    # No USB-serial chip on the board: a 3.3 V USB-serial adapter on the
    # Feather header, FPGA transmit on pin 0 and receive on pin 1.
    platform.add_resources([Resource(
        "uart", 0,
        Subsignal("rx", Pins("1", dir="i", conn=("io", 0))),
        Subsignal("tx", Pins("0", dir="o", conn=("io", 0))),
        Attrs(IO_TYPE="LVCMOS33"))])
    return platform


@dataclasses.dataclass(frozen=True)
class Board:
    name: str
    make_platform: object       # () -> amaranth-boards platform
    config: str                 # hw/config.py name
    family: str                 # "ice40" or "ecp5"
    reset_button: str | None    # resource name of a button that resets the design
    description: str

    def platform(self):
        return self.make_platform()


BOARDS = {board.name: board for board in [
    Board("icebreaker", _icebreaker, "ice40", "ice40", "button",
          "1BitSquared iCEBreaker (iCE40UP5K), 12 MHz, UART on the FT2232H's second channel"),
    Board("ulx3s", _ulx3s, "ecp5", "ecp5", None,
          "Radiona ULX3S 85F (LFE5U-85F), 25 MHz, UART on the FT231X (us1)"),
    Board("orangecrab", _orangecrab, "ecp5", "ecp5", None,
          "OrangeCrab r0.2 85F (LFE5U-85F), 48 MHz, UART on Feather pins 0 (TX) and 1 (RX)"),
]}


def get_board(name):
    try:
        return BOARDS[name]
    except KeyError:
        raise UserError(f"no board named {name!r}; choose one of {', '.join(BOARDS)}") from None


class BoardTop(Elaboratable):
    """`SerialCore` on a board's pins: UART, LEDs, an optional reset button."""

    def __init__(self, board, *, config=None, baud=DEFAULT_BAUD):
        self._board = board
        self._config = config or get_config(board.config)
        self._baud = baud

    def elaborate(self, platform):
        m = Module()
        clock_hz = platform.default_clk_frequency
        serial = SerialCore(self._config, divisor=divisor_for(clock_hz, self._baud),
                            byte_timeout=int(clock_hz * BYTE_TIMEOUT_S),
                            stall_timeout=int(clock_hz * STALL_TIMEOUT_S))
        if self._board.reset_button is not None:
            m.submodules.button = button = io.Buffer(
                "i", platform.request(self._board.reset_button, 0, dir="-"))
            m.submodules.serial = ResetInserter(button.i)(serial)
        else:
            m.submodules.serial = serial

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [serial.rx.eq(uart_rx.i), uart_tx.o.eq(serial.tx)]

        # Link activity is stretched to 20 ms so that a frame shows.
        hold = int(clock_hz * ACTIVITY_S)
        stretch = Signal(range(hold + 1))
        with m.If(serial.activity):
            m.d.sync += stretch.eq(hold)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        outputs = {"busy": serial.busy, "done": serial.done, "error": serial.error,
                   "activity": stretch != 0}

        leds = []
        for index in range(len(LED_SIGNALS)):
            try:
                leds.append(platform.request("led", index, dir="-"))
            except ResourceError:
                break
        if not leds:
            try:
                rgb = platform.request("rgb_led", 0, dir="-")
                leds = [rgb.b, rgb.g, rgb.r]      # busy blue, done green, error red
            except ResourceError:
                pass
        for port, name in zip(leds, LED_SIGNALS):
            m.submodules[f"led_{name}"] = led = io.Buffer("o", port)
            m.d.comb += led.o.eq(outputs[name])
        return m
