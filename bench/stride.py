"""Stride-2 convolutions against stride 1 of the same shape.

The down-sampling convolutions of ResNet-8 (MLPerf Tiny) and ResNet-20
(3x3 stride 2 padding 1, and the 1x1 stride-2 projections), and an odd-sized
one, each compiled at stride 1 and at stride 2 (same input size, channels,
kernel and padding) for every PE precision, on the 8x8 and 16x16 arrays.
Utilisation is ideal cycles (useful MACs over the array's peak MACs per
cycle at the precision) over cycles, so the ratio of the two strides'
utilisations is the ratio of their cycles per output MAC. Where stride 2's
output row is narrower than the array (8 pixels on 16 columns) columns
idle at any stride, so each row also has a stride-1 layer with stride 2's
output size (`stride1_same_output`: input as large as stride 2's output,
same padding) to compare with. Cycles are the
golden model's, which the RTL regression holds equal to the RTL's on every
counter; `--rtl` also runs the 8x8 layers on Verilator and records the
RTL's cycles beside them.

For the alternative that was not built (the activation map in column
order and a fetcher reading a stride-2 chunk's two pixels per bank in two
cycles each, 8 read cycles a chunk instead of 4), `two_reads_cycles` is the
same schedule with each chunk's fetch 4 cycles longer: the first chunk of a
round waits 4 more cycles, a later chunk waits `8 - steps` more when the
chunk before it is shorter than its fetch.

Writes bench/results/stride.json and stride.md.

    .venv/bin/python bench/stride.py [--configs default large] [--rtl]
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import RESULTS, write_json  # noqa: E402
from common.files import write_atomically  # noqa: E402
from hw.config import get_config  # noqa: E402
from hw.isa import CHUNK_ACT_WORDS, GROUP_SIZE  # noqa: E402
from hw.pe import PeMode  # noqa: E402
from sw.compile import LayerSpec, compile_layer, run_golden  # noqa: E402
from sw.quantize.groups import group_shape  # noqa: E402

# (name, in channels, out channels, kernel, padding, input size)
SHAPES = [
    ("stage2-3x3", 16, 32, 3, 1, 32),     # ResNet-8 / ResNet-20: 32x32x16 -> 16x16x32
    ("stage2-1x1", 16, 32, 1, 0, 32),     # its projection shortcut
    ("stage3-3x3", 32, 64, 3, 1, 16),     # 16x16x32 -> 8x8x64
    ("stage3-1x1", 32, 64, 1, 0, 16),
    ("odd-3x3", 24, 20, 3, 1, 15),        # odd size and channel counts
]
PRECISIONS = {"w4a4": (4, 4), "w4a2": (4, 2), "w2a4": (2, 4), "w2a2": (2, 2)}
TARGET_RATIO = 0.8
# Read cycles of a chunk fetch in the rejected alternative: two pixels per bank.
TWO_READS_FETCH = 2 * CHUNK_ACT_WORDS


def layer_spec(rng, name, cin, cout, kernel, padding, size, stride, bits):
    weight_bits, act_bits = bits
    shape = (cout, cin, kernel, kernel)
    groups = group_shape(shape, GROUP_SIZE)
    return LayerSpec(
        kind="conv", weights=rng.integers(-(1 << (weight_bits - 1)), 1 << (weight_bits - 1), shape),
        precision=np.full(groups, weight_bits), shift=np.zeros(groups, dtype=np.int64),
        bias=rng.integers(-64, 64, cout), multiplier=rng.integers(1000, 3000, cout),
        requant_shift=16, act_bits_in=act_bits, act_bits_out=act_bits,
        input_shape=(cin, size, size), padding=padding, stride=stride, name=name)


def two_reads_cycles(compiled):
    """The alternative's cycles: this schedule with 8-cycle chunk fetches."""
    extra = 0
    for _, _, ktile in compiled.tiles:
        for group in compiled.round_groups[ktile]:
            steps = [chunk.steps for chunk in group.chunks]
            extra += (TWO_READS_FETCH - CHUNK_ACT_WORDS) + sum(
                max(0, TWO_READS_FETCH - n) for n in steps[:-1])
    return compiled.expected_counters["cycles"] + extra


def measure(config, spec, precision):
    compiled = compile_layer(spec, config)
    cout, ho, wo = spec.output_shape
    useful = cout * ho * wo * spec.in_channels * spec.kernel[0] * spec.kernel[1]
    lanes = PeMode.for_bits(*PRECISIONS[precision]).lanes
    ideal = useful / (config.rows * config.cols * lanes)
    cycles = compiled.expected_counters["cycles"]
    return compiled, {"output": [cout, ho, wo], "useful_macs": useful, "cycles": cycles,
                      "ideal_cycles": ideal, "utilization": ideal / cycles,
                      "cycles_per_output_mac": cycles / useful}


def run_config(config, rng, rows, rtl_runs):
    for precision, bits in PRECISIONS.items():
        for name, cin, cout, kernel, padding, size in SHAPES:
            row = {"config": config.name, "array": [config.rows, config.cols], "shape": name,
                   "precision": precision, "in_channels": cin, "out_channels": cout,
                   "kernel": kernel, "padding": padding, "size": size}
            for stride in (1, 2):
                spec = layer_spec(rng, f"{name}-s{stride}-{precision}", cin, cout, kernel,
                                  padding, size, stride, bits)
                compiled, figures = measure(config, spec, precision)
                if stride == 2:
                    figures["two_reads_cycles"] = two_reads_cycles(compiled)
                    figures["two_reads_utilization"] = (figures["ideal_cycles"]
                                                        / figures["two_reads_cycles"])
                row[f"stride{stride}"] = figures
                if rtl_runs is not None:
                    x = rng.integers(0, 1 << spec.act_bits_in, size=spec.input_shape)
                    rtl_runs.append((row, f"stride{stride}", compiled, x))
            s1, s2 = row["stride1"], row["stride2"]
            out_size = s2["output"][2] + kernel - 1 - 2 * padding
            same = layer_spec(rng, f"{name}-same-{precision}", cin, cout, kernel, padding,
                              out_size, 1, bits)
            row["stride1_same_output"] = measure(config, same, precision)[1]
            row["ratio"] = s2["utilization"] / s1["utilization"]
            row["ratio_same_output"] = s2["utilization"] / row["stride1_same_output"]["utilization"]
            row["two_reads_ratio"] = s2["two_reads_utilization"] / s1["utilization"]
            rows.append(row)
            print(f"{config.name:7s} {precision} {name:10s} stride 1 {s1['utilization']:6.1%} "
                  f"stride 2 {s2['utilization']:6.1%} ratio {row['ratio']:5.2f} (same output "
                  f"{row['ratio_same_output']:5.2f}, two reads a bank: "
                  f"{row['two_reads_ratio']:5.2f})", flush=True)


def run_rtl(runs, config):
    from sim.core_sim import run_on_rtl
    started = time.perf_counter()
    layers = [(compiled, x, compiled.spec.name) for _, _, compiled, x in runs]
    results = run_on_rtl(layers, config, simulator="verilator",
                         build_dir=pathlib.Path("build/bench/stride").resolve(), stall=0.0)
    for (row, key, compiled, x), result in zip(runs, results):
        golden = run_golden(compiled, x)
        row[key]["rtl_cycles"] = result["counters"]["cycles"]
        row[key]["rtl_bit_exact"] = bool(np.array_equal(result["output"], golden.output))
        row[key]["rtl_counters_match_golden"] = result["counters"] == golden.counters
    return time.perf_counter() - started


def markdown(figures):
    lines = ["# Stride 2 against stride 1 of the same shape", "",
             f"Command: `{figures['command']}`, revision {figures['revision'][:12]}. "
             "Utilisation: useful MACs over peak MACs per cycle at the precision, over "
             "cycles (golden model, cycle-exact with the RTL). Ratio: stride 2's utilisation "
             f"over stride 1's (target >= {TARGET_RATIO}); two reads: the alternative with "
             "column-order maps and two reads per bank (docs/dataflow.md, \"Stride 2\").", "",
             "| array | precision | shape | stride 1 | stride 2 | ratio | stride 1, stride 2's "
             "output size | ratio | two reads | RTL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in figures["rows"]:
        s1, s2 = row["stride1"], row["stride2"]
        rtl = ("= golden" if s2.get("rtl_counters_match_golden") and s1.get("rtl_counters_match_golden")
               and s2.get("rtl_bit_exact") and s1.get("rtl_bit_exact")
               else "differs" if "rtl_cycles" in s2 else "")
        lines.append(f"| {row['array'][0]}x{row['array'][1]} | {row['precision']} | {row['shape']} "
                     f"({row['in_channels']}->{row['out_channels']}, {row['size']}x{row['size']}) | "
                     f"{s1['utilization']:.1%} | {s2['utilization']:.1%} | {row['ratio']:.2f} | "
                     f"{row['stride1_same_output']['utilization']:.1%} | "
                     f"{row['ratio_same_output']:.2f} | {row['two_reads_ratio']:.2f} | {rtl} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default", "large"])
    parser.add_argument("--rtl", action="store_true",
                        help="also run the default configuration's layers on Verilator")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows, rtl_seconds = [], None
    for name in args.configs:
        config = get_config(name)
        runs = [] if args.rtl and name == "default" else None
        run_config(config, rng, rows, runs)
        if runs:
            rtl_seconds = run_rtl(runs, config)
    checked = [row for row in rows if "rtl_cycles" in row["stride2"]]
    figures = {
        "rows": rows,
        "target_ratio": TARGET_RATIO,
        "min_ratio": {name: min(r["ratio"] for r in rows if r["config"] == name)
                      for name in args.configs},
        "min_ratio_full_width": min(r["ratio"] for r in rows
                                    if r["stride2"]["output"][2] >= r["array"][1]),
        "min_ratio_same_output": min(r["ratio_same_output"] for r in rows),
        "min_two_reads_ratio": min(r["two_reads_ratio"] for r in rows),
        "rtl_layers": 2 * len(checked),
        "rtl_all_equal_golden": all(r[k]["rtl_bit_exact"] and r[k]["rtl_counters_match_golden"]
                                    for r in checked for k in ("stride1", "stride2")),
        "rtl_seconds": rtl_seconds,
    }
    path = write_json("stride", figures)
    import json
    write_atomically(RESULTS / "stride.md", markdown(json.loads(path.read_text())))
    print(f"wrote {path} and stride.md; min ratio {figures['min_ratio']}, full-width "
          f"{figures['min_ratio_full_width']:.2f}, same output "
          f"{figures['min_ratio_same_output']:.2f}, two reads {figures['min_two_reads_ratio']:.2f}")


if __name__ == "__main__":
    main()
