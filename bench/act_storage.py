"""Activations stored at their precision against 4-bit slots, side by side.

For VGG-9 (width 0.25) and ResNet-8 at A2, A3 and A4 (4-bit weights, 8-bit
first and last layers), each compiled for the default core
(`packed_activations`: a map of a-bit codes in a-bit slots) and for the same
core with 4-bit slots for every map (today's layout before issue 15, and the
FPGA configurations'): the bits stored per value (the manifest's
act_bits_stored), the activation memory the maps take (words per bank, every
map in its own region), the activation reads and writes of one inference
(the golden model's counters, which the RTL tests hold equal to the RTL's)
and the energy of the activation memory and of the whole inference
(sw/energy, the writes priced at their slots' bits).

The networks are untrained (calibrated on random images): the map shapes,
not the weights, decide every figure; the counts do not depend on the data
(the core with 32-bit accumulators, which untrained sums need).

Writes bench/results/act_storage.json and .md.

    .venv/bin/python bench/act_storage.py
"""

import dataclasses
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import RESULTS, untrained_model_file, write_json  # noqa: E402
from common.files import write_atomically  # noqa: E402
from hw.config import get_config  # noqa: E402
from sw.compile.network import compile_network  # noqa: E402
from sw.energy.designs import host_traffic  # noqa: E402
from sw.energy.model import EnergyModel  # noqa: E402
from sw.energy.summary import measured_fused_pe_factor, network_counters  # noqa: E402
from sw.quantize.models import MODELS  # noqa: E402

NETWORKS = [("vgg9", 0.25), ("resnet8", 1.0)]
ACT_BITS = (2, 3, 4)
SHAPE = (3, 32, 32)
DESIGNS = {"packed": True, "4-bit slots": False}


def measure(header, arrays, config, factor):
    network = compile_network(header, arrays, config)
    counters = network_counters(network)
    report = EnergyModel(config, fused_pe_factor=factor).price(counters, host_traffic(network))
    layers = [layer for layer in network.manifest["layers"] if not layer["raw"]]
    return {
        "act_bits_stored": sorted({layer["act_bits_stored"] for layer in layers}),
        "activation_words_keep_all": network.manifest["activation_words"]["keep_all"],
        "activation_words_used": network.manifest["activation_words"]["used"],
        **{key: int(counters[key]) for key in ("cycles", "act_reads", "act_writes", "shortcut_reads")},
        "activation_memory_pj": report.by_memory()["activations"],
        "total_pj": report.total(),
    }


def markdown(rows):
    lines = ["# Activations stored at their precision (bench/act_storage.py)", "",
             "Per inference on the default core (8x8), golden-model counts (equal to the RTL's); "
             "`4-bit slots` is the same core storing every map in 4-bit slots.", "",
             "| network | acts | design | bits stored | act words / bank | act reads | act writes | "
             "shortcut reads | act memory nJ | total nJ | cycles |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for design, f in row["designs"].items():
            lines.append(
                f"| {row['network']} w{row['width']} | A{row['act_bits']} | {design} | "
                f"{'/'.join(map(str, f['act_bits_stored']))} | {f['activation_words_keep_all']} | "
                f"{f['act_reads']} | {f['act_writes']} | {f['shortcut_reads']} | "
                f"{f['activation_memory_pj'] / 1e3:.1f} | {f['total_pj'] / 1e3:.1f} | {f['cycles']} |")
    lines += ["", "Ratios, 4-bit slots over packed: activation words, activation memory energy, "
              "total energy.", ""]
    for row in rows:
        r = row["four_bit_over_packed"]
        lines.append(f"- {row['network']} w{row['width']} A{row['act_bits']}: words "
                     f"{r['activation_words']:.2f}x, activation memory energy "
                     f"{r['activation_memory_energy']:.2f}x, total energy {r['total_energy']:.3f}x")
    return "\n".join(lines) + "\n"


def main():
    default = get_config("default")
    # 32-bit accumulators: the untrained networks' worst-case sums exceed
    # the default 24 bits (which a trained network's do not); no count
    # depends on the width.
    configs = {design: dataclasses.replace(default, name=f"default-{'packed' if packed else '4bit'}",
                                           packed_activations=packed, acc_width=32)
               for design, packed in DESIGNS.items()}
    factor = measured_fused_pe_factor()
    rows = []
    cases = [(name, width, bits) for name, width in NETWORKS for bits in ACT_BITS]
    with tempfile.TemporaryDirectory() as work:
        for name, width, bits in tqdm(cases, desc="networks", mininterval=0, file=sys.stdout):
            torch.manual_seed(0)       # the untrained weights
            header, arrays = untrained_model_file(MODELS[name](width=width), f"w4a{bits},first=w8,last=w8",
                                                  SHAPE, pathlib.Path(work) / f"{name}-a{bits}.mpq")
            designs = {design: measure(header, arrays, config, factor) for design, config in configs.items()}
            packed, wide = designs["packed"], designs["4-bit slots"]
            assert packed["cycles"] == wide["cycles"], "the slot width changes no cycle"
            rows.append({
                "network": name, "width": width, "act_bits": bits, "designs": designs,
                "four_bit_over_packed": {
                    "activation_words": wide["activation_words_keep_all"] / packed["activation_words_keep_all"],
                    "activation_memory_energy": wide["activation_memory_pj"] / packed["activation_memory_pj"],
                    "total_energy": wide["total_pj"] / packed["total_pj"]},
            })
    write_json("act_storage", {"config": "default", "input_shape": list(SHAPE),
                               "precision": "w4a{2,3,4},first=w8,last=w8", "rows": rows})
    write_atomically(RESULTS / "act_storage.md", markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
