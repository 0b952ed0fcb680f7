"""Run compiled layers on the core's RTL (Verilator or Icarus, through cocotb).

`run_on_rtl` turns each (compiled layer, input) into a case for
`sim/benches/core_bench.py` (the host commands that load it and the memory
ranges holding its output), runs them all in one simulation, and returns per
case the decoded output, the counters and the status the RTL reported.
"""

import dataclasses
import json
import pathlib

from common.errors import UserError
from hw.core import Core
from hw.generate import to_verilog
from hw.isa import Memory
from sim.runner import run_bench, source_file
from sw import driver
from sw.compile.encoding import map_words_per_bank
from sw.compile.images import host_word_stream

TOPLEVEL = "core"


def readback_ranges(compiled):
    """[(mem, bank, start, count)] holding the layer's output."""
    spec, regs, cols = compiled.spec, compiled.registers, compiled.config.cols
    cout, ho, wo = spec.output_shape
    if spec.raw:
        return [(Memory.RESULTS, 0, regs["RES_BASE"], ho * wo * cout)]
    count = map_words_per_bank(ho, wo, cout, cols)
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
    """The core's Verilog for `config`, written once per distinct source."""
    source = to_verilog(Core(config), TOPLEVEL, zero_memories=simulator != "verilator")
    return source_file(source, directory, config.name, TOPLEVEL)


def run_cases(cases, config, *, simulator="verilator", build_dir="build/sim/core", seed=1,
              stall=0.2, waves=False):
    """Run bench cases (see sim/benches/core_bench.py) in one simulation;
    returns the bench's per-case results."""
    build_dir = pathlib.Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    source = core_verilog(config, build_dir, simulator)
    cases_path = build_dir / "cases.json"
    results_path = build_dir / "results.json"
    cases_path.write_text(json.dumps(cases))
    results_path.unlink(missing_ok=True)
    tests, failures = run_bench(simulator=simulator, sources=[source], toplevel=TOPLEVEL,
              bench="sim.benches.core_bench", build_dir=source.parent / simulator,
              waves=waves,
              env={"MPQ_CORE_CASES": cases_path, "MPQ_CORE_RESULTS": results_path,
                   # The whole configuration, so unnamed ones (a sweep's) run too.
                   "MPQ_CONFIG_JSON": json.dumps(dataclasses.asdict(config)),
                   "MPQ_SEED": seed, "MPQ_STALL": stall})
    if failures or not results_path.exists():
        log = source.parent / simulator / "test.log"
        raise UserError(f"the RTL simulation failed (a case timed out or the bench stopped): "
                        f"see {log}")
    return json.loads(results_path.read_text())


def run_on_rtl(layers, config, **options):
    """`layers`: [(compiled layer, x, name)], one case each. Returns per case:
    name, output (np array), counters, status, wait_cycles, timings."""
    cases = [make_case(compiled, x, name) for compiled, x, name in layers]
    results = run_cases(cases, config, **options)
    for result, (compiled, _, _) in zip(results, layers):
        result["output"] = decode_readback(compiled, result["readback"])
    return results
