"""What global average pooling costs the core: ResNet-8 (sw.quantize.resnet,
CIFAR-10 shape 3x32x32) exported through sw.quantize on random images,
compiled for a configuration; per layer cycles from the golden model (the
RTL tests hold every counter equal to it).

The classifier (linear on the global sum of the last 8x8 map) runs as the
8x8 convolution whose weights are the same at every position, one ROUND per
position and weight shift, every ROUND reading the same stored planes
(sw/compile/lower.py). It is compared with the schedule of one ROUND per
weight shift over all 64 positions, which is what a core that rewinds the
row pointers at each kernel position (a chunk or ROUND field; not built)
would run at the storage of the shared rounds: its cycles are those of the
same layer with its weights replicated at every position, which the
current core runs as is (`replicated`, whose weight words are listed too).

Both leave C - 1 of the array's C columns idle (one output pixel). The
third figure prices using them: the (H x 1) convolution with a 1 x W output
(column c sums column c of the map over its rows), weights replicated over
the H rows, one round per weight shift, on the current core; the W column
sums would still have to be added by the PPU (a column-sum mode, not built),
so this is a lower bound for that design.

Writes bench/results/global_pool.json and .md.

    PYTHONPATH=. .venv/bin/python bench/global_pool.py
"""

import dataclasses
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench.common import RESULTS, write_json  # noqa: E402
from common.files import write_atomically  # noqa: E402
from hw.config import get_config  # noqa: E402
from sw.compile.layer import LayerSpec  # noqa: E402
from sw.compile.lower import compile_layer  # noqa: E402
from sw.compile.network import compile_network  # noqa: E402
from sw.quantize.config import parse_precision  # noqa: E402
from sw.quantize.convert import calibrate, quantize_network  # noqa: E402
from sw.quantize.export import read_model_file, write_model_file  # noqa: E402
from sw.quantize.resnet import resnet8  # noqa: E402

SHAPE = (3, 32, 32)
CASES = [("default", 1.0, "w4a4,first=w8,last=w8"), ("default", 1.0, "w4a4"),
         ("default", 1.0, "w2a2,first=w8,last=w8"), ("default", 1.0, "w2a2"),
         ("large", 1.0, "w4a4,first=w8,last=w8"), ("large", 1.0, "w2a2")]
SEED = 0


def replicated(spec):
    """The pooled layer as an H x W convolution with its weights stored at
    every position (the current core's one-round-per-shift alternative)."""
    pg, eg = spec.conv_groups
    return dataclasses.replace(spec, kind="conv", global_pool=False,
                               weights=spec.conv_weights.copy(), precision=pg.copy(),
                               shift=eg.copy())


def column_parallel(spec):
    """The pooled layer as the (H x 1) convolution with a 1 x W output,
    its weights replicated over the H rows (raw: the column sums are the
    PPU's business in that design)."""
    channels, height, _ = spec.input_shape
    pg, eg = spec.conv_groups
    return dataclasses.replace(spec, kind="conv", global_pool=False, raw=True, multiplier=None,
                               requant_shift=None, act_bits_out=None,
                               weights=spec.conv_weights[:, :, :, :1].copy(),
                               precision=pg[:, :, :1].copy(), shift=eg[:, :, :1].copy())


def measure(config_name, width, precision, work):
    torch.manual_seed(SEED)
    model = resnet8(width=width)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():     # batch norms away from the identity, as trained ones are
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.3, generator=generator)
    network = quantize_network(model, parse_precision(precision), SHAPE)
    calibrate(network, torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8))
    network.eval()
    path = pathlib.Path(work) / "model.mpq"
    write_model_file(network, str(path))
    header, arrays = read_model_file(str(path))
    config = get_config(config_name)
    compiled = compile_network(header, arrays, config)
    cycles = {spec.name: layer.expected_counters["cycles"]
              for spec, layer in zip(compiled.specs, compiled.layers)}
    total = sum(cycles.values())
    fc_spec = next(spec for spec in compiled.specs if spec.global_pool)
    fc = compiled.layers[compiled.specs.index(fc_spec)]
    other = compile_layer(replicated(fc_spec), config)
    assert isinstance(fc_spec, LayerSpec)

    def words(layer):
        return max(layer.manifest["regions"]["weights"]["entries_per_bank"])

    columns = compile_layer(column_parallel(fc_spec), config).expected_counters["cycles"]
    fc_cycles, one_round = cycles[fc_spec.name], other.expected_counters["cycles"]
    return {
        "config": config_name, "rows": config.rows, "cols": config.cols, "width": width,
        "precision": precision, "classifier": fc_spec.name,
        "pooled_map": list(fc_spec.input_shape), "classes": fc_spec.out_channels,
        "classifier_weight_bits": sorted({int(p) for p in fc_spec.precision.reshape(-1)}),
        "network_cycles": total, "layer_cycles": cycles,
        "classifier_cycles": fc_cycles, "classifier_percent": 100 * fc_cycles / total,
        "classifier_rounds": fc.manifest["rounds"],
        "classifier_busy_cycles": fc.expected_counters["busy_cycles"],
        "classifier_weight_words_per_bank": words(fc),
        "one_round_per_shift_cycles": one_round,
        "one_round_per_shift_rounds": other.manifest["rounds"],
        "one_round_per_shift_percent": 100 * one_round / (total - fc_cycles + one_round),
        "saving_percent_of_network": 100 * (fc_cycles - one_round) / total,
        "replicated_weight_words_per_bank": words(other),
        "column_parallel_cycles": columns,
        "column_parallel_percent": 100 * columns / (total - fc_cycles + columns),
    }


def main():
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(*case, work) for case in CASES]
    write_json("global_pool", {"seed": SEED, "input": list(SHAPE), "cases": rows})
    lines = ["# Global average pooling in ResNet-8 (golden model cycles; the RTL's equal them)",
             "",
             "| config | width | precision | network cycles | classifier: rounds, busy, cycles "
             "(share) | one round per shift (rewind or replicated): rounds, cycles (share) "
             "| saving of the network | weight words per bank: shared / replicated "
             "| column-parallel (H x 1, PPU column sum not built): cycles (share) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['config']} ({row['rows']}x{row['cols']}) | {row['width']} "
            f"| {row['precision']} | {row['network_cycles']} | {row['classifier_rounds']}, "
            f"{row['classifier_busy_cycles']}, {row['classifier_cycles']} "
            f"({row['classifier_percent']:.2f}%) | {row['one_round_per_shift_rounds']}, "
            f"{row['one_round_per_shift_cycles']} ({row['one_round_per_shift_percent']:.2f}%) "
            f"| {row['saving_percent_of_network']:.2f}% "
            f"| {row['classifier_weight_words_per_bank']} / "
            f"{row['replicated_weight_words_per_bank']} | {row['column_parallel_cycles']} "
            f"({row['column_parallel_percent']:.2f}%) |")
    write_atomically(RESULTS / "global_pool.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
