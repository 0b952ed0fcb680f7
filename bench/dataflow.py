"""Which dataflow for the array? Utilisation of output-, weight- and
input-stationary schedules on VGG-9's real layer shapes.

The output-stationary (OS) figure is the compiler's exact cycle count for our
RTL (the golden model's counters, which the RTL tests match cycle for cycle;
bench/core_perf.py measures the same on the RTL). Weight-stationary (WS) and
input-stationary (IS) are analytic models of the same array with the same
fused PEs, the same group-of-16 reduction chunks and the same memory ports
(one word per row and per column per cycle), given the benefit of the doubt:
stationary operands are double-buffered, so loading the next tile hides
behind the current one when the stream is long enough, and the pipeline
fill/drain (R + C - 1) is paid once per tile.

  WS: a PE holds one weight word (a chunk's lanes for one output channel);
      rows = reduction chunk slices, columns = output channels; the P output
      pixels stream through; partial sums leave at the bottom into an
      accumulator SRAM (P x C entries). Tile: max(P, R) + R + C - 1 cycles.
  IS: a PE holds one activation word; rows = reduction slices, columns = C
      output pixels; the Cout output channels' weights stream through.
      Tile: max(Cout, R) + R + C - 1 cycles.

Writes bench/results/dataflow.json and dataflow.png.

    .venv/bin/python bench/dataflow.py [--configs default large]
"""

import argparse
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import RESULTS, save_figure, write_json  # noqa: E402
from bench.core_perf import PRECISIONS, layer_spec, vgg9_layers  # noqa: E402
from hw.config import get_config  # noqa: E402
from hw.isa import GROUP_SIZE  # noqa: E402
from hw.pe import PeMode  # noqa: E402
from sw.compile import compile_layer  # noqa: E402


def layer_figures(spec):
    cout, _, _ = spec.output_shape
    conv_h, conv_w = spec.conv_output_hw
    kh, kw = spec.kernel
    pixels = conv_h * conv_w
    chunks = kh * kw * math.ceil(spec.in_channels / GROUP_SIZE)
    passes = 2 if spec.act_bits_in == 8 else 1
    return cout, pixels, chunks, passes, cout * pixels * spec.in_channels * kh * kw


def weight_stationary(config, spec, lanes):
    cout, pixels, chunks, passes, macs = layer_figures(spec)
    R, C = config.rows, config.cols
    words = chunks * GROUP_SIZE // lanes            # weight words per output channel
    tiles = math.ceil(words / R) * math.ceil(cout / C) * passes
    return tiles * (max(pixels, R) + R + C - 1)


def input_stationary(config, spec, lanes):
    cout, pixels, chunks, passes, macs = layer_figures(spec)
    R, C = config.rows, config.cols
    words = chunks * GROUP_SIZE // lanes
    tiles = math.ceil(words / R) * math.ceil(pixels / C) * passes
    return tiles * (max(cout, R) + R + C - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["default", "large"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name in args.configs:
        config = get_config(name)
        peak = config.rows * config.cols
        for precision in ("w4a4", "w2a2"):
            weight_bits, act_bits = PRECISIONS[precision]
            shapes = vgg9_layers(1.0)
            for layer, kind, cin, cout, size, pool in shapes:
                spec = layer_spec(rng, layer, kind, cin, cout, size, pool, weight_bits, act_bits,
                                  last=layer == shapes[-1][0])
                lanes = PeMode.for_bits(weight_bits, 4 if spec.act_bits_in == 8 else act_bits).lanes
                _, _, _, passes, macs = layer_figures(spec)
                ideal = macs * passes / (peak * lanes)
                os_cycles = compile_layer(spec, config).expected_counters["cycles"]
                rows.append({
                    "config": name, "array": [config.rows, config.cols], "precision": precision,
                    "layer": layer, "ideal_cycles": ideal,
                    "output_stationary": ideal / os_cycles,
                    "weight_stationary": ideal / weight_stationary(config, spec, lanes),
                    "input_stationary": ideal / input_stationary(config, spec, lanes),
                })
                r = rows[-1]
                print(f"{name:8s} {precision} {layer:6s} OS {r['output_stationary']:6.1%} "
                      f"WS {r['weight_stationary']:6.1%} IS {r['input_stationary']:6.1%}")
    path = write_json("dataflow", {"rows": rows, "models": __doc__})
    plot(rows, RESULTS / "dataflow.png")
    print(f"wrote {path}")


def plot(rows, path):
    configs = list(dict.fromkeys(r["config"] for r in rows))
    fig, axes = plt.subplots(len(configs), 2, figsize=(12, 3.2 * len(configs)), squeeze=False)
    for i, config in enumerate(configs):
        for j, precision in enumerate(("w4a4", "w2a2")):
            ax = axes[i][j]
            subset = [r for r in rows if r["config"] == config and r["precision"] == precision]
            layers = [r["layer"] for r in subset]
            for k, key in enumerate(("output_stationary", "weight_stationary", "input_stationary")):
                ax.bar([x + k * 0.27 for x in range(len(layers))], [r[key] for r in subset], 0.27,
                       label=key.replace("_", "-"))
            ax.set_xticks([x + 0.27 for x in range(len(layers))], layers, fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{config} {subset[0]['array'][0]}x{subset[0]['array'][1]}, {precision}")
            ax.axhline(0.9, color="gray", linestyle="--", linewidth=1)
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    fig.supylabel("utilisation")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


if __name__ == "__main__":
    main()
