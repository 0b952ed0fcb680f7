"""Byte transports for the serial link: a real serial port (termios, no
pyserial), and the interface the simulated board implements
(`sim/benches/board_bench.py`).

A transport has two coroutines, `write(data)` and `read(timeout)` (returns
the bytes that arrived, possibly none, waiting at most `timeout` seconds for
the first), and `close()`. The link code (`sw/fpga/link.py`) is written
against these only, so the same code runs on the board and in simulation.
"""

import os
import select
import time

from common.errors import UserError

BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
              1000000, 1152000, 1500000, 2000000, 2500000, 3000000)


class SerialPort:
    """A POSIX serial port in raw mode, 8N1, no flow control."""

    def __init__(self, path, baud):
        import termios
        constant = getattr(termios, f"B{baud}", None)
        if constant is None:
            raise UserError(f"baud rate {baud} is not supported by this system's termios; "
                            f"choose one of {', '.join(map(str, BAUD_RATES))}")
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as error:
            raise UserError(f"cannot open serial port {path}: {error.strerror}") from None
        attrs = termios.tcgetattr(self._fd)
        iflag, oflag, cflag, lflag = 0, 1, 2, 3
        attrs[iflag] = 0
        attrs[oflag] = 0
        attrs[lflag] = 0
        attrs[cflag] = termios.CS8 | termios.CREAD | termios.CLOCAL
        attrs[4] = attrs[5] = constant           # ispeed, ospeed
        attrs[6][termios.VMIN] = 0
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        termios.tcflush(self._fd, termios.TCIOFLUSH)
        self.path = path
        self.baud = baud

    async def write(self, data):
        view = memoryview(bytes(data))
        while view:
            select.select([], [self._fd], [], 1.0)
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                continue
            view = view[written:]

    async def read(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._fd], [], [], max(0.0, left))
            if ready:
                try:
                    return os.read(self._fd, 4096)
                except BlockingIOError:
                    pass
            if left <= 0:
                return b""

    def close(self):
        os.close(self._fd)
