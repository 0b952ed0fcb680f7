"""Activation memory of the named ResNets: the words per bank that every
map in its own region needs (every layer checkable) against what the maps
need when each reuses the space of maps no later layer reads
(sw/compile/act_alloc.py), on a configuration's activation memory.

The networks are untrained (calibrated on random images): the map shapes,
not the weights, decide the figures. `--compile` also compiles each network
for the configuration (slow for the full-width ones).

Writes bench/results/act_memory_<config>.json.

    .venv/bin/python bench/act_memory.py [--config default] [--compile]
"""

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bench.common import untrained_model_file, write_json  # noqa: E402
from common.errors import UserError  # noqa: E402
from hw.config import get_config  # noqa: E402
from sw.compile.act_alloc import allocate, peak  # noqa: E402
from sw.compile.network import activation_maps, compile_network, layer_specs  # noqa: E402
from sw.compile.tap_packing import pack_taps  # noqa: E402
from sw.quantize.export import layer_sources  # noqa: E402
from sw.quantize.resnet import resnet8, resnet20  # noqa: E402

NETWORKS = [("resnet8", resnet8, 1.0), ("resnet20", resnet20, 0.5), ("resnet20", resnet20, 1.0)]
SHAPE = (3, 32, 32)
PRECISION = "w4a4,first=w8,last=w8"     # as tests/sw/quantize/test_graph.py names them


def measure(header, arrays, config, compile_it):
    specs = layer_specs(header, arrays)
    specs[0], _ = pack_taps(specs[0])          # as compile_network does by default
    maps = activation_maps(specs, layer_sources(header), config)
    keep_all = sum(m.words for m in maps)
    words, step, live = peak(maps)
    try:
        # First fit's places do not depend on the depth; only whether they fit does.
        reuse = allocate(maps, keep_all - 1).words
    except UserError:
        reuse = None
    figures = {"maps": len(maps), "keep_all_words": keep_all, "reuse_words": reuse,
               "peak_live_words": words, "peak_live": [m.name for m in live],
               "act_depth": config.act_depth, "keep_all_fits": keep_all <= config.act_depth,
               "reuse_fits": reuse is not None and reuse <= config.act_depth}
    if compile_it:
        try:
            network = compile_network(header, arrays, config)
        except UserError as error:   # a limit other than the activation memory's
            figures["compiled"] = {"error": str(error)}
        else:
            figures["compiled"] = {**network.manifest["activation_words"],
                                   "phases": len(network.phases),
                                   "checked_layers": sum(network.checked),
                                   "layers": len(network.checked)}
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    config = get_config(args.config)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, make, width in NETWORKS:
            torch.manual_seed(0)       # the untrained weights
            header, arrays = untrained_model_file(make(width=width), PRECISION, SHAPE,
                                                  pathlib.Path(work) / f"{name}-{width}.mpq")
            row = {"network": name, "width": width,
                   **measure(header, arrays, config, args.compile)}
            rows.append(row)
            if "compiled" in row:
                print(f"  compiled: {row['compiled']}", flush=True)
            print(f"{name} width {width}: keep-all {row['keep_all_words']} words per bank, "
                  f"with reuse {row['reuse_words']} (peak live {row['peak_live_words']}), "
                  f"act_depth {config.act_depth}: keep-all "
                  f"{'fits' if row['keep_all_fits'] else 'does not fit'}, reuse "
                  f"{'fits' if row['reuse_fits'] else 'does not fit'}", flush=True)
    write_json(f"act_memory_{args.config}", {"config": args.config, "input_shape": list(SHAPE),
                              "precision": PRECISION, "networks": rows})


if __name__ == "__main__":
    main()
