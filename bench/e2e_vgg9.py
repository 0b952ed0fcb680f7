"""VGG-9 on CIFAR-10, end to end on the RTL: a model file (`mpq export`) is
compiled, run on real test images in Verilator, and every layer of every
image is compared bit for bit with the PyTorch integer reference. Writes
bench/results/e2e_vgg9.json.

    .venv/bin/python bench/e2e_vgg9.py MODEL.mpq --data DIR [--images 100] [--config default]

DIR holds CIFAR-10 in the official python layout (the offline copy:
`python ../shared/data/cifar10/to_batches.py DIR`).
"""

import argparse
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from sim.commands import simulate  # noqa: E402
from sw.compile.artifacts import write_compiled  # noqa: E402
from sw.compile.commands import golden_inputs  # noqa: E402
from sw.quantize.export import read_model_file  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--config", default="default")
    args = parser.parse_args()
    header, _ = read_model_file(args.model)
    with tempfile.TemporaryDirectory() as work:
        compiled = pathlib.Path(work) / "compiled"
        started = time.perf_counter()
        network = write_compiled(args.model, args.config, compiled, golden_inputs(header, 1))
        compile_s = time.perf_counter() - started
        report = simulate(compiled, args.images, dataset="cifar10", data_path=args.data,
                          build_dir=pathlib.Path("build/bench/e2e_vgg9").resolve())
    layers = header["layers"]
    figures = {
        "model": args.model, "model_metadata": header.get("metadata", {}),
        "channels": [layer["out_channels"] for layer in layers],
        "config": args.config, "data": report["data"],
        "images_simulated": report["images"], "bit_exact": report["bit_exact"],
        "mismatches": report["mismatches"], "rtl_accuracy": report["accuracy"],
        "cycles_per_inference": report["cycles_per_inference"],
        "counters_per_inference": report["counters_per_inference"],
        "phases": len(network.phases),
        "external_bytes_per_inference": network.manifest["external_bytes_per_inference"],
        "layers": report["layers"],
        "compile_s": compile_s,
        "sim_wall_s_per_inference": report["sim_s_per_inference"],
        "wall_s_total": report["wall_s"],
    }
    path = write_json("e2e_vgg9", figures)
    print(f"wrote {path}: {report['images']} images, bit-exact {report['bit_exact']}, "
          f"{report['cycles_per_inference']:,} cycles and {report['sim_s_per_inference']:.1f} s "
          f"of simulation per inference")


if __name__ == "__main__":
    main()
