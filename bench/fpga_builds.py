"""FPGA build figures per board: LUTs, FFs, block RAMs, DSPs, fmax against
the board clock, build time. Builds each board (`mpq fpga bitstream`) unless
`--collect`, which only gathers build/<board>/fpga_report.json; writes
bench/results/fpga_builds.json.

    .venv/bin/python bench/fpga_builds.py [--boards icebreaker ulx3s] [--collect]
"""

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import write_json  # noqa: E402
from hw.boards.build import build_bitstream  # noqa: E402
from sw.errors import UserError  # noqa: E402

KEEP = ("board", "device", "clock_mhz", "luts", "ffs", "logic_cells", "block_rams", "sprams",
        "dsps", "fmax_mhz", "timing_met", "built", "error", "build_seconds", "bitstream")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=["icebreaker", "ulx3s"])
    parser.add_argument("--collect", action="store_true", help="do not build; read the reports")
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
        print(f"{name}: {json.dumps(boards[name])}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"wrote {write_json('fpga_builds', {'boards': boards, 'load_average_1min': load})}")


if __name__ == "__main__":
    main()
