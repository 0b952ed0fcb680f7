"""The board top in simulation: `SerialCore` (core, frame bridge, UART) in
Verilator under cocotb, with the host program's link code talking to it bit
by bit over the UART lines (`sim/benches/board_bench.py`).

The UART divisor is shortened (8 cycles a bit instead of 104 at 115200
baud and 12 MHz) so that a simulation takes seconds; the logic is the same.
"""

import json
import pathlib

from hw.boards.link import SerialCore
from hw.generate import to_verilog

TOPLEVEL = "serial_core"
SIM_DIVISOR = 8
# The bridge gives up on a frame after 64 byte times of silence.
SIM_BYTE_TIMEOUT = 640 * SIM_DIVISOR
SIM_STALL_TIMEOUT = 1 << 16


def board_verilog(config, directory, *, divisor=SIM_DIVISOR):
    from sim.runner import source_file
    design = SerialCore(config, divisor=divisor, byte_timeout=SIM_BYTE_TIMEOUT,
                        stall_timeout=SIM_STALL_TIMEOUT)
    source = to_verilog(design, TOPLEVEL, zero_memories=False)
    return source_file(source, directory, config.name, TOPLEVEL)


def run_on_simulated_board(cases, config, *, build_dir="build/sim/board", divisor=SIM_DIVISOR,
                           damage=(), waves=False):
    """Run `cases` (sw/fpga/cases.py) over the simulated serial link.
    Returns {"results": [...], "stats": link statistics, "sim_ns": simulated time}."""
    from sim.runner import run_bench
    build_dir = pathlib.Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    source = board_verilog(config, build_dir, divisor=divisor)
    cases_path = build_dir / "board_cases.json"
    results_path = build_dir / "board_results.json"
    cases_path.write_text(json.dumps({"config": config.name, "cases": cases}))
    results_path.unlink(missing_ok=True)
    run_bench(simulator="verilator", sources=[source], toplevel=TOPLEVEL,
              bench="sim.benches.board_bench", build_dir=source.parent / "verilator",
              waves=waves,
              env={"MPQ_BOARD_CASES": cases_path, "MPQ_BOARD_RESULTS": results_path,
                   "MPQ_DIVISOR": divisor, "MPQ_BYTE_TIMEOUT": SIM_BYTE_TIMEOUT,
                   "MPQ_DAMAGE": ",".join(damage)})
    if not results_path.exists():
        raise RuntimeError(f"the board bench wrote no results; see {source.parent}/verilator/test.log")
    return json.loads(results_path.read_text())
