"""Simulation speed of the fused PE: Amaranth's simulator, Verilator, Icarus.

Each simulator runs the same kind of work: a random mode and random operands
on every cycle, driven from Python, result checked. Writes
bench/results/sim_speed.json.

    .venv/bin/python bench/sim_speed.py [--cycles 50000]

These figures are for a testbench that drives every cycle from Python, the
slow way; whole-network simulations preload memories instead.
"""

import argparse
import json
import os
import pathlib
import random
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# Verilator from the venv even when PATH does not have it.
os.environ["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                      os.environ.get("PATH", "")])

from amaranth.sim import Simulator  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import write_json  # noqa: E402
from hw.config import get_config  # noqa: E402
from hw.generate import designs, to_verilog  # noqa: E402
from hw.pe import FusedPE, PeMode, pack_activations, pack_weights  # noqa: E402
from hw.pe.modes import activation_range, weight_range  # noqa: E402
from sim.runner import run_bench  # noqa: E402


def amaranth_speed(cycles):
    pe = FusedPE(acc_width=24)
    rng = random.Random(1)
    stimulus = []
    for _ in range(cycles):
        mode = rng.choice(list(PeMode))
        low, high = weight_range(mode.weight_bits)
        weights = [rng.randint(low, high) for _ in range(mode.lanes)]
        acts = [rng.randint(*activation_range(mode.activation_bits)) for _ in range(mode.lanes)]
        stimulus.append((mode, pack_weights(mode, weights), pack_activations(mode, acts),
                         sum(w * a for w, a in zip(weights, acts))))
    sim = Simulator(pe)
    sim.add_clock(1e-6)
    errors = 0

    async def testbench(ctx):
        nonlocal errors
        ctx.set(pe.enable, 1)
        ctx.set(pe.first, 1)
        for mode, w, a, expected in stimulus:
            ctx.set(pe.mode, mode)
            ctx.set(pe.weights.as_value(), w)
            ctx.set(pe.activations.as_value(), a)
            await ctx.tick()
            errors += ctx.get(pe.psum_out) != expected

    sim.add_testbench(testbench)
    start = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - start
    return {"cycles": cycles, "wall_s": wall, "cycles_per_s": cycles / wall, "mismatches": errors}


def hdl_speed(simulator, cycles):
    with tempfile.TemporaryDirectory() as work:
        work = pathlib.Path(work)
        source = work / "fused_pe.v"
        source.write_text(to_verilog(designs()["fused_pe"](get_config("default")), "fused_pe"))
        start = time.perf_counter()
        run_bench(simulator=simulator, sources=[source], toplevel="fused_pe",
                  bench="sim.benches.pe_bench", testcase="fused_pe_random",
                  build_dir=work / "build",
                  env={"MPQ_PE_SAMPLES": cycles, "MPQ_BENCH_REPORT": work / "summary.json"})
        total = time.perf_counter() - start
        summary = json.loads((work / "summary.json").read_text())
    return {"cycles": cycles, "wall_s": summary["wall_s"], "cycles_per_s": summary["cycles_per_s"],
            "build_and_run_s": total, "mismatches": summary["mismatches"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50000)
    args = parser.parse_args()
    results = {}
    for name in tqdm(["amaranth", "verilator", "icarus"], desc="simulators"):
        results[name] = amaranth_speed(args.cycles) if name == "amaranth" else hdl_speed(name, args.cycles)
    path = write_json("sim_speed", {"design": "fused_pe", "driven_from_python_every_cycle": True,
                                    "simulators": results})
    print(f"wrote {path}")
    for name, row in results.items():
        print(f"{name:10s} {row['cycles_per_s']:>10,.0f} cycles/s  mismatches {row['mismatches']}")


if __name__ == "__main__":
    main()
