"""FPGA build figures per board: LUTs, FFs, block RAMs, DSPs, fmax against
the board clock, build time. Builds each board (`mpq fpga bitstream`) unless
`--collect`, which only gathers build/<board>/fpga_report.json; writes
bench/results/fpga_builds.json.

`--breakdown` adds, per board, where the cells go: the build's `top.il`
synthesised again without flattening (Yosys `stat` per module; `abc -lut 4`
stands in for ABC9, which YoWASP Yosys 0.70 exits on for the unflattened
design), so figures are per module before cross-module optimisation and sum
to a little more than the flat build's.

    .venv/bin/python bench/fpga_builds.py [--boards icebreaker ulx3s] [--collect] [--breakdown]
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import write_json  # noqa: E402
from common.errors import UserError  # noqa: E402
from hw.boards.build import ICE40_NO_COLLISION_SCRIPT, build_bitstream, tool_environment  # noqa: E402
from hw.counters import COUNTER_WIDTH  # noqa: E402

KEEP = ("board", "device", "clock_mhz", "luts", "ffs", "logic_cells", "block_rams", "sprams",
        "dsps", "fmax_mhz", "timing_met", "built", "error", "build_seconds", "bitstream")


# The iCE40 flow of hw/boards/build.py with the hierarchy kept; map_luts by hand.
HIERARCHY_SCRIPT = {"ice40": f"""read_rtlil top.il
{ICE40_NO_COLLISION_SCRIPT}
synth_ice40 -dsp -top top -noflatten -run begin:map_luts
techmap -map +/ice40/latches_map.v
abc -lut 4 -dress
ice40_wrapcarry -unwrap
techmap -map +/ice40/ff_map.v
clean
opt_lut -tech ice40
synth_ice40 -dsp -top top -noflatten -run map_cells:
tee -q -o breakdown_stat.txt stat
"""}
CELL_KINDS = {"luts": ("SB_LUT4",), "carries": ("SB_CARRY",), "dsps": ("SB_MAC16",),
              "block_rams": ("SB_RAM40_4K",), "ffs": ("SB_DFF",)}


def breakdown(directory, family):
    """Cells per block of the build in `directory`: each submodule of the core
    (top.serial.core.engine; top.serial.core.array holds all the PEs'), the
    core's own cells (top.serial.core), each part of the serial top
    (top.serial.bridge with its CRCs, top.serial.uart_rx) and the board's."""
    if family not in HIERARCHY_SCRIPT or not (directory / "top.il").exists():
        return None
    (directory / "breakdown.ys").write_text(HIERARCHY_SCRIPT[family])
    env = tool_environment()
    subprocess.run([env["YOSYS"], "-q", "breakdown.ys"], cwd=directory, check=True,
                   capture_output=True, env=env)
    modules, current = {}, None
    for line in (directory / "breakdown_stat.txt").read_text().splitlines():
        header = re.match(r"=== (.+) ===", line)
        if header:
            current = None if " " in header[1] else header[1]    # "design hierarchy": totals
            continue
        cell = re.match(r"\s+(\d+)\s+(SB_\w+)", line)
        if current and cell:
            parts = current.split(".")
            block = ".".join(parts[:4] if parts[:3] == ["top", "serial", "core"] else parts[:3])
            counts = modules.setdefault(block, dict.fromkeys(CELL_KINDS, 0))
            for kind, prefixes in CELL_KINDS.items():
                if cell[2].startswith(prefixes):
                    counts[kind] += int(cell[1])
    return {name: counts for name, counts in sorted(modules.items()) if any(counts.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s"])
    parser.add_argument("--collect", action="store_true", help="do not build; read the reports")
    parser.add_argument("--breakdown", action="store_true",
                        help="also synthesise each build's top.il per module (iCE40 only)")
    args = parser.parse_args()
    boards = {}
    for name in args.boards:
        directory = pathlib.Path("build") / name
        if not args.collect:
            try:
                build_bitstream(name, directory)
            except UserError as error:
                print(error, file=sys.stderr)
        path = directory / "fpga_report.json"
        if not path.exists():
            print(f"{name}: no {path}", file=sys.stderr)
            continue
        report = json.loads(path.read_text())
        boards[name] = {key: report.get(key) for key in KEEP}
        boards[name]["config"] = {key: report["config"][key]
                                  for key in ("name", "rows", "cols", "acc_width")}
        # Reports from before the option was built with 48-bit counters.
        boards[name]["config"]["counter_width"] = report["config"].get("counter_width",
                                                                       COUNTER_WIDTH)
        if "options" in report["config"]:
            boards[name]["config"]["options"] = report["config"]["options"]
        found = breakdown(directory, report["family"]) if args.breakdown else None
        if found:
            boards[name]["breakdown"] = found
        print(f"{name}: {json.dumps(boards[name])}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"wrote {write_json('fpga_builds', {'boards': boards, 'load_average_1min': load})}")


if __name__ == "__main__":
    main()
