"""`mpq sim DIR --images N`: a compiled network on the RTL, checked bit for
bit against the PyTorch integer reference on real test images."""

import json
import pathlib
import time

from common.arguments import positive_int, probability
from common.errors import UserError


def test_images(manifest, count, input_shape, data_path=None, dataset=None):
    """(images uint8 (N, C, H, W), labels, source) from the model's data set,
    checked against the shape the model takes."""
    from sw.quantize import data

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"--images must be a positive number of images, got {count!r}")
    name = dataset or manifest.get("model", {}).get("dataset")
    if name is None:
        raise UserError("the model file names no data set (metadata.dataset): pass --dataset")
    dataset = data.load_dataset(name, data_path, False, None, None)
    if tuple(dataset.input_shape) != tuple(input_shape):
        raise UserError(f"the compiled model takes images of shape {tuple(input_shape)}; data set "
                        f"{name} has {tuple(dataset.input_shape)}: pass the --dataset it was "
                        "trained on")
    if count > len(dataset.test_y):
        raise UserError(f"--images {count}: the {name} test split has {len(dataset.test_y)} images")
    return dataset.test_x[:count], dataset.test_y[:count], dataset.source


# Images the integer reference runs at once when checking the RTL's outputs.
CHECK_BATCH = 100

# What a report says about how long a run took and how it was spread, not
# about what it found. Two runs of the same images agree on everything else,
# however they were sharded (the rule `comparable` applies).
RUN_FIELDS = ("wall_s", "build_s", "check_s", "sim_s_per_inference", "load_s_total", "run")


def comparable(report):
    """`report` without its RUN_FIELDS: what every run of the same images,
    in one process or in shards anywhere, must report identically."""
    return {key: value for key, value in report.items() if key not in RUN_FIELDS}


def simulate(directory, count, *, simulator="verilator", data_path=None, dataset=None, seed=1,
             stall=0.1, build_dir="build/sim/network", jobs=1, scheduler=None, progress=None):
    """Run `count` test images; returns the report dict (also written to
    DIR/sim_report.json).

    `jobs` simulations run side by side on one build of the core (None: one
    per usable core), on this machine or on the Dask cluster whose scheduler
    is at `scheduler` (sim/shards.py). `progress(text)` hears what is
    happening, about every second while the images run."""
    import numpy as np

    from common.files import write_atomically
    from sim.core_sim import build_core
    from sim.network_sim import run_network_on_rtl
    from sim.shards import connect, rtl_status
    from sw.compile.artifacts import read_compiled
    from sw.quantize.reference import IntegerModel

    progress = progress or (lambda text: None)
    directory = pathlib.Path(directory)
    progress(f"reading {directory}")
    network, manifest, _ = read_compiled(directory)
    model = IntegerModel.load(directory / "model.mpq")
    images, labels, source = test_images(manifest, count, model.input_shape, data_path, dataset)
    names = [spec.label for spec in network.specs]
    build_dir = pathlib.Path(build_dir)
    started = time.perf_counter()
    # The cluster first: a wrong address is found before a minute of building.
    if scheduler:
        progress(f"connecting to the Dask scheduler at {scheduler}")
    client = connect(scheduler) if scheduler else None
    try:
        progress(f"building the core's {simulator} model ({manifest['config']})")
        core = build_core(network.config, build_dir, simulator)
        build_s = time.perf_counter() - started
        images_np = [x.numpy() for x in images]
        progress(f"0/{count} images")
        ran = time.perf_counter()
        results = run_network_on_rtl(
            network, images_np, core=core, jobs=jobs, client=client, seed=seed, stall=stall,
            progress=lambda done, cycles: progress(rtl_status(done, count, cycles,
                                                              time.perf_counter() - ran)))
    finally:
        if client:
            client.close()
    checked = time.perf_counter()
    progress(f"{count}/{count} images; checking them against the integer reference")
    mismatches, correct = check_against_reference(model, images, labels, results, names)
    check_s = time.perf_counter() - checked
    wall = time.perf_counter() - started

    cycles = [r["counters"]["cycles"] for r in results]
    layers = layer_utilization(network)
    report = {
        "directory": str(directory), "config": manifest["config"], "simulator": simulator,
        "images": count, "data": source, "bit_exact": not mismatches,
        "mismatches": mismatches[:20],
        # The layers compared: those whose output survives a run (all of them
        # unless the compiler reused activation memory; the logits always).
        "checked_layers": [spec.name for spec, checked in zip(network.specs, network.checked)
                           if checked],
        "accuracy": correct / count if count else None,
        "cycles_per_inference": int(np.mean(cycles)) if cycles else 0,
        "counters_per_inference": results[0]["counters"] if results else {},
        "layers": layers,
        "wall_s": wall, "build_s": build_s, "check_s": check_s,
        "sim_s_per_inference": float(np.mean([r["run_s"] for r in results])),
        "load_s_total": float(sum(r["load_s"] for r in results)),
        "run": {"shards": 1 + max(r["shard"] for r in results), "scheduler": scheduler,
                "model_built": core.built, "build_dir": str(core.directory)},
    }
    write_atomically(directory / "sim_report.json", json.dumps(report, indent=1, default=int) + "\n")
    if mismatches:
        report["waveform_dir"] = str(record_waveform(network, images_np, mismatches[0]["image"],
                                                     simulator, build_dir, seed, stall))
    return report


def check_against_reference(model, images, labels, results, names):
    """Each RTL result against the integer reference's codes, layer by layer;
    returns (mismatches: image and first problem, images classified right)."""
    import numpy as np

    from sim.network_sim import first_mismatch

    mismatches, correct = [], 0
    for start in range(0, len(results), CHECK_BATCH):
        logits, trace = model(images[start:start + CHECK_BATCH], return_codes=True)
        for offset, (result, label) in enumerate(zip(results[start:start + CHECK_BATCH],
                                                     labels[start:start + CHECK_BATCH])):
            expected = [t[offset].numpy() for t in trace] + [logits[offset].numpy()]
            problem = first_mismatch(result["outputs"], expected, names)
            if not result["status"]["done"] or result["status"]["error"]:
                problem = f"core status {result['status']}"
            if problem:
                mismatches.append({"image": start + offset, "problem": problem})
            correct += int(np.argmax(result["outputs"][-1].reshape(-1)) == int(label))
    return mismatches, correct


def layer_utilization(network):
    """Per layer: cycles, useful MACs, issued MAC slots, effective lanes and
    the array's utilization (the golden model's counters)."""
    import numpy as np

    from hw.pe import PeMode

    peak = network.config.rows * network.config.cols
    layers = []
    for spec, layer in zip(network.specs, network.layers):
        counters = layer.expected_counters
        macs = spec.out_channels * int(np.prod(spec.conv_output_hw)) * spec.in_channels \
            * int(np.prod(spec.kernel))
        issued = sum(counters[key] for key in counters if key.startswith("macs_"))
        # The array's peak depends on the modes the layer ran in: a W2A2 step
        # is 4 MACs per PE. Effective lanes: issued MAC slots per PE-step.
        pe_steps = sum(counters[f"macs_{mode.name.lower()}"] / mode.lanes for mode in PeMode)
        lanes = issued / pe_steps if pe_steps else 1
        layers.append({"name": spec.name, "cycles": counters["cycles"],
                       "useful_macs": macs, "issued_mac_slots": issued, "lanes": lanes,
                       "utilization": (macs / (peak * lanes * counters["cycles"])
                                       if counters["cycles"] else 0)})
    return layers


def record_waveform(network, images_np, image, simulator, build_dir, seed, stall):
    """A waveform of one (failing) image, for whoever debugs it; named and
    stalled as in the run, it runs exactly as it did there. Returns its folder."""
    from sim.network_sim import run_network_on_rtl

    wave_dir = (pathlib.Path(build_dir) / "waveforms" / f"image{image}").resolve()
    try:
        run_network_on_rtl(network, [images_np[image]], first_index=image,
                           simulator=simulator, build_dir=build_dir, seed=seed, stall=stall,
                           waves=True, work_root=wave_dir)
    except UserError:
        pass  # the failing image is reported either way; the waveform is a bonus
    return wave_dir


def run_sim(args):
    from common.progress import Progress

    with Progress("mpq sim") as progress:
        report = simulate(args.directory, args.images, simulator=args.simulator,
                          data_path=args.data, dataset=args.dataset, seed=args.seed,
                          stall=args.stall, jobs=args.jobs, scheduler=args.scheduler,
                          progress=progress.status)
    where = f"the Dask cluster at {args.scheduler}" if args.scheduler else "this machine"
    print(f"{report['images']} images in {report['run']['shards']} simulations on {where}, "
          f"{report['wall_s']:.0f} s")
    print(f"{report['images']} images on {report['simulator']}: bit-exact "
          f"{'yes' if report['bit_exact'] else 'NO'}, accuracy {report['accuracy']:.2%}, "
          f"{report['cycles_per_inference']:,} cycles per inference, "
          f"{report['sim_s_per_inference']:.2f} s of simulation per inference")
    if len(report["checked_layers"]) < len(report["layers"]):
        print(f"compared {len(report['checked_layers'])} of {len(report['layers'])} layers "
              f"(the others' outputs were overwritten to reuse activation memory): "
              f"{', '.join(report['checked_layers'])}")
    for layer in report["layers"]:
        print(f"  {layer['name']:>8s}: {layer['cycles']:>10,} cycles, utilisation "
              f"{layer['utilization']:.1%}")
    if not report["bit_exact"]:
        print(f"first mismatch: image {report['mismatches'][0]['image']}: "
              f"{report['mismatches'][0]['problem']}")
        print(f"waveform of that image under {report.get('waveform_dir')}")
        return 1
    return 0


def register(subparsers):
    parser = subparsers.add_parser("sim", help="run a compiled network on the RTL, bit-exact")
    parser.add_argument("directory", help="directory written by `mpq compile`")
    parser.add_argument("--images", type=positive_int, default=10,
                        help="test images to run (default 10)")
    parser.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    parser.add_argument("--data", help="data set path (CIFAR-10's official python layout)")
    parser.add_argument("--dataset", choices=("digits", "cifar10"),
                        help="data set (default: the one the model file names)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the host-stream stalls")
    parser.add_argument("--stall", type=probability, default=0.1,
                        help="probability that the host stream stalls a cycle (default 0.1)")
    parser.add_argument("--jobs", type=positive_int, default=None,
                        help="simulations side by side, each on a share of the images, all on "
                             "one build of the core; the report is the same for any number "
                             "(default: one per usable core, or with --scheduler one per "
                             "worker thread)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the simulations on the Dask distributed cluster whose "
                             "scheduler is at ADDRESS (e.g. tcp://head:8786); its workers "
                             "need this project and the build directory at the same path "
                             "(docs/sim.md)")
    parser.set_defaults(run=run_sim)
