#!/usr/bin/env python3
"""How long `mpq ... --help` takes, beside the time to import torch (what every
command paid before its parsers stopped importing it). The target: every
command's help in under 0.5 s.

    .venv/bin/python bench/cli_start.py [--repeat 5]

Writes bench/results/cli_start.json. Each figure is the median wall time of
`--repeat` fresh processes; the ratio to `python -c "import torch"` measured
in the same run is what survives a noisy machine.
"""

import argparse
import pathlib
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import write_json  # noqa: E402

COMMANDS = [[], ["demo"], ["verilog"], ["lint"], ["train"], ["export"], ["eval"], ["compile"],
            ["sim"], ["report"], ["fpga"], ["fpga", "bitstream"], ["fpga", "run"]]
TARGET_S = 0.5


def _median_seconds(argv, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, cwd=HERE.parent, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    python = [sys.executable]
    baseline = {"python_startup_s": _median_seconds(python + ["-c", "pass"], args.repeat),
                "import_torch_s": _median_seconds(python + ["-c", "import torch"], args.repeat)}
    helps = {}
    for command in COMMANDS:
        name = " ".join(["mpq"] + command + ["--help"])
        helps[name] = _median_seconds(python + ["-m", "sw.cli"] + command + ["--help"], args.repeat)
        print(f"{name:32s} {helps[name]:.3f} s", flush=True)
    slowest = max(helps.values())
    path = write_json("cli_start", {
        "repeat": args.repeat, "target_s": TARGET_S, **baseline, "help_s": helps,
        "slowest_help_s": slowest, "all_under_target": slowest < TARGET_S,
        "slowest_help_over_import_torch": slowest / baseline["import_torch_s"]})
    print(f"slowest --help {slowest:.3f} s (target {TARGET_S} s); import torch alone "
          f"{baseline['import_torch_s']:.3f} s; wrote {path}")


if __name__ == "__main__":
    main()
