"""One model file end to end on the RTL, as bench/e2e_vgg9.py and
bench/e2e_resnet.py measure it: compiled, run on real test images in
Verilator, every layer of every image compared bit for bit with the PyTorch
integer reference (sim/commands.simulate)."""

import dataclasses
import pathlib
import tempfile
import time

from sim.commands import simulate
from sw.compile.artifacts import write_compiled
from sw.compile.commands import golden_inputs
from sw.quantize.export import read_model_file


@dataclasses.dataclass
class Run:
    figures: dict       # JSON-ready: what e2e_vgg9.json records
    network: object     # the compiled network (sw.compile.network)
    header: dict        # the model file's
    arrays: dict
    report: dict        # sim.commands.simulate's


def run_end_to_end(model_path, data, images, *, config="default", jobs=1, build_dir,
                   progress=None):
    """Compile `model_path` for `config`, simulate `images` test images from
    `data` in `jobs` shards; returns a `Run`."""
    header, arrays = read_model_file(model_path)
    with tempfile.TemporaryDirectory() as work:
        compiled = pathlib.Path(work) / "compiled"
        started = time.perf_counter()
        network = write_compiled(model_path, config, compiled, golden_inputs(header, 1))
        compile_s = time.perf_counter() - started
        report = simulate(compiled, images, dataset="cifar10", data_path=data,
                          build_dir=pathlib.Path(build_dir).resolve(), jobs=jobs,
                          progress=progress)
    figures = {
        "model": str(model_path), "model_metadata": header.get("metadata", {}),
        "channels": [layer["out_channels"] for layer in header["layers"]],
        "config": config, "data": report["data"],
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
    return Run(figures, network, header, arrays, report)


def summary_line(path, report):
    return (f"wrote {path}: {report['images']} images, bit-exact {report['bit_exact']}, "
            f"{report['cycles_per_inference']:,} cycles and {report['sim_s_per_inference']:.1f} s "
            f"of simulation per inference")
