#!/usr/bin/env python3
"""Uniform QAT baseline: float, then W4A4 / W3A3 / W2A2 retrained from it, for
the digits CNN and for VGG-9 on CIFAR-10; integer accuracy from the exported
model file run by the integer reference.

    .venv/bin/python bench/qat_baseline.py --cifar /tmp/cifar
    (make the CIFAR copy first: python /work/shared/data/cifar10/to_batches.py /tmp/cifar)

Writes bench/results/qat_baseline.json and qat_baseline.png. On a CPU VGG-9
runs at reduced width on a subset of the training images (see the JSON);
with a GPU, `--full` trains full width on all images.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import save_figure  # noqa: E402
from common.files import write_atomically  # noqa: E402
from sw.quantize.data import load_dataset  # noqa: E402
from sw.quantize.export import git_revision, write_model_file  # noqa: E402
from sw.quantize.reference import IntegerModel  # noqa: E402
from sw.quantize.train import TrainConfig, evaluate, network_from_checkpoint, train  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PRECISIONS = {"W4A4": "w4a4,first=w8,last=w8", "W3A3": "w3a3,first=w8,last=w8",
              "W2A2": "w2a2,first=w8,last=w8"}


def _command(config):
    parts = ["mpq train"]
    defaults = TrainConfig()
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value == getattr(defaults, field.name) or field.name in ("progress", "resume"):
            continue
        flag = "--" + field.name.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {value}")
    return " ".join(parts)


def run_family(name, base, float_epochs, qat_epochs, qat_lr, work, float_reference):
    """Float pre-training, then one QAT run per precision; returns result rows."""
    rows = []
    dataset = load_dataset(base.dataset, base.data, limit_train=base.limit_train)
    float_config = dataclasses.replace(base, precision="float", epochs=float_epochs,
                                       out=os.path.join(work, f"{name}_float"))
    log = train(float_config)
    float_accuracy = log[-1]["test_accuracy"]
    rows.append({"load_average_at_end": os.getloadavg()[0],
                 "model": name, "precision": "float", "float_accuracy": float_accuracy,
                 "epochs": float_epochs, "seconds_per_epoch": _mean_seconds(log),
                 "command": _command(float_config)})
    if float_reference:
        longer = dataclasses.replace(float_config, epochs=float_epochs + qat_epochs,
                                     out=os.path.join(work, f"{name}_float_long"))
        log = train(longer)
        rows.append({"load_average_at_end": os.getloadavg()[0],
                     "model": name, "precision": "float (same total epochs as QAT)",
                     "float_accuracy": log[-1]["test_accuracy"], "epochs": longer.epochs,
                     "seconds_per_epoch": _mean_seconds(log), "command": _command(longer)})
    for label, precision in PRECISIONS.items():
        config = dataclasses.replace(base, precision=precision, epochs=qat_epochs, lr=qat_lr,
                                     init=os.path.join(float_config.out, "checkpoint.pt"),
                                     out=os.path.join(work, f"{name}_{label.lower()}"))
        log = train(config)
        checkpoint = os.path.join(config.out, "checkpoint.pt")
        network, _ = network_from_checkpoint(checkpoint)
        _, fake_quant = evaluate(network, dataset, torch.device("cpu"))
        model_path = os.path.join(config.out, "model.mpq")
        write_model_file(network, model_path, {"model": base.model, "precision": precision})
        began = time.time()
        integer = IntegerModel.load(model_path).accuracy(dataset.test_x, dataset.test_y)
        rows.append({
            "load_average_at_end": os.getloadavg()[0],
            "model": name, "precision": label, "precision_spec": precision,
            "integer_accuracy": integer, "fake_quant_accuracy": fake_quant,
            "integer_minus_fake_quant": integer - fake_quant,
            "float_accuracy": float_accuracy, "integer_minus_float": integer - float_accuracy,
            "epochs": qat_epochs, "float_pretrain_epochs": float_epochs,
            "seconds_per_epoch": _mean_seconds(log),
            "integer_inference_seconds": time.time() - began,
            "command": _command(config) + f"; mpq export {checkpoint} -o {model_path}; "
                       f"mpq eval {model_path} --dataset {base.dataset}"
                       + (f" --data {base.data}" if base.data else "")})
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        row.update(width=base.width, dataset=base.dataset, train_images=len(dataset.train_y),
                   test_images=len(dataset.test_y), data_source=dataset.source)
    return rows


def _mean_seconds(log):
    return sum(entry["seconds"] for entry in log) / len(log)


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = sorted({row["model"] for row in rows})
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 3.5), squeeze=False)
    for axis, model in zip(axes[0], models):
        quantized = [row for row in rows if row["model"] == model and "integer_accuracy" in row]
        labels = [row["precision"] for row in quantized]
        axis.bar(labels, [100 * row["integer_accuracy"] for row in quantized], label="integer model")
        axis.axhline(100 * quantized[0]["float_accuracy"], color="k", linestyle="--", label="float")
        low = min(100 * row["integer_accuracy"] for row in quantized)
        axis.set_ylim(max(0, low - 10), 100)
        axis.set_title(f"{model} (width {quantized[0]['width']})")
        axis.set_ylabel("test accuracy (%)")
        axis.legend(loc="lower left")
    figure.tight_layout()
    save_figure(figure, path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar", default="/tmp/cifar", help="folder holding cifar-10-batches-py/")
    parser.add_argument("--work", default="runs/qat_baseline", help="checkpoints and model files")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "qat_baseline.json"))
    parser.add_argument("--full", action="store_true", help="full-width VGG-9 on all images (GPU)")
    parser.add_argument("--cifar-width", type=float, default=0.125)
    parser.add_argument("--cifar-train-images", type=int, default=10000)
    parser.add_argument("--cifar-float-epochs", type=int, default=4)
    parser.add_argument("--cifar-qat-epochs", type=int, default=2)
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished runs in --work and resume interrupted ones")
    args = parser.parse_args()
    torch.set_num_threads(2 if not torch.cuda.is_available() else torch.get_num_threads())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    began = time.time()
    rows = []
    digits = TrainConfig(model="digits-cnn", dataset="digits", batch_size=64, lr=0.05, seed=0,
                         device=device, progress=False, resume=args.resume)
    rows += run_family("digits-cnn", digits, 15, 15, 0.01, args.work, float_reference=True)
    if not args.skip_cifar:
        width, images = (1.0, None) if args.full else (args.cifar_width, args.cifar_train_images)
        cifar = TrainConfig(model="vgg9", dataset="cifar10", data=args.cifar, width=width,
                            batch_size=128, lr=0.05, seed=0, device=device, limit_train=images,
                            progress=False, resume=args.resume)
        rows += run_family("vgg9", cifar, args.cifar_float_epochs, args.cifar_qat_epochs, 0.01,
                           args.work, float_reference=True)
    result = {
        "command": "python " + " ".join(sys.argv),
        "git_revision": git_revision(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": device, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "notes": ("seconds_per_epoch is wall time on a machine that may be shared: "
                  "load_average_at_end (1-minute load, 2 cores) tells how busy it was. "
                  "Accuracy is the integer model's (exported file, integer reference, int64 only); "
                  "fake-quant accuracy is the training-time diagnostic. W*A* rows keep 8-bit "
                  "weights in the first and last layers; the network input is the raw 8-bit image. "
                  "QAT starts from the float row's checkpoint. CIFAR-10 figures are on the "
                  "JPEG-decoded offline copy (see /work/shared/data/cifar10/README.md), at reduced "
                  "width and on a training subset on this CPU."),
        "total_seconds": time.time() - began,
        "rows": rows,
    }
    write_atomically(args.out, json.dumps(result, indent=1))
    _plot(rows, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
