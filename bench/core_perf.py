"""Utilisation and simulation speed of the core on VGG-9's layers.

Every conv and FC layer of full-width VGG-9 (real channel counts and feature
map sizes, from `sw.quantize.models.vgg9`) is compiled with random weights at
the given precision, run on the RTL in Verilator (one simulation, loaded
through the host stream), checked bit for bit against the golden model, and
measured: RTL cycles against the ideal (useful MACs over the array's peak
MACs per cycle at that precision). conv1 runs twice, side by side: as
before (3 channels in 16 lanes, 9 chunks a tile) and tap-packed as
`compile_network` runs it now (`sw/compile/tap_packing.py`: 27 patch
channels, 2 chunks a tile); `conv1_cycles` is the packed one's. Writes
bench/results/core_perf.json and core_perf.png.

    .venv/bin/python bench/core_perf.py [--config default] [--precision w4a4 w2a2]
                                        [--layers conv2 conv6] [--width 1.0]
"""

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import RESULTS, save_figure, write_json  # noqa: E402
from hw.config import get_config  # noqa: E402
from hw.pe import PeMode  # noqa: E402
from sim.core_sim import run_on_rtl  # noqa: E402
from sw.compile import LayerSpec, compile_layer, run_golden  # noqa: E402
from sw.compile.tap_packing import pack_taps  # noqa: E402
from sw.quantize.groups import group_shape  # noqa: E402
from sw.quantize.models import vgg9  # noqa: E402

PRECISIONS = {"w4a4": (4, 4), "w2a2": (2, 2), "w2a4": (2, 4), "w4a2": (4, 2)}


def vgg9_layers(width):
    """[(name, kind, cin, cout, size, pool)] of VGG-9, walking the real model."""
    layers, size, convs, fcs = [], 32, 0, 0
    for module in vgg9(width=width):
        if isinstance(module, nn.Conv2d):
            convs += 1
            layers.append([f"conv{convs}", "conv", module.in_channels, module.out_channels, size, False])
        elif isinstance(module, nn.MaxPool2d):
            layers[-1][5] = True
            size //= 2
        elif isinstance(module, nn.Linear):
            fcs += 1
            layers.append([f"fc{fcs}", "linear", module.in_features, module.out_features, 1, False])
    return [tuple(layer) for layer in layers]


def layer_spec(rng, name, kind, cin, cout, size, pool, weight_bits, act_bits, last):
    first = name == "conv1"
    shape = (cout, cin, 3, 3) if kind == "conv" else (cout, cin)
    low, high = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1))
    weights = rng.integers(low, high, size=shape)
    groups = group_shape(shape, 16)
    return LayerSpec(
        kind=kind, weights=weights, precision=np.full(groups, weight_bits),
        shift=np.zeros(groups, dtype=np.int64), bias=rng.integers(-64, 64, cout),
        multiplier=rng.integers(1000, 3000, cout), requant_shift=16,
        act_bits_in=8 if first else act_bits, act_bits_out=act_bits,
        padding=1 if kind == "conv" else 0, pool=pool, raw=last,
        input_shape=(cin, size, size) if kind == "conv" else (cin, 1, 1), name=name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--precision", nargs="+", default=["w4a4", "w2a2"], choices=PRECISIONS)
    parser.add_argument("--layers", nargs="*", help="layer names (default: all)")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = get_config(args.config)
    peak = config.rows * config.cols
    rng = np.random.default_rng(args.seed)
    shapes = [s for s in vgg9_layers(args.width) if not args.layers or s[0] in args.layers]

    runs, rows = [], []
    for precision in args.precision:
        weight_bits, act_bits = PRECISIONS[precision]
        for index, (name, kind, cin, cout, size, pool) in enumerate(shapes):
            spec = layer_spec(rng, name, kind, cin, cout, size, pool, weight_bits, act_bits,
                              last=name == shapes[-1][0] and name.startswith("fc"))
            x = rng.integers(0, 1 << spec.act_bits_in, size=spec.input_shape)
            variants = [(name, spec, x)]
            packed, packing = pack_taps(spec) if name == "conv1" else (spec, None)
            if packing is not None:
                variants.append((f"{name} packed", packed, packing.apply(x)))
            for label, variant, data in variants:
                started = time.perf_counter()
                compiled = compile_layer(variant, config)
                compile_s = time.perf_counter() - started
                runs.append((compiled, data, f"{precision}-{label}"))
                rows.append({"layer": label, "precision": precision, "kind": kind,
                             "in_channels": cin, "out_channels": cout, "size": size, "pool": pool,
                             "input_bits": spec.act_bits_in, "compile_s": compile_s})
                print(f"compiled {precision} {label}: {compiled.expected_counters['cycles']:,} "
                      f"cycles expected ({compile_s:.1f} s)", flush=True)

    build = pathlib.Path("build/bench/core_perf").resolve()
    started = time.perf_counter()
    results = run_on_rtl(runs, config, simulator="verilator", build_dir=build, stall=0.0)
    total_s = time.perf_counter() - started

    mode = PeMode.for_bits
    for row, (compiled, x, _), result in zip(rows, runs, results):
        golden = run_golden(compiled, x)
        spec = compiled.spec
        cout, ho, wo = spec.output_shape
        kh, kw = spec.kernel
        conv_h, conv_w = spec.conv_output_hw
        useful_macs = cout * conv_h * conv_w * spec.in_channels * kh * kw   # packed: C*9 x 1x1
        weight_bits, act_bits = PRECISIONS[row["precision"]]
        lanes = mode(weight_bits, min(act_bits, 4)).lanes
        # The 8-bit input runs as two 4-bit passes: its ideal counts both.
        passes = 2 if spec.act_bits_in == 8 else 1
        if spec.act_bits_in == 8:
            lanes = mode(weight_bits, 4).lanes
        ideal = useful_macs * passes / (peak * lanes)
        cycles = result["counters"]["cycles"]
        row.update({
            "bit_exact": bool(np.array_equal(result["output"], golden.output)),
            "counters_match_golden": result["counters"] == golden.counters,
            "rtl_cycles": cycles, "ideal_cycles": ideal, "utilization": ideal / cycles,
            "useful_macs": useful_macs, "issued_macs": sum(result["counters"][f"macs_{m.name.lower()}"]
                                                         for m in PeMode),
            "stall_cycles": result["counters"]["stall_cycles"],
            "busy_cycles": result["counters"]["busy_cycles"],
            "load_words": result["load_words"], "load_s": result["load_s"],
            "sim_s": result["run_s"], "sim_cycles_per_s": cycles / result["run_s"],
        })
        print(f"{row['precision']} {row['layer']:6s} utilisation {row['utilization']:6.1%} "
              f"cycles {cycles:>10,} ideal {ideal:>12,.0f} sim {result['run_s']:6.1f} s "
              f"({row['sim_cycles_per_s']:,.0f} cycles/s) bit-exact {row['bit_exact']}", flush=True)

    conv_targets = [r for r in rows if r["layer"] in ("conv2", "conv3", "conv4", "conv5", "conv6")]
    conv1 = {r["layer"]: r["rtl_cycles"] for r in rows
             if r["precision"] == args.precision[0] and r["layer"].startswith("conv1")}
    figures = {
        "config": config.name, "array": [config.rows, config.cols], "width": args.width,
        "rows": rows,
        "all_bit_exact": all(r["bit_exact"] for r in rows),
        "all_counters_match_golden": all(r["counters_match_golden"] for r in rows),
        "min_utilization_conv2_to_conv6": min((r["utilization"] for r in conv_targets), default=None),
        "target_utilization_conv2_to_conv6": 0.9,
        # VGG-9's first layer at the first precision (8-bit input): tap-packed
        # as compile_network runs it, and the layout it replaced.
        "conv1_precision": args.precision[0],
        "conv1_cycles": conv1.get("conv1 packed"),
        "conv1_cycles_unpacked": conv1.get("conv1"),
        "conv1_speedup": (conv1["conv1"] / conv1["conv1 packed"]
                          if "conv1 packed" in conv1 and "conv1" in conv1 else None),
        "simulation": {
            "total_wall_s": total_s,
            "cycles_simulated": sum(r["rtl_cycles"] for r in rows),
            "sim_wall_s": sum(r["sim_s"] for r in rows),
            "load_wall_s": sum(r["load_s"] for r in rows),
            "cycles_per_s": sum(r["rtl_cycles"] for r in rows) / sum(r["sim_s"] for r in rows),
        },
    }
    path = write_json("core_perf", figures)
    plot(rows, RESULTS / "core_perf.png", config)
    print(f"wrote {path}")


def plot(rows, path, config):
    fig, ax = plt.subplots(figsize=(9, 4))
    precisions = sorted({r["precision"] for r in rows})
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    width = 0.8 / len(precisions)
    for index, precision in enumerate(precisions):
        values = [next((r["utilization"] for r in rows if r["layer"] == layer
                        and r["precision"] == precision), 0) for layer in layers]
        ax.bar([i + index * width for i in range(len(layers))], values, width, label=precision)
    ax.axhline(0.9, color="gray", linestyle="--", linewidth=1, label="90% target")
    ax.set_xticks([i + width * (len(precisions) - 1) / 2 for i in range(len(layers))], layers)
    ax.set_ylabel("RTL utilisation (ideal / measured cycles)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"VGG-9 layers on the {config.rows}x{config.cols} array (Verilator)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
