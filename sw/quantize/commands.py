"""`mpq train`, `mpq export`, `mpq eval`."""

import dataclasses
import json
import os
import sys

import torch

from sw.errors import UserError
from sw.quantize.train import TrainConfig


def register(subparsers):
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="float pre-training or quantization-aware retraining",
        description="Train a float network (--precision float) or retrain it with quantized "
                    "weights and activations (--precision w4a4 --init FLOAT/checkpoint.pt). "
                    "Writes OUT/log.jsonl and OUT/checkpoint.pt every epoch. Under torchrun, "
                    "trains with DDP (gloo on CPU, NCCL on GPU).")
    parser.add_argument("--model", default=defaults.model, help="vgg9 or digits-cnn (default %(default)s)")
    parser.add_argument("--dataset", default=defaults.dataset, help="digits or cifar10 (default %(default)s)")
    parser.add_argument("--data", default=None, help="CIFAR-10 folder (holding cifar-10-batches-py/)")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 through torchvision if absent")
    parser.add_argument("--width", type=float, default=defaults.width, help="channel width multiplier")
    parser.add_argument("--precision", default=defaults.precision,
                        help="float, w4a4, 'w4a4,first=w8,last=w8' or a JSON file (default %(default)s)")
    parser.add_argument("--group-size", type=int, default=defaults.group_size,
                        help="weights per group along the input channel (default %(default)s)")
    parser.add_argument("--init", default=None, help="float checkpoint to start retraining from")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="global batch size, split across processes (default %(default)s)")
    parser.add_argument("--optimizer", default=defaults.optimizer, help="sgd or adam")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--lr-schedule", default=defaults.lr_schedule, help="cosine, step or constant")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--out", default=defaults.out, help="output directory (default %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--limit-train", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--limit-test", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_train)

    parser = subparsers.add_parser(
        "export", help="write a retrained network as an integer model file",
        description="Export a quantized training checkpoint to the mpq-model format "
                    "(docs/model_format.md).")
    parser.add_argument("checkpoint", help="a quantized checkpoint.pt from mpq train")
    parser.add_argument("-o", "--out", required=True, help="model file to write (e.g. model.mpq)")
    parser.set_defaults(run=run_export)

    parser = subparsers.add_parser(
        "eval", help="accuracy of the integer reference on a model file",
        description="Run the integer reference (int64 only) on the test set and print its "
                    "accuracy as JSON. A checkpoint.pt instead of a model file gives the "
                    "float or fake-quant accuracy (a diagnostic).")
    parser.add_argument("model", help="model file from mpq export (or a checkpoint.pt)")
    parser.add_argument("--dataset", default="digits", help="digits or cifar10 (default %(default)s)")
    parser.add_argument("--data", default=None, help="CIFAR-10 folder (holding cifar-10-batches-py/)")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--limit-test", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    parser.set_defaults(run=run_eval)


def run_train(args):
    from sw.quantize.train import train
    config = TrainConfig(model=args.model, dataset=args.dataset, data=args.data, download=args.download,
                         width=args.width, precision=args.precision, group_size=args.group_size,
                         init=args.init, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer, lr=args.lr, lr_schedule=args.lr_schedule,
                         weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                         threads=args.threads, out=args.out, resume=args.resume,
                         limit_train=args.limit_train, limit_test=args.limit_test,
                         progress=not args.no_progress)
    log = train(config)
    if log and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(log[-1]))
    return 0


def run_export(args):
    from sw.quantize.convert import QuantNetwork
    from sw.quantize.export import write_model_file
    from sw.quantize.train import network_from_checkpoint
    network, spec = network_from_checkpoint(args.checkpoint)
    if not isinstance(network, QuantNetwork):
        raise UserError(f"{args.checkpoint} is a float checkpoint; retrain it with a quantized "
                        "--precision (mpq train --init ...) before exporting")
    metadata = {k: spec[k] for k in ("model", "width", "dataset", "mean", "std", "precision")}
    header = write_model_file(network, args.out, metadata)
    print(f"wrote {args.out}: {len(header['layers'])} layers, format {header['format']} "
          f"version {header['version']}")
    return 0


def run_eval(args):
    from sw.quantize import data as data_module
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = data_module.load_dataset(args.dataset, args.data, args.download, None, args.limit_test)
    if args.model.endswith(".pt"):
        from sw.quantize.convert import QuantNetwork
        from sw.quantize.train import evaluate, network_from_checkpoint
        network, spec = network_from_checkpoint(args.model)
        _, accuracy = evaluate(network, dataset, torch.device("cpu"), args.batch_size)
        kind = "fake_quant" if isinstance(network, QuantNetwork) else "float"
        result = {"model": args.model, "kind": kind, "accuracy": accuracy}
    else:
        from sw.quantize.reference import IntegerModel
        model = IntegerModel.load(args.model)
        if tuple(dataset.input_shape) != model.input_shape:
            raise UserError(f"{args.model} takes images of shape {model.input_shape}; data set "
                            f"{args.dataset} has {tuple(dataset.input_shape)}")
        accuracy = model.accuracy(dataset.test_x, dataset.test_y, args.batch_size, progress=True)
        result = {"model": args.model, "kind": "integer", "accuracy": accuracy}
    result.update(dataset=args.dataset, source=dataset.source, images=len(dataset.test_y))
    print(json.dumps(result))
    if args.json:
        temporary = f"{args.json}.tmp{os.getpid()}"
        with open(temporary, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(temporary, args.json)
    return 0
