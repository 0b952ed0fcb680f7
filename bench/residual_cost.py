"""What the residual add costs the core: cycles and activation reads of a
BasicBlock (stride 1, identity or 1x1 projection shortcut) from sw.quantize,
compiled for a configuration, per layer from the golden model (the RTL tests
hold every counter equal to it: tests/sim/test_residual_network.py,
tests/hw/core/test_core_rtl.py).

For the block's residual layer it compares the layer with its shortcut and
the same layer without (LayerSpec.residual_multiplier None), and prices the
design not taken: reading the shortcut before each tile's first round's
prefetch, `shortcut_words_max(R, packed)` cycles per tile (the issue's first design).

Writes bench/results/residual_cost.json and .md.

    .venv/bin/python bench/residual_cost.py
"""

import dataclasses
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import RESULTS, write_json  # noqa: E402
from common.files import write_atomically  # noqa: E402
from hw.config import get_config  # noqa: E402
from hw.timing import shortcut_words_max  # noqa: E402
from sw.compile.lower import compile_layer  # noqa: E402
from sw.compile.network import compile_network, layer_specs  # noqa: E402
from sw.quantize.config import parse_precision  # noqa: E402
from sw.quantize.convert import calibrate, quantize_network  # noqa: E402
from sw.quantize.export import read_model_file, write_model_file  # noqa: E402
from sw.quantize.resnet import BasicBlock  # noqa: E402

# (configuration, block input channels, block width, map size, precision)
CASES = [("small", 8, 8, 6, "w4a4"), ("default", 16, 16, 16, "w4a4"),
         ("default", 16, 32, 16, "w2a2"), ("large", 32, 32, 16, "w4a4")]
SEED = 0


class BlockNet(nn.Module):
    def __init__(self, channels, width, size):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        downsample = None
        if width != channels:
            downsample = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False),
                                       nn.BatchNorm2d(width))
        self.block = BasicBlock(channels, width, 1, downsample)
        self.fc = nn.Linear(width * size * size, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.block(F.relu(self.stem_bn(self.stem(x)))), 1))


def measure(config_name, channels, width, size, precision, work):
    torch.manual_seed(SEED)
    shape = (3, size, size)
    network = quantize_network(BlockNet(channels, width, size), parse_precision(precision), shape)
    calibrate(network, torch.randint(0, 256, (4, *shape), dtype=torch.uint8))
    network.eval()
    path = pathlib.Path(work) / "model.mpq"
    write_model_file(network, str(path))
    header, arrays = read_model_file(str(path))
    config = get_config(config_name)
    specs = layer_specs(header, arrays)
    compiled = compile_network(header, arrays, config)
    counters = {spec.name: layer.expected_counters for spec, layer in zip(specs, compiled.layers)}
    block = [spec.name for spec in specs if spec.name.startswith("block")]
    block_cycles = sum(counters[name]["cycles"] for name in block)
    residual = next(spec for spec in specs if spec.residual)
    with_add = counters[residual.name]
    without = compile_layer(dataclasses.replace(residual, residual_multiplier=None),
                            config).expected_counters
    tiles = compile_layer(residual, config).manifest["tiles"]
    before_prefetch = tiles * shortcut_words_max(config.rows, config.packed_activations)
    return {
        "config": config_name, "rows": config.rows, "cols": config.cols,
        "block": f"{channels}->{width}, {size}x{size}, {precision}", "block_layers": block,
        "shortcut": "projection (signed)" if width != channels else "identity",
        "block_cycles": block_cycles,
        "residual_layer": residual.name, "residual_layer_cycles": with_add["cycles"],
        "residual_layer_cycles_without_add": without["cycles"],
        "add_cycles": with_add["cycles"] - without["cycles"],
        "add_cycles_percent_of_block": 100 * (with_add["cycles"] - without["cycles"]) / block_cycles,
        "shortcut_reads": with_add["shortcut_reads"], "act_reads": with_add["act_reads"],
        "tiles": tiles,
        "before_prefetch_cycles": before_prefetch,
        "before_prefetch_percent_of_block": 100 * before_prefetch / block_cycles,
    }


def main():
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(*case, work) for case in CASES]
    write_json("residual_cost", {"seed": SEED, "cases": rows})
    lines = ["# The residual add's cost (golden model; the RTL's counters equal it)", "",
             "| config | block | shortcut | block cycles | residual layer cycles (without add) "
             "| add | shortcut reads / act reads | reading before the prefetch instead |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['config']} ({row['rows']}x{row['cols']}) | {row['block']} | {row['shortcut']} "
            f"| {row['block_cycles']} | {row['residual_layer_cycles']} "
            f"({row['residual_layer_cycles_without_add']}) | {row['add_cycles']} cycles "
            f"({row['add_cycles_percent_of_block']:.2f}%) | {row['shortcut_reads']} / "
            f"{row['act_reads']} | +{row['before_prefetch_cycles']} cycles "
            f"({row['before_prefetch_percent_of_block']:.2f}%) |")
    write_atomically(RESULTS / "residual_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
