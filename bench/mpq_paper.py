#!/usr/bin/env python3
"""The MPQ paper's experiment: float, uniform W2/W3/W4 (A4), MPQ (extra bit
only, learning-rate rule only, both; per weight and per hardware group) and
oscillation freezing (Nagel et al. 2022), on the same data, float checkpoint,
seeds and epochs; integer accuracy from the exported model file run by the
integer reference; storage counted by `sw.quantize.mpq.weight_storage_bits`.

    .venv/bin/python bench/mpq_paper.py --cifar /tmp/cifar
    .venv/bin/python bench/mpq_paper.py --skip-cifar            # digits only
    (on a GPU: --full runs VGG-9 at full width on all images, unchanged otherwise)

Writes bench/results/mpq_paper.json, mpq_paper.md (the table) and the plots
mpq_paper_pareto.png, mpq_paper_switches.png, mpq_paper_layers.png.
"""

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import RESULTS, write_json  # noqa: E402
from sw.quantize import data as data_module  # noqa: E402
from sw.quantize import mpq  # noqa: E402
from sw.quantize.export import write_model_file  # noqa: E402
from sw.quantize.reference import IntegerModel  # noqa: E402
from sw.quantize.train import (
    TrainConfig,
    _initial_network,
    evaluate,
    model_spec,
    network_from_checkpoint,  # noqa: E402
)

FLOAT = {"digits-cnn": "runs/qat_baseline/digits-cnn_float/checkpoint.pt",
         "vgg9": "runs/qat_baseline/vgg9_float/checkpoint.pt"}
UNIFORM = dict(extra_bit=False, track=False)
LR = dict(lr_rule="linear", lr_min=0.2, lr_width=0.2)
# With the extra bit, the rule starts after the last assignment: damping before
# it would hide the oscillations the assignment looks for.
BOTH = dict(LR, lr_start=0.6)


def variants(family):
    """label -> (base bits, MPQConfig keyword arguments, headline?)"""
    table = {
        "uniform W2": (2, dict(UNIFORM), True),
        "uniform W3": (3, dict(UNIFORM), False),
        "uniform W4": (4, dict(UNIFORM), True),
        "MPQ lr-rule only (W2)": (2, dict(extra_bit=False, **LR), False),
        "MPQ extra-bit per-weight 2+1 f0.10": (2, dict(granularity="weight", fraction=0.10), False),
        "MPQ extra-bit per-group 2+1 f0.10": (2, dict(granularity="group", fraction=0.10), False),
        "MPQ both per-weight 2+1 f0.10": (2, dict(granularity="weight", fraction=0.10, **BOTH), True),
        "MPQ both per-group 2+1 f0.10": (2, dict(granularity="group", fraction=0.10, **BOTH), True),
        "MPQ both per-group 2+1 f0.30": (2, dict(granularity="group", fraction=0.30, **BOTH), False),
        # per-weight model file, whole compiler groups upgraded (see the closing note)
        "MPQ both per-hw-group 2+1 f0.10": (2, dict(granularity="hardware", fraction=0.10, **BOTH), True),
        # whole chunks (8 output channels x one compiler group): the PE-mode unit
        "MPQ both per-chunk 2+1 f0.10": (2, dict(granularity="chunk", fraction=0.10, **BOTH), False),
        "MPQ both per-chunk per-layer 2+1 f0.10": (2, dict(granularity="chunk", budget="per_layer",
                                                           fraction=0.10, **BOTH), False),
        "MPQ both per-weight 2+1 f0.02": (2, dict(granularity="weight", fraction=0.02, **BOTH), False),
        "MPQ both per-group 3+1 f0.10": (3, dict(granularity="group", fraction=0.10, **BOTH), False),
        "Nagel freezing W2": (2, dict(extra_bit=False, freeze_threshold=0.02), False),
        "Nagel freezing W3": (3, dict(extra_bit=False, freeze_threshold=0.02), False),
    }
    if family == "vgg9":   # the CPU budget: the headline rows and the comparison points
        keep = ("uniform W2", "uniform W3", "uniform W4", "MPQ both per-weight 2+1 f0.10",
                "MPQ both per-group 2+1 f0.10", "Nagel freezing W2",
                "MPQ extra-bit per-group 2+1 f0.10", "MPQ lr-rule only (W2)",
                "MPQ both per-hw-group 2+1 f0.10", "MPQ both per-chunk 2+1 f0.10",
                "MPQ both per-chunk per-layer 2+1 f0.10")
        table = {k: v for k, v in table.items() if k in keep}
    return table


def family_settings(family, args):
    if family == "digits-cnn":
        return dict(model="digits-cnn", dataset="digits", data=None, width=1.0, epochs=args.digits_epochs,
                    lr=0.01, batch_size=64, limit_train=None, limit_test=None)
    width, images = (1.0, None) if args.full else (args.cifar_width, args.cifar_train_images)
    return dict(model="vgg9", dataset="cifar10", data=args.cifar, width=width, epochs=args.cifar_epochs,
                lr=0.01, batch_size=128, limit_train=images, limit_test=args.cifar_test_images)


_DATA = {}


def _dataset(settings):
    key = (settings["dataset"], settings["limit_train"], settings["limit_test"])
    if key not in _DATA:
        _DATA[key] = data_module.load_dataset(settings["dataset"], settings["data"], False,
                                              settings["limit_train"], settings["limit_test"])
    return _DATA[key]


def run_variant(job):
    family, label, seed, settings, work, device, threads = job
    torch.set_num_threads(threads)
    base, options, headline = variants(family)[label]
    config = mpq.MPQConfig(base_bits=base, **options)
    dataset = _dataset(settings)
    if options.get("extra_bit", True):
        precision = config.precision()                       # fine grid b+1, then prepare()
    else:
        precision = f"w{base}a4,first=w8,last=w8"
    train_config = TrainConfig(model=settings["model"], dataset=settings["dataset"], width=settings["width"],
                               precision=precision, group_size=config.quantizer_group_size,
                               init=settings["init"], seed=seed, device=device)
    torch.manual_seed(seed)
    network = _initial_network(train_config, dataset, model_spec(train_config, dataset), torch.device(device))
    if options.get("extra_bit", True):
        mpq.prepare(network, config)
    began = time.time()
    result = mpq.retrain(network, dataset, config, settings["epochs"], settings["lr"],
                         settings["batch_size"], seed, device=device)
    seconds = time.time() - began
    network.cpu().eval()
    _, fake_quant = evaluate(network, dataset, torch.device("cpu"))
    path = os.path.join(work, f"{family}_{label.replace(' ', '_').replace('(', '').replace(')', '')}"
                              f"_seed{seed}.mpq")
    write_model_file(network, path, {"model": family, "mpq": dataclasses.asdict(config)})
    integer_model = IntegerModel.load(path)
    integer = integer_model.accuracy(dataset.test_x, dataset.test_y)
    compression, storage, uniform = mpq.compression_vs_uniform_w4(integer_model.header, _arrays(path))
    row = {"model": family, "variant": label, "seed": seed, "headline": headline,
           "integer_accuracy": integer, "fake_quant_accuracy": fake_quant,
           "average_weight_bits": storage["average_bits"],
           "hardware_bits_per_weight": storage["hardware_average_bits"],
           "hardware_bits": storage["hardware"], "ideal_bits": storage["ideal"],
           "ideal_bits_per_weight": storage["ideal"] / storage["weights"],
           "uniform_w4_hardware_bits": uniform["hardware"],
           "compression_vs_uniform_w4": compression,
           "ideal_compression_vs_uniform_w4": uniform["ideal"] / storage["ideal"],
           "per_layer": storage["per_layer"], "upgraded_weights": result["upgraded_weights"],
           "frozen_weights": result["frozen_weights"], "switches": result["switches"],
           "epochs": settings["epochs"], "seconds": seconds,
           "seconds_per_epoch": [h["seconds"] for h in result["history"]],
           "mpq_config": dataclasses.asdict(config), "precision_spec": precision,
           "model_file": path, "train_images": len(dataset.train_y), "test_images": len(dataset.test_y)}
    if result["tracker"] is not None and label.startswith("MPQ both per-weight 2+1 f0.10") and seed == 0:
        counters = result["tracker"].counters
        oscillations = torch.cat([c.oscillations.flatten() for c in counters]).numpy()
        drifts = torch.cat([c.drifts.flatten() for c in counters]).numpy()
        row["switch_histogram"] = {
            "oscillations": np.bincount(np.minimum(oscillations, 50)).tolist(),
            "drifts": np.bincount(np.minimum(drifts, 50)).tolist(), "clipped_at": 50}
    print(json.dumps({k: row[k] for k in ("model", "variant", "seed", "integer_accuracy",
                                          "hardware_bits_per_weight", "compression_vs_uniform_w4",
                                          "upgraded_weights", "frozen_weights", "seconds")}), flush=True)
    return row


def _arrays(path):
    from sw.quantize.export import read_model_file
    return read_model_file(path)[1]


def measure_overhead(settings, device, epochs=2, repeats=4):
    """Seconds per epoch of uniform W2 QAT without and with the switch tracker,
    and with tracker + learning-rate rule, interleaved on the same machine."""
    torch.set_num_threads(1)
    dataset = _dataset(settings)
    times = {"plain": [], "tracker": [], "tracker+lr_rule": []}
    for repeat in range(repeats):
        for name, options in (("plain", dict(UNIFORM)), ("tracker", dict(extra_bit=False)),
                              ("tracker+lr_rule", dict(extra_bit=False, **LR))):
            config = mpq.MPQConfig(**options)
            train_config = TrainConfig(model=settings["model"], dataset=settings["dataset"],
                                       width=settings["width"], precision="w2a4,first=w8,last=w8",
                                       group_size=1, init=settings["init"], seed=0)
            network = _initial_network(train_config, dataset, model_spec(train_config, dataset),
                                       torch.device(device))
            result = mpq.retrain(network, dataset, config, epochs, 0.01, settings["batch_size"], 0,
                                 device=device)
            times[name] += [h["seconds"] for h in result["history"]]
    # the fastest epoch of each: the machine is shared, and load only adds time
    plain = min(times["plain"])
    return {"seconds_per_epoch": {k: min(v) for k, v in times.items()},
            "all_epoch_seconds": times,
            "tracker_overhead_percent": 100 * (min(times["tracker"]) / plain - 1),
            "tracker_and_lr_rule_overhead_percent": 100 * (min(times["tracker+lr_rule"]) / plain - 1),
            "setting": (f"digits CNN, per-weight quantizer (group_size 1), uniform W2, 1 thread, "
                        f"fastest of {epochs * repeats} interleaved epochs each")}


def summarise(rows):
    summary = []
    keys = sorted({(r["model"], r["variant"]) for r in rows},
                  key=lambda k: (k[0], min(r["hardware_bits_per_weight"] for r in rows
                                           if (r["model"], r["variant"]) == k)))
    for model, variant in keys:
        group = [r for r in rows if (r["model"], r["variant"]) == (model, variant)]
        accuracy = [r["integer_accuracy"] for r in group]
        summary.append({
            "model": model, "variant": variant, "seeds": [r["seed"] for r in group],
            "integer_accuracy_mean": statistics.mean(accuracy),
            "integer_accuracy_spread": max(accuracy) - min(accuracy),
            "integer_accuracy": accuracy,
            "average_weight_bits": statistics.mean(r["average_weight_bits"] for r in group),
            "hardware_bits_per_weight": statistics.mean(r["hardware_bits_per_weight"] for r in group),
            "compression_vs_uniform_w4": statistics.mean(r["compression_vs_uniform_w4"] for r in group),
            "ideal_compression_vs_uniform_w4":
                statistics.mean(r["ideal_compression_vs_uniform_w4"] for r in group),
            "upgraded_weights": statistics.mean(r["upgraded_weights"] for r in group),
            "frozen_weights": statistics.mean(r["frozen_weights"] for r in group)})
    for entry in summary:   # the line through the uniform points at this entry's bits
        uniform = sorted((s["hardware_bits_per_weight"], s["integer_accuracy_mean"]) for s in summary
                         if s["model"] == entry["model"] and s["variant"].startswith("uniform"))
        if len(uniform) >= 2:
            x = entry["hardware_bits_per_weight"]
            entry["uniform_line_at_same_bits"] = float(np.interp(x, *zip(*uniform)))
            entry["above_uniform_line"] = entry["integer_accuracy_mean"] - entry["uniform_line_at_same_bits"]
    return summary


def write_markdown(result, path):
    lines = ["# MPQ paper experiment (measured)", "",
             f"Command: `{result['command_line']}`", "",
             "Integer accuracy: exported model file run by the integer reference (int64). "
             "Bits per weight: every bit the hardware stores for the weights (hardware groups "
             "of 16 lanes at the group's precision, 3-bit tag per group, per-channel 16-bit "
             "requant multipliers and the per-layer shift) over the weight count; first and last "
             "layers 8-bit in every row. `vs line`: accuracy minus the line through the uniform "
             "W2/W3/W4 points at the same bits (points above the line are worth their metadata).", ""]
    for model in sorted({s["model"] for s in result["summary"]}):
        rows = [s for s in result["summary"] if s["model"] == model]
        settings = result["families"][model]
        lines += [f"## {model}", "",
                  f"width {settings['width']}, {settings['train_images']} training images, "
                  f"{settings['test_images']} test images, {settings['epochs']} QAT epochs from "
                  f"the float checkpoint (float accuracy {100 * settings['float_accuracy']:.2f}%)", "",
                  "| variant | seeds | integer acc. % (mean) | spread | bits/weight (hw) | avg precision | "
                  "compression vs W4 (hw) | (ideal) | vs line | upgraded | frozen |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in rows:
            line = s.get("above_uniform_line")
            lines.append(
                f"| {s['variant']} | {len(s['seeds'])} | {100 * s['integer_accuracy_mean']:.2f} | "
                f"{100 * s['integer_accuracy_spread']:.2f} | {s['hardware_bits_per_weight']:.3f} | "
                f"{s['average_weight_bits']:.3f} | {s['compression_vs_uniform_w4']:.3f} | "
                f"{s['ideal_compression_vs_uniform_w4']:.3f} | "
                f"{'' if line is None else f'{100 * line:+.2f}'} | {s['upgraded_weights']:.0f} | "
                f"{s['frozen_weights']:.0f} |")
        lines.append("")
    overhead = result.get("overhead")
    if overhead:
        lines += ["## Tracking overhead", "",
                  f"{overhead['setting']}: tracker {overhead['tracker_overhead_percent']:+.1f}%, "
                  f"tracker + learning-rate rule {overhead['tracker_and_lr_rule_overhead_percent']:+.1f}% "
                  f"per QAT epoch (seconds: {overhead['seconds_per_epoch']}).", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def plot(result, stem):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({s["model"] for s in result["summary"]})
    figure, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
    for axis, model in zip(axes[0], models):
        rows = [s for s in result["summary"] if s["model"] == model]
        uniform = sorted((s for s in rows if s["variant"].startswith("uniform")),
                         key=lambda s: s["hardware_bits_per_weight"])
        axis.plot([s["hardware_bits_per_weight"] for s in uniform],
                  [100 * s["integer_accuracy_mean"] for s in uniform], "k--o", label="uniform W2/W3/W4")
        for s in rows:
            if s["variant"].startswith("uniform"):
                continue
            marker = "s" if "freezing" in s["variant"] else ("^" if "per-weight" in s["variant"] else "o")
            axis.errorbar(s["hardware_bits_per_weight"], 100 * s["integer_accuracy_mean"],
                          yerr=50 * s["integer_accuracy_spread"], fmt=marker, capsize=3, label=s["variant"])
        axis.set_xlabel("hardware bits per weight (weights + tags + scales)")
        axis.set_ylabel("integer test accuracy (%)")
        axis.set_title(model)
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(f"{stem}_pareto.png", dpi=120)
    plt.close(figure)

    histograms = [r for r in result["rows"] if "switch_histogram" in r]
    if histograms:
        figure, axes = plt.subplots(1, len(histograms), figsize=(5.5 * len(histograms), 3.5), squeeze=False)
        for axis, row in zip(axes[0], histograms):
            h = row["switch_histogram"]
            for name in ("oscillations", "drifts"):
                counts = np.array(h[name])
                axis.bar(np.arange(len(counts)) + (0.2 if name == "drifts" else -0.2), counts, width=0.4,
                         label=name, log=True)
            axis.set_xlabel(f"switches per weight over retraining (clipped at {h['clipped_at']})")
            axis.set_ylabel("weights")
            axis.set_title(f"{row['model']}: {row['variant']}, seed {row['seed']}")
            axis.legend()
        figure.tight_layout()
        figure.savefig(f"{stem}_switches.png", dpi=120)
        plt.close(figure)

    chosen = [r for r in result["rows"] if r["seed"] == 0 and (r["variant"].startswith("MPQ both per")
                                                              and "f0.10" in r["variant"] and "2+1" in r["variant"]
                                                              or r["variant"] == "uniform W2")]
    if chosen:
        figure, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 3.5), squeeze=False)
        for axis, model in zip(axes[0], models):
            runs = [r for r in chosen if r["model"] == model]
            width = 0.8 / max(1, len(runs))
            for i, row in enumerate(runs):
                names = [p["name"] for p in row["per_layer"]]
                axis.bar(np.arange(len(names)) + i * width, [p["hardware_mean_bits"] for p in row["per_layer"]],
                         width=width, label=row["variant"])
            axis.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
            axis.set_xticklabels(names)
            axis.set_xlabel("layer")
            axis.set_ylabel("mean hardware-group precision (bits)")
            axis.set_title(model)
            axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(f"{stem}_layers.png", dpi=120)
        plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", default="/tmp/cifar")
    parser.add_argument("--work", default="runs/mpq_paper")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--full", action="store_true", help="full-width VGG-9 on all images (GPU)")
    parser.add_argument("--cifar-width", type=float, default=0.125)
    parser.add_argument("--cifar-train-images", type=int, default=10000)
    parser.add_argument("--cifar-test-images", type=int, default=None)
    parser.add_argument("--cifar-epochs", type=int, default=2)
    parser.add_argument("--digits-epochs", type=int, default=15)
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--cifar-variants", nargs="+", default=None,
                        help="VGG-9 variants to run (default: the VGG-9 table)")
    parser.add_argument("--cifar-seeds", type=int, nargs="+", default=None)
    parser.add_argument("--digits-variants", nargs="+", default=None)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--append", action="store_true",
                        help="add rows to WORK/rows.jsonl (then --render for the full table)")
    parser.add_argument("--render", action="store_true",
                        help="only rebuild the JSON, table and plots from WORK/rows.jsonl")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "mpq_paper"))
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    os.makedirs(args.work, exist_ok=True)
    began = time.time()
    families = ([] if args.skip_digits else ["digits-cnn"]) + ([] if args.skip_cifar else ["vgg9"])
    jobs, settings_of = [], {}
    for family in families:
        settings = family_settings(family, args)
        settings["init"] = FLOAT[family]
        float_network, spec = network_from_checkpoint(settings["init"])
        if (spec["model"], spec["width"]) != (settings["model"], settings["width"]):
            raise SystemExit(f"{settings['init']} is {spec['model']} at width {spec['width']}")
        dataset = _dataset(settings)
        _, float_accuracy = evaluate(float_network, dataset, torch.device("cpu"))
        settings_of[family] = dict(settings, float_accuracy=float_accuracy,
                                   train_images=len(dataset.train_y), test_images=len(dataset.test_y))
        for label, (_, _, headline) in variants(family).items():
            if family == "vgg9" and args.cifar_variants and label not in args.cifar_variants:
                continue
            if family == "digits-cnn" and args.digits_variants and label not in args.digits_variants:
                continue
            # off the headline, VGG-9 on a CPU gets one seed (the time budget)
            seeds = args.seeds if headline or family == "digits-cnn" or args.full else args.seeds[:1]
            if family == "vgg9" and args.cifar_seeds:
                seeds = args.cifar_seeds
            for seed in seeds:
                jobs.append((family, label, seed, settings, args.work, device, 1))
    jobs.sort(key=lambda job: job[0] != "vgg9")      # the long runs first
    rows_path = os.path.join(args.work, "rows.jsonl")
    if args.render:
        with open(rows_path) as f:
            rows = [json.loads(line) for line in f]
        overhead = json.load(open(os.path.join(args.work, "overhead.json")))
    else:
        if not args.append:
            open(rows_path, "w").close()
            open(os.path.join(args.work, "commands.txt"), "w").close()
        with open(os.path.join(args.work, "commands.txt"), "a") as f:
            f.write("python " + " ".join(sys.argv) + "\n")
        if args.jobs > 1 and device == "cpu":
            with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
                rows = []
                for row in pool.imap_unordered(run_variant, jobs, chunksize=1):
                    rows.append(row)
                    with open(rows_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
        else:
            rows = []
            for job in jobs:
                rows.append(run_variant(job))
                with open(rows_path, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
        if args.append:
            print(f"appended {len(rows)} rows to {rows_path}; run again with --render")
            return
        overhead = measure_overhead(settings_of["digits-cnn"], device)
        with open(os.path.join(args.work, "overhead.json"), "w") as f:
            json.dump(overhead, f)
    rows.sort(key=lambda r: (r["model"], r["variant"], r["seed"]))
    with open(os.path.join(args.work, "commands.txt")) as f:
        commands = [line.strip() for line in f if line.strip()]
    if args.render:
        commands.append("python " + " ".join(sys.argv))
    result = {"command_line": " && ".join(commands), "device": device,
              "families": settings_of, "summary": summarise(rows), "overhead": overhead,
              "rows": rows, "total_seconds": time.time() - began,
              "notes": ("All rows of a model start from the same float checkpoint; a seed changes "
                        "calibration sample and data order. First and last layers keep 8-bit weights "
                        "(the uniform baseline's policy); activations 4-bit everywhere.")}
    if args.out == str(RESULTS / "mpq_paper"):
        write_json("mpq_paper", result)
    else:
        with open(args.out + ".json", "w") as f:
            json.dump(result, f, indent=1)
    write_markdown(result, args.out + ".md")
    plot(result, args.out)
    print(f"wrote {args.out}.json, .md and plots in {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
