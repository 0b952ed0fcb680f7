"""`mpq demo`: the main job on the embedded default.

What exists so far is the PE, so the demo generates the accelerator's Verilog,
runs the fused and the fixed PE on random operands and random mode sequences
in Verilator (cocotb), checks every cycle bit for bit against the numpy
reference, and writes a report. The training, compiler and whole-network
steps join this command as they are built (see README, "Status").
"""

import json
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import time

from tqdm import tqdm

from hw.config import get_config
from hw.generate import write_verilog
from sim.runner import run_bench

NOT_BUILT_YET = [
    "quantization-aware and mixed-precision retraining (sw/quantize)",
    "integer export and reference model",
    "systolic array, memories, controller (hw/array, hw/)",
    "compiler (sw/compile)",
    "whole-network RTL simulation, energy model, FPGA bring-up",
]


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_demo(out_dir, config_name="default", cycles=20000, seed=1):
    config = get_config(config_name)
    out_dir = pathlib.Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent)).resolve()
    started = time.perf_counter()
    try:
        steps = tqdm(total=3, desc="demo", unit="step")
        steps.set_postfix_str("generating Verilog")
        sources = write_verilog(config, staging / "verilog")
        steps.update()
        runs = {}
        for toplevel, testcase in (("fused_pe", "fused_pe_random"), ("fixed_pe", "fixed_pe_random")):
            steps.set_postfix_str(f"{toplevel}: {cycles} random cycles in Verilator")
            summary_path = staging / f"{toplevel}.json"
            tests, failures = run_bench(
                simulator="verilator", sources=[staging / "verilog" / f"{toplevel}.v"],
                toplevel=toplevel, bench="sim.benches.pe_bench", testcase=testcase,
                build_dir=staging / "sim" / toplevel,
                env={"MPQ_PE_SAMPLES": cycles, "MPQ_SEED": seed,
                     "MPQ_BENCH_REPORT": summary_path})
            runs[toplevel] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
            runs[toplevel]["cocotb_tests"] = tests
            runs[toplevel]["cocotb_failures"] = failures
            summary_path.unlink(missing_ok=True)
            steps.update()
        steps.close()

        bit_exact = all(run["cocotb_failures"] == 0 and run.get("mismatches") == 0
                        for run in runs.values())
        report = {
            "command": f"mpq demo --out {out_dir}",
            "revision": git_revision(),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
            "config": config_name,
            "seed": seed,
            "bit_exact": bit_exact,
            "simulator": "verilator",
            "pe_runs": runs,
            "wall_s": time.perf_counter() - started,
            "not_built_yet": NOT_BUILT_YET,
        }
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "report.md").write_text(markdown(report))
        shutil.rmtree(staging / "sim")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def markdown(report):
    lines = [
        "# mpq demo",
        "",
        f"Revision {report['revision']}, configuration `{report['config']}`, "
        f"seed {report['seed']}, {report['wall_s']:.1f} s.",
        "",
        f"**Bit-exact: {'yes' if report['bit_exact'] else 'NO'}** "
        f"(every cycle's accumulator against the numpy reference, in {report['simulator']}).",
        "",
        "| PE | cycles | mismatches | MACs W4A4 | W4A2 | W2A4 | W2A2 | sim cycles/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, run in report["pe_runs"].items():
        macs = run.get("macs_per_mode", {})
        lines.append(f"| {name} | {run.get('cycles')} | {run.get('mismatches')} | "
                     + " | ".join(str(macs.get(mode, 0)) for mode in ("W4A4", "W4A2", "W2A4", "W2A2"))
                     + f" | {run.get('cycles_per_s', 0):,.0f} |")
    lines += ["", "Not built yet:", ""] + [f"- {item}" for item in report["not_built_yet"]]
    return "\n".join(lines) + "\n"


def _run(args):
    report = run_demo(args.out, args.config, args.cycles, args.seed)
    print((pathlib.Path(args.out) / "report.md").read_text())
    return 0 if report["bit_exact"] else 1


def register(subparsers):
    parser = subparsers.add_parser("demo", help="the main job on the embedded default")
    parser.add_argument("--out", default="build/demo", help="output directory")
    parser.add_argument("--config", default="default", help="named configuration (hw/config.py)")
    parser.add_argument("--cycles", type=int, default=20000, help="random cycles per PE")
    parser.add_argument("--seed", type=int, default=1)
    parser.set_defaults(run=_run)
