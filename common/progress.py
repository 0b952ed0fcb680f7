"""Progress that a person can follow, on a terminal and in a log alike.

On a terminal: a tqdm bar, redrawn in place. Anywhere else (CI, `| tee`,
nohup, a notebook's captured stream) tqdm's in-place redraws are carriage
returns, not lines: a line-buffered reader sees nothing until the work ends,
so there a newline-terminated line is written every `LINE_INTERVAL` seconds
instead. In both cases a background thread keeps the report moving, so a
long stretch with no update (a Verilator build, one slow epoch) still shows
its elapsed time and its status rather than looking hung.
"""

import sys
import threading
import time

from tqdm import tqdm

# A line at least this often when the stream is not a terminal: half of the
# ten seconds after which a silent command looks hung.
LINE_INTERVAL = 5.0
# How often a terminal bar is redrawn when nothing updates it.
REDRAW_INTERVAL = 1.0


class Progress:
    """`total` steps of `unit` (None: unknown), with a free-text `status`.

    Use as a context manager, or call `close()`. Writes to `file` (default
    stderr), as a terminal's bar if it is one (`terminal` overrides), else a
    line every `interval` seconds (default `LINE_INTERVAL`) and one when it
    closes. `leave=False` removes a terminal bar when it closes, and writes
    no last line elsewhere (for a caller that prints its own summary).
    `bar_format` as tqdm's, for both the bar and the lines."""

    def __init__(self, desc, total=None, unit="it", *, file=None, interval=None,
                 terminal=None, leave=True, bar_format=None):
        self._file = file if file is not None else sys.stderr
        if terminal is None:
            terminal = bool(getattr(self._file, "isatty", lambda: False)())
        self._desc, self._total, self._unit = desc, total, unit
        if bar_format is None and total is None:   # no count to show: what and how long
            bar_format = "{desc} [{elapsed}{postfix}]"
        self._leave, self._format = leave, bar_format
        self._n, self._status = 0, ""
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._bar = None
        if terminal:
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._file,
                             dynamic_ncols=True, leave=leave, bar_format=bar_format)
        self._thread = threading.Thread(
            target=self._keep_moving,
            args=(REDRAW_INTERVAL if terminal else interval or LINE_INTERVAL,),
            name=f"progress: {desc}", daemon=True)
        self._thread.start()

    def update(self, n=1):
        with self._lock:
            self._n += n
            if self._bar is not None:
                self._bar.update(n)

    def status(self, text):
        """Replace the free text shown after the count (what is happening now)."""
        with self._lock:
            self._status = text
            if self._bar is not None:
                self._bar.set_postfix_str(text, refresh=False)

    def line(self):
        """The state as one line of text (no bar, no carriage return)."""
        with self._lock:
            # ncols=0: tqdm's format without a bar (it then ignores bar_format).
            return tqdm.format_meter(self._n, self._total, time.monotonic() - self._started,
                                     ncols=None if self._format else 0, prefix=self._desc,
                                     unit=self._unit,
                                     postfix=self._status or None, bar_format=self._format)

    def close(self):
        if self._done.is_set():
            return
        self._done.set()
        self._thread.join()
        if self._bar is not None:
            self._bar.close()
        elif self._leave:
            self._write_line()

    def _keep_moving(self, period):
        while not self._done.wait(period):
            if self._bar is not None:
                with self._lock:
                    self._bar.refresh()
            else:
                self._write_line()

    def _write_line(self):
        try:
            self._file.write(self.line() + "\n")
            self._file.flush()
        except (OSError, ValueError):
            pass   # a closed or broken stream must not stop the work it reports on

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
