"""ResNet-8 and ResNet-20 on CIFAR-10, end to end on the RTL: each model file
(`mpq export`) is compiled, run on real test images in Verilator (sharded,
sim/shards.py), every layer of every image compared bit for bit with the
PyTorch integer reference, and priced per inference and per layer by the
energy model (sw/energy: RTL counters x cited prices, as `mpq report`).
Writes bench/results/e2e_resnet.json and e2e_resnet.png (cycles and energy
per layer).

    .venv/bin/python bench/e2e_resnet.py --resnet8 R8.mpq --resnet20 R20.mpq \\
        [--resnet8-mpq MPQ.mpq] --data DIR [--images 100] [--jobs 2] \\
        [--eval-json resnet8=EVAL.json ...] [--out PATH.json]

Any subset of the models per run: the results file keeps the entries of
the models not measured this time, so each model can be measured when its
training has finished. Each entry records its own command, revision, model
file, image count and wall times. `--eval-json KEY=FILE` adds the integer
accuracy on the test split from `mpq eval --json` (or a bench/mpq_paper.py
row file) to that entry.

`resnet8_mpq` is ResNet-8 with the paper's extra bit: 2-bit middle layers,
one more bit for the quarter of the compiler's weight groups that kept
switching, first and last layers 8-bit; bench/mpq_paper.py's headline row,
retrained from the float checkpoint, exported and scored on the test split:

    .venv/bin/python bench/mpq_paper.py --model resnet8 --data DIR \
        --float-checkpoint FLOAT/checkpoint.pt --qat-epochs N --state runs/mpq_resnet \
        --only 'resnet8_w1/lsq/mpq-switching-25/s0' --threads 2
    .venv/bin/python bench/e2e_resnet.py --data DIR \
        --resnet8-mpq runs/mpq_resnet/resnet8_w1/models/lsq__mpq-switching-25__s0.mpq \
        --eval-json resnet8_mpq=runs/mpq_resnet/resnet8_w1/rows/lsq__mpq-switching-25__s0.json
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import RESULTS, provenance, save_figure  # noqa: E402
from bench.e2e import run_end_to_end, summary_line  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.files import write_atomically  # noqa: E402

# Results key -> the model the file must hold (its metadata.model).
MODELS = {"resnet8": "resnet8", "resnet20": "resnet20", "resnet8_mpq": "resnet8"}
OUT = RESULTS / "e2e_resnet.json"


def read_results(path):
    """The entries already in the results file at `path` ({} if none)."""
    path = pathlib.Path(path)
    if not path.exists():
        return {}
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path} is not a results file of this bench ({error}): give another "
                        "--out or remove it") from None
    if not isinstance(results, dict) or not set(results) <= set(MODELS) \
            or not all(isinstance(entry, dict) for entry in results.values()):
        raise UserError(f"{path} is not a results file of this bench (its keys are "
                        f"{sorted(results) if isinstance(results, dict) else type(results).__name__}"
                        f", expected some of {', '.join(MODELS)}): give another --out")
    return results


def merge(path, entries):
    """The results at `path` with `entries` (key -> entry) replacing theirs."""
    results = read_results(path)
    results.update(entries)
    return {key: results[key] for key in MODELS if key in results}


def integer_accuracy(path):
    """{accuracy, images, source} from `mpq eval --json` or a mpq_paper row."""
    try:
        figures = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--eval-json {path}: cannot read it ({error})") from None
    if figures.get("kind", "integer") != "integer":
        raise UserError(f"--eval-json {path} holds a {figures['kind']} evaluation: give the "
                        "model file's (`mpq eval MODEL.mpq --json`)")
    accuracy = figures.get("accuracy", figures.get("integer_accuracy"))
    images = figures.get("images", figures.get("test_images"))
    if accuracy is None or images is None:
        raise UserError(f"--eval-json {path} has no accuracy and image count: give the JSON of "
                        "`mpq eval MODEL.mpq --json` or a bench/mpq_paper.py row file")
    return {"accuracy": accuracy, "images": images, "source": str(path)}


def check_model(key, path):
    from sw.quantize.export import read_model_file
    header, _ = read_model_file(path)
    model = header.get("metadata", {}).get("model")
    if model is not None and model != MODELS[key]:
        raise UserError(f"--{key.replace('_', '-')} {path} holds {model}, not {MODELS[key]}")


class Log:
    """Progress lines on stderr, one per step (the simulation's status
    changes every second; a line is kept when its first part changes)."""

    def __init__(self, key):
        self.key, self.last = key, None

    def __call__(self, text):
        step = text.split(",")[0]
        if step != self.last:
            self.last = step
            print(f"{self.key}: {text}", file=sys.stderr, flush=True)


def measure(key, path, args, eval_json):
    """One model's entry: the RTL run, its energy, per layer and in all."""
    from sw.energy.model import EnergyModel
    from sw.energy.summary import energy_summary, layer_energies, measured_fused_pe_factor, network_counters
    from sw.quantize.mpq import weight_storage_bits

    run = run_end_to_end(path, args.data, args.images, config=args.config, jobs=args.jobs,
                         build_dir=args.build_dir, progress=Log(key))
    figures = dict(run.figures)
    counters = figures.pop("counters_per_inference")
    factor = measured_fused_pe_factor()
    energy = energy_summary(run.header, run.arrays, run.network, counters=counters,
                            fused_pe_factor=factor)
    priced = layer_energies(run.network, EnergyModel(run.network.config, fused_pe_factor=factor))
    layers = []
    for sim, cost in zip(figures.pop("layers"), priced):
        assert (sim["name"], sim["cycles"]) == (cost["name"], cost["cycles"])
        layers.append({**sim, "energy_uj": cost["total_pj"] / 1e6,
                       "compute_uj": cost["compute_pj"] / 1e6,
                       "on_chip_memory_uj": cost["on_chip_memory_pj"] / 1e6})
    storage = weight_storage_bits(run.header, run.arrays)
    entry = {
        **provenance(), "images": figures.pop("images_simulated"), **figures,
        "counters": counters,
        "counters_equal_golden": counters == network_counters(run.network),
        "energy_uj_per_inference": energy["per_inference_uj"],
        "energy": energy,
        # What the layers' sum leaves out: the host's traffic (input image,
        # reloaded phases, logits, DRAM), priced for the inference only.
        "layers_energy_uj": sum(layer["energy_uj"] for layer in layers),
        "hardware_bits_per_weight": storage["hardware_average_bits"],
        "layer_mean_weight_bits": {p["name"]: p["hardware_mean_bits"]
                                   for p in storage["per_layer"]},
        "layers": layers,
        "integer_accuracy": integer_accuracy(eval_json) if eval_json else None,
    }
    return entry, run.report


def plot(results, path):
    """Cycles and energy per layer, one column per model."""
    keys = list(results)
    fig, axes = plt.subplots(2, len(keys), figsize=(max(5.0, 0.32 * max(
        len(results[k]["layers"]) for k in keys)) * len(keys), 6.5), squeeze=False)
    for column, key in enumerate(keys):
        entry = results[key]
        names = [layer["name"].split(".", 1)[-1] for layer in entry["layers"]]
        x = np.arange(len(names))
        top, bottom = axes[0][column], axes[1][column]
        top.bar(x, [layer["cycles"] / 1e3 for layer in entry["layers"]], color="tab:blue")
        top.set_ylabel("kcycles per inference")
        top.set_title(f"{key}: {entry['cycles_per_inference']:,} cycles, "
                      f"{entry['energy_uj_per_inference']:.2f} uJ per inference\n"
                      f"({entry['images']} images, bit-exact {entry['bit_exact']})", fontsize=9)
        compute = np.array([layer["compute_uj"] for layer in entry["layers"]])
        memory = np.array([layer["on_chip_memory_uj"] for layer in entry["layers"]])
        bottom.bar(x, compute, color="tab:green", label="compute")
        bottom.bar(x, memory, bottom=compute, color="tab:blue", label="on-chip memory")
        bottom.set_ylabel("uJ per inference")
        bottom.legend(fontsize=7)
        for ax in (top, bottom):
            ax.set_xticks(x, names, rotation=75, fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key in MODELS:
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="MODEL.mpq",
                            help=f"model file to measure as {key}")
    parser.add_argument("--data", help="CIFAR-10 folder (official python layout)")
    parser.add_argument("--images", type=int, default=100, help="test images (default 100)")
    parser.add_argument("--jobs", type=int, default=2,
                        help="simulations side by side (default 2)")
    parser.add_argument("--config", default="default", help="accelerator configuration")
    parser.add_argument("--eval-json", action="append", default=[], metavar="KEY=FILE",
                        help="integer accuracy of model KEY on the test split (`mpq eval --json`)")
    parser.add_argument("--out", default=str(OUT), help="results file (default %(default)s); "
                        "the plot goes beside it (.png)")
    parser.add_argument("--build-dir", default="build/bench/e2e_resnet")
    args = parser.parse_args(argv)
    args.models = {key: getattr(args, key) for key in MODELS if getattr(args, key)}
    if not args.models:
        parser.error("give at least one model: " + ", ".join(
            f"--{key.replace('_', '-')}" for key in MODELS))
    if not args.data:
        parser.error("--data: the CIFAR-10 folder")
    for name in ("images", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    args.evals = {}
    for item in args.eval_json:
        key, _, path = item.partition("=")
        if key not in args.models or not path:
            parser.error(f"--eval-json {item!r}: give KEY=FILE with KEY one of the models "
                         f"measured ({', '.join(args.models)})")
        args.evals[key] = path
    return args


def main(argv=None):
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    read_results(out)    # a file that is not ours stops the run before hours of simulation
    for key, path in args.models.items():
        check_model(key, path)
    entries, failed = {}, []
    for key, path in args.models.items():
        entries[key], report = measure(key, path, args, args.evals.get(key))
        print(summary_line(f"{key} ({path})", report))
        if not entries[key]["bit_exact"] or not entries[key]["counters_equal_golden"]:
            failed.append(key)
        # Each finished model is kept at once: a later one's failure loses nothing.
        results = merge(out, {key: entries[key]})
        write_atomically(out, json.dumps(results, indent=1) + "\n")
        plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png').name}")
    if failed:
        print(f"NOT bit-exact (or counters differ from the golden model): {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as error:
        sys.exit(f"error: {error}")
