"""Progress reaches a person whether or not the output is a terminal: lines
that end in a newline, while the work runs, also when nothing updates it."""

import io
import os
import subprocess
import sys
import time

from common.progress import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_log_gets_whole_lines_while_nothing_updates():
    out = io.StringIO()
    with Progress("work", total=10, unit="image", file=out, interval=0.1) as progress:
        progress.status("building")
        time.sleep(0.55)       # a long step with no update
        progress.update(4)
        progress.status("4 done")
        time.sleep(0.25)
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) >= 6
    assert sum("building" in line for line in lines) >= 4
    assert lines[-1].startswith("work:") and "4/10" in lines[-1] and "4 done" in lines[-1]


def test_lines_reach_a_pipe_as_they_happen():
    """A reader of a pipe (CI, `| tee`) sees a line long before the work ends."""
    child = ("import time; from common.progress import Progress\n"
             "with Progress('slow', interval=0.2) as p:\n"
             "    p.status('waiting'); time.sleep(5)\n")
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stderr=subprocess.PIPE,
                               text=True)
    try:
        first = process.stderr.readline()
        assert time.monotonic() - started < 4 and process.poll() is None
        assert first.startswith("slow [") and "waiting" in first and first.endswith("\n")
    finally:
        process.kill()
        process.wait()


def test_unknown_totals_show_elapsed_time_and_no_count():
    out = io.StringIO()
    with Progress("mpq sim", file=out, interval=0.05) as progress:
        progress.status("building the core")
        time.sleep(0.12)
    assert out.getvalue().splitlines()[-1] == "mpq sim [00:00, building the core]"


def test_leave_false_writes_no_last_line_and_a_terminal_gets_a_bar():
    out = io.StringIO()
    with Progress("epoch 1/2", total=3, file=out, interval=10, leave=False) as progress:
        progress.update(3)
    assert out.getvalue() == ""
    out = io.StringIO()
    with Progress("epoch 1/2", total=3, file=out, terminal=True) as progress:
        progress.update(3)
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()
