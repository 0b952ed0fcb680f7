"""`mpq demo --out DIR`: the main job on the embedded default (scikit-learn's
8x8 digits; no download).

Float training, uniform W4A4 retraining (first and last layers 8-bit),
export to integers, compilation for the accelerator, its Verilog, and RTL
simulation of the whole digits test split in Verilator, every layer of every
image compared bit for bit with the PyTorch integer reference. Writes
DIR/report.json, DIR/report.md and plots; the intermediate files stay in
DIR/work.

Then mixed-precision retraining (sw/quantize/mpq.py) of the same float
checkpoint: its integer accuracy and its storage against uniform W4
(`compression_vs_uniform_w4`, hardware bits with metadata). The RTL runs the
MPQ model when it compiles (the product), else the W4A4 model; the report says
which. Energy per inference prices the RTL's counters (sw/energy), beside the
same network in uniform 4-bit storage (Bit Fusion-style, fixed 4-bit array).

Every model is trained again on every run; what depends only on the hardware
is kept: the generated Verilog (sim/verilog_cache.py) and the core's
Verilator build (build/sim/demo), made again only when the hardware's source
changes. The images run in shards on every core (sim/shards.py), and the
progress shows, on a terminal or in a log, which step and how far it is.
"""

import contextlib
import io
import json
import os
import pathlib
import platform
import shutil
import subprocess
import threading
import time
import types

from common.arguments import add_force, positive_int
from hw.config import CONFIGS, get_config

WIDTH_NOTE = "digits CNN at width 1.0 (the embedded default)"
# The core's Verilator build, kept between runs (built again only when its
# Verilog changes).
BUILD_DIR = pathlib.Path("build/sim/demo")


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Steps:
    """The demo's steps on one progress report: which step, and inside a long
    one how far it is (a terminal bar, or a line every few seconds when the
    output is a log: common/progress.py). Keeps each step's seconds."""

    def __init__(self, total):
        from common.progress import Progress
        self.progress = Progress("mpq demo", total, "step",
                                 bar_format="{desc}: step {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
        self.started = time.perf_counter()
        self.times = {}
        self.current = None

    def run(self, name, function, *args, **kwargs):
        self.current = name
        self.progress.status(name)
        started = time.perf_counter()
        result = function(*args, **kwargs)
        self.times[name] = time.perf_counter() - started
        self.progress.update()
        return result

    def detail(self, text):
        """How far the current step is."""
        self.progress.status(f"{self.current}: {text}")

    def close(self):
        self.progress.close()


def _train(out, precision, epochs, init=None, seed=0, detail=None):
    from sw.quantize.train import TrainConfig, train

    def on_step(epoch, step, steps):
        detail(f"epoch {epoch}/{epochs}, batch {step}/{steps}")

    log = train(TrainConfig(model="digits-cnn", dataset="digits", precision=precision,
                            epochs=epochs, init=init, seed=seed, out=str(out), device="cpu",
                            progress=False), on_step=on_step if detail else None)
    return log[-1]


def _export(checkpoint, path):
    from sw.quantize.commands import run_export

    # Quietly: `path` is in the staging folder, which is renamed at the end;
    # its name would mislead (the report names the files where they land).
    with contextlib.redirect_stdout(io.StringIO()):
        run_export(types.SimpleNamespace(checkpoint=str(checkpoint), out=str(path), force=False))


def _integer_accuracy(model_path):
    from sw.quantize.data import load_digits
    from sw.quantize.reference import IntegerModel
    data = load_digits()
    return IntegerModel.load(model_path).accuracy(data.test_x, data.test_y)


def _mpq_retrain(float_checkpoint, model_path, epochs, seed, detail):
    """MPQ from the float checkpoint, `mpq.DEMO_CONFIG`: base 2-bit plus the
    extra bit per group of 16, the hardware-friendly setting of
    bench/mpq_paper.py (bench/results/mpq_paper.md says where it stands)."""
    import math

    from sw.quantize import mpq
    from sw.quantize.data import load_digits
    from sw.quantize.export import read_model_file, write_model_file
    data = load_digits()
    config = mpq.DEMO_CONFIG
    network = mpq.network_from_float(float_checkpoint, data, config, seed)
    batch_size = 64
    steps, position = math.ceil(len(data.train_y) / batch_size), {"epoch": 1, "step": 0}

    def on_step():
        position["step"] += 1
        detail(f"epoch {position['epoch']}/{epochs}, batch {position['step']}/{steps}")

    def on_epoch(entry):
        position["epoch"], position["step"] = entry["epoch"] + 1, 0

    mpq.retrain(network, data, config, epochs, lr=0.01, batch_size=batch_size, seed=seed,
                on_step=on_step, progress=on_epoch)
    write_model_file(network, str(model_path), {"model": "digits-cnn", "dataset": "digits",
                                                "mpq": repr(config)})
    header, arrays = read_model_file(str(model_path))
    compression, storage, _ = mpq.compression_vs_uniform_w4(header, arrays)
    return compression, storage


def _write_verilog(config, directory):
    """Every design's Verilog (as `mpq verilog` writes it), generated once per
    configuration and generator source (sim/verilog_cache.py)."""
    from hw.generate import designs
    from sim.verilog_cache import design_verilog

    directory.mkdir(parents=True, exist_ok=True)
    for name in designs():
        # As `mpq verilog`: memories without an initial value (hw/generate.py).
        (directory / f"{name}.v").write_text(design_verilog(name, config, zero_memories=False))


def _start_core_build(config):
    """Build the core for `config` in BUILD_DIR in a thread; returns a dict
    that gets the build's seconds when it ends. A build that fails says
    nothing here: the RTL step builds again and reports the error."""
    from sim.core_sim import build_core

    seconds = {}

    def build():
        started = time.perf_counter()
        try:
            build_core(config, BUILD_DIR.resolve())
        except Exception:  # noqa: BLE001 - reported by the RTL step's own build
            return
        seconds["core build (beside the training)"] = time.perf_counter() - started

    threading.Thread(target=build, name="core build", daemon=True).start()
    return seconds


def run_demo(out_dir, config_name="default", images=None, epochs=15, seed=0, force=False):
    from common.files import check_output_directory

    config = get_config(config_name)
    out_dir = pathlib.Path(out_dir)
    check_output_directory(out_dir, "demo", force=force, option="--out")  # before the work
    import torch

    # One thread: the digits CNN's layers are too small for a second one to
    # pay, and on a machine whose other core is busy OpenMP's threads wait
    # for each other at every op (2 W4A4 epochs: 11.4 s with 2 threads, 1.4 s
    # with 1, on the 2-core machine with another job running).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = Steps(10)
    try:
        return _run_steps(steps, out_dir, config, images, epochs, seed, force)
    finally:
        steps.close()
        torch.set_num_threads(threads)


def _run_steps(steps, out_dir, config, images, epochs, seed, force):
    from common.errors import UserError
    from common.files import replacing_directory
    from sim.commands import simulate
    from sw.compile.artifacts import write_compiled
    from sw.compile.commands import golden_inputs
    from sw.energy.summary import energy_summary
    from sw.quantize.export import read_model_file

    config_name = config.name
    with replacing_directory(out_dir, "demo", force=force, option="--out") as staging:
        work = staging / "work"
        # The core depends only on the configuration: its build runs from the
        # start, on the core that the single-threaded training leaves idle.
        core_build = _start_core_build(config)
        float_log = steps.run("float training", _train, work / "float", "float", epochs, seed=seed,
                              detail=steps.detail)
        precision = "w4a4,first=w8,last=w8"
        steps.run("W4A4 retraining", _train, work / "w4a4", precision, epochs,
                  init=work / "float" / "checkpoint.pt", seed=seed, detail=steps.detail)
        model = work / "w4a4.mpq"
        steps.run("export", _export, work / "w4a4" / "checkpoint.pt", model)
        w4a4_accuracy = steps.run("integer accuracy", _integer_accuracy, model)
        mpq_model = work / "mpq.mpq"
        compression, storage = steps.run("MPQ retraining", _mpq_retrain, work / "float" / "checkpoint.pt",
                                         mpq_model, epochs, seed, steps.detail)
        mpq_accuracy = steps.run("MPQ integer accuracy", _integer_accuracy, mpq_model)
        compiled = staging / "compiled"
        rtl_model = "mpq"
        try:   # the product is the MPQ model; W4A4 stays the fallback
            header, _ = read_model_file(mpq_model)
            network = steps.run("compile", write_compiled, mpq_model, config_name, compiled,
                                golden_inputs(header, 4))
        except UserError as error:
            print(f"the MPQ model does not compile ({error}); simulating the W4A4 model")
            rtl_model = "uniform_w4a4"
            shutil.rmtree(compiled, ignore_errors=True)
            header, _ = read_model_file(model)
            network = steps.run("compile", write_compiled, model, config_name, compiled,
                                golden_inputs(header, 4))
        steps.run("verilog", _write_verilog, config, staging / "verilog")
        count = images if images is not None else 360
        # Every core: the images are cut into shards of one build (sim/shards.py).
        sim = steps.run("RTL simulation", simulate, compiled, count, dataset="digits",
                        build_dir=BUILD_DIR.resolve(), jobs=None, progress=steps.detail)
        simulated = mpq_model if rtl_model == "mpq" else model
        energy = steps.run("energy", energy_summary, *read_model_file(simulated), network,
                           sim["counters_per_inference"])
        report = {
            "command": f"mpq demo --out {out_dir}",
            "revision": git_revision(),
            "machine": f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs)",
            "seed": seed, "config": config_name, "array": [config.rows, config.cols],
            "model": WIDTH_NOTE, "epochs": epochs,
            "accuracy": {"float": float_log["test_accuracy"], "uniform_w4a4": w4a4_accuracy,
                         "mpq": mpq_accuracy},
            "accuracy_rtl": sim["accuracy"],
            "rtl_model": rtl_model,
            "compression_vs_uniform_w4": compression,
            "mpq_hardware_bits_per_weight": storage["hardware_average_bits"],
            "bit_exact": sim["bit_exact"],
            "images_simulated": sim["images"],
            "cycles_per_inference": sim["cycles_per_inference"],
            "utilization": {layer["name"]: layer["utilization"] for layer in sim["layers"]},
            "counters_per_inference": sim["counters_per_inference"],
            "external_bytes_per_inference": network.manifest["external_bytes_per_inference"],
            "energy": energy,
            "mismatches": sim["mismatches"],
            "step_seconds": {**steps.times, **core_build},
        }
        report["wall_s"] = time.perf_counter() - steps.started
        _write_report(staging, report, sim)
    return report


def _write_report(directory, report, sim):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (directory / "report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [k for k, v in report["accuracy"].items() if v is not None]
    left.bar(names, [100 * report["accuracy"][k] for k in names], color=["gray", "tab:blue", "tab:orange"][:len(names)])
    left.set_ylim(90, 100)
    left.set_ylabel("test accuracy (%), integer model")
    left.set_title("digits: accuracy")
    layers = sim["layers"]
    right.bar([layer["name"] for layer in layers], [layer["cycles"] for layer in layers])
    right.set_ylabel("cycles per inference")
    right.set_xlabel("layer")
    right.set_title(f"{report['array'][0]}x{report['array'][1]} array: "
                    f"{report['cycles_per_inference']:,} cycles")
    fig.tight_layout()
    fig.savefig(directory / "report.png", dpi=110)

    acc = report["accuracy"]
    lines = [
        "# mpq demo: digits, from PyTorch to bit-exact RTL",
        "",
        f"Revision {report['revision']}, configuration `{report['config']}` "
        f"({report['array'][0]}x{report['array'][1]}), seed {report['seed']}, "
        f"{report['epochs']} epochs per training, {report['wall_s']:.0f} s in all.",
        "",
        f"**Bit-exact: {'yes' if report['bit_exact'] else 'NO'}** - every layer of all "
        f"{report['images_simulated']} test images on the RTL (Verilator) equals the PyTorch "
        "integer reference.",
        "",
        "| model | test accuracy (integer) |",
        "|---|---|",
        f"| float | {acc['float']:.2%} (float model) |",
        f"| uniform W4A4 (first/last 8-bit) | {acc['uniform_w4a4']:.2%} |",
        f"| MPQ (2-bit + extra bit per hardware group; {report['compression_vs_uniform_w4']:.2f}x "
        f"smaller than uniform W4) | {acc['mpq']:.2%} |",
        f"| RTL, same {'MPQ' if report['rtl_model'] == 'mpq' else 'W4A4'} model | "
        f"{report['accuracy_rtl']:.2%} |",
        "",
        f"Cycles per inference: {report['cycles_per_inference']:,}.",
        "",
        "| layer | cycles | utilisation |",
        "|---|---:|---:|",
    ] + [f"| {layer['name']} | {layer['cycles']:,} | {layer['utilization']:.1%} |"
         for layer in sim["layers"]] + [
        "",
        f"Energy per inference ({report['energy']['pricing']}): "
        f"**{report['energy']['per_inference_uj']:.3f} uJ** (compute "
        f"{report['energy']['compute_uj']:.3f}, on-chip memory "
        f"{report['energy']['on_chip_memory_uj']:.3f}, external memory "
        f"{report['energy']['external_memory_uj']:.3f}), from the RTL's counters. The same "
        "network in uniform 4-bit storage costs "
        f"{report['energy']['baseline_over_this']['bitfusion_style']:.2f}x as much on fused PEs "
        f"(Bit Fusion-style) and {report['energy']['baseline_over_this']['fixed_4bit_array']:.2f}x "
        "on a fixed 4-bit PE array.",
        "",
        "![accuracy and cycles](report.png)",
    ]
    (directory / "report.md").write_text("\n".join(lines) + "\n")


def _run(args):
    report = run_demo(args.out, args.config, args.images, args.epochs, args.seed, args.force)
    print((pathlib.Path(args.out) / "report.md").read_text())
    return 0 if report["bit_exact"] else 1


def register(subparsers):
    parser = subparsers.add_parser("demo", help="the main job on the embedded default (digits)")
    parser.add_argument("--out", default="build/demo",
                        help="output directory, replaced as a whole (default %(default)s)")
    parser.add_argument("--config", default="default", choices=sorted(CONFIGS),
                        help="named configuration (hw/config.py; default %(default)s)")
    parser.add_argument("--images", type=positive_int, default=None,
                        help="test images to simulate (default: the whole split, 360)")
    parser.add_argument("--epochs", type=positive_int, default=15,
                        help="epochs per training run (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every run (default 0)")
    add_force(parser)
    parser.set_defaults(run=_run)
