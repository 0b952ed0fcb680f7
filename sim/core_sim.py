"""Run compiled layers on the core's RTL (Verilator or Icarus, through cocotb).

`run_on_rtl` turns each (compiled layer, input) into a case for
`sim/benches/core_bench.py` (the host commands that load it and the memory
ranges holding its output), runs them all in one simulation, and returns per
case the decoded output, the counters and the status the RTL reported.

Building and running are apart: `build_core` builds the core once per
distinct Verilog, and `run_built` runs cases on that build in a work
directory of its own, so that many runs (sim/shards.py) share one build.
"""

import dataclasses
import json
import pathlib
import shutil
import socket
import tempfile

from common.errors import UserError
from hw.isa import Memory
from sim.runner import build, run_tests, source_file
from sim.verilog_cache import design_verilog
from sw import driver
from sw.compile.encoding import map_words_per_bank
from sw.compile.images import host_word_stream
from sw.compile.lower import SlotBits

TOPLEVEL = "core"
PROGRESS_FILE = "progress.txt"


def readback_ranges(compiled):
    """[(mem, bank, start, count)] holding the layer's output."""
    spec, regs, cols = compiled.spec, compiled.registers, compiled.config.cols
    cout, ho, wo = spec.output_shape
    if spec.raw:
        return [(Memory.RESULTS, 0, regs["RES_BASE"], ho * wo * cout)]
    count = map_words_per_bank(ho, wo, cout, cols, SlotBits.of(spec, compiled.config).output)
    return [(Memory.ACTIVATIONS, bank, regs["OUT_BASE"], count) for bank in range(cols)]


def make_case(compiled, x, name, timeout_cycles=None):
    config = compiled.config
    load = driver.load_commands(host_word_stream(compiled.memories(x), config), config)
    expected = compiled.expected_counters["cycles"]
    return {"name": name, "phases": [{"load": load}], "readback": readback_ranges(compiled),
            "timeout_cycles": timeout_cycles or 2 * expected + 1000}


def decode_readback(compiled, readback):
    memories = {Memory.ACTIVATIONS: [dict() for _ in range(compiled.config.cols)],
                Memory.RESULTS: [dict()]}
    for (mem, bank, start, _), entries in zip(readback_ranges(compiled), readback):
        memories[mem][bank].update({start + i: value for i, value in enumerate(entries)})
    return compiled.decode_output(memories)


def core_verilog(config, directory, simulator="verilator"):
    """The core's Verilog for `config`, written once per distinct source
    (generated once per configuration and generator source: see
    sim/verilog_cache.py)."""
    # Verilator takes memories without an initial value, as SRAMs have them;
    # Icarus would then start them at X.
    source = design_verilog(TOPLEVEL, config, zero_memories=simulator != "verilator")
    return source_file(source, directory, config.name, TOPLEVEL)


@dataclasses.dataclass(frozen=True)
class CoreBuild:
    """A built model of the core that any number of runs share, side by
    side or on other machines that see `directory` at the same path."""
    simulator: str
    directory: pathlib.Path
    config: dict          # the configuration, so that unnamed ones (a sweep's) run too
    waves: bool = False
    built: bool = True    # False: an earlier build of the same Verilog was reused


def build_core(config, build_dir="build/sim/core", simulator="verilator", waves=False):
    """Build the core for `config` under `build_dir` (once per distinct
    Verilog; a later call finds it)."""
    build_dir = pathlib.Path(build_dir).resolve()
    source = core_verilog(config, build_dir, simulator)
    directory = source.parent / (f"{simulator}-waves" if waves else simulator)
    built = build(simulator=simulator, sources=[source], toplevel=TOPLEVEL, build_dir=directory,
                  waves=waves)
    return CoreBuild(simulator, directory, dataclasses.asdict(config), waves, built)


def run_built(core, cases, work_dir, *, seed=1, stall=0.2):
    """Run bench cases (see sim/benches/core_bench.py) in one simulation of
    the built `core`, in `work_dir` (created; its own per concurrent run).
    Returns the bench's per-case results. Each case leaves a line in
    work_dir/progress.txt as it finishes (see `finished_cases`)."""
    if not core.directory.is_dir():
        raise UserError(f"{socket.gethostname()}: the core's build {core.directory} is not there; "
                        "a machine running shards must see the build directory at the same path "
                        "(a shared filesystem, docs/sim.md)")
    work_dir = pathlib.Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    cases_path, results_path = work_dir / "cases.json", work_dir / "results.json"
    cases_path.write_text(json.dumps(cases))
    results_path.unlink(missing_ok=True)
    (work_dir / PROGRESS_FILE).unlink(missing_ok=True)
    tests, failures = run_tests(
        simulator=core.simulator, toplevel=TOPLEVEL, bench="sim.benches.core_bench",
        build_dir=core.directory, test_dir=work_dir, waves=core.waves,
        env={"MPQ_CORE_CASES": cases_path, "MPQ_CORE_RESULTS": results_path,
             "MPQ_CORE_PROGRESS": work_dir / PROGRESS_FILE,
             "MPQ_CONFIG_JSON": json.dumps(core.config), "MPQ_SEED": seed, "MPQ_STALL": stall})
    if failures or not results_path.exists():
        raise UserError(f"the RTL simulation failed (a case timed out or the bench stopped): "
                        f"see {work_dir / 'test.log'}")
    return json.loads(results_path.read_text())


def finished_cases(work_dir):
    """[(case name, cycles)] of the cases a run in `work_dir` has finished so
    far (read while it runs, for progress)."""
    try:
        text = (pathlib.Path(work_dir) / PROGRESS_FILE).read_text()
    except OSError:
        return []
    # Only lines that end in a newline: the last one may be half written.
    return [(name, int(cycles)) for name, _, cycles in
            (line.rpartition(" ") for line in text.split("\n")[:-1]) if cycles.isdigit()]


def run_cases(cases, config, *, simulator="verilator", build_dir="build/sim/core", seed=1,
              stall=0.2, waves=False):
    """Build (or reuse) the core and run bench cases in one simulation;
    returns the bench's per-case results."""
    core = build_core(config, build_dir, simulator, waves)
    work_dir = pathlib.Path(tempfile.mkdtemp(prefix="run-", dir=core.directory.parent))
    results = run_built(core, cases, work_dir, seed=seed, stall=stall)
    # Only a run that went well is cleared away: a failed one's error names its log.
    shutil.rmtree(work_dir, ignore_errors=True)
    return results


def run_on_rtl(layers, config, **options):
    """`layers`: [(compiled layer, x, name)], one case each. Returns per case:
    name, output (np array), counters, status, wait_cycles, timings."""
    cases = [make_case(compiled, x, name) for compiled, x, name in layers]
    results = run_cases(cases, config, **options)
    for result, (compiled, _, _) in zip(results, layers):
        result["output"] = decode_readback(compiled, result["readback"])
    return results
