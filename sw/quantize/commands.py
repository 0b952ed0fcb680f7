"""`mpq train`, `mpq export`, `mpq eval`."""

import json
import os

from common.arguments import nonnegative_float, positive_float, positive_int
from common.errors import UserError
from sw.quantize.train_config import DATASETS, LR_SCHEDULES, MODELS, OPTIMIZERS, TrainConfig


def register(subparsers):
    _register_train(subparsers)
    _register_export(subparsers)
    _register_eval(subparsers)


def _register_train(subparsers):
    defaults = TrainConfig()
    parser = subparsers.add_parser(
        "train", help="float pre-training or quantization-aware retraining",
        description="Train a float network (--precision float) or retrain it with quantized "
                    "weights and activations (--precision w4a4 --init FLOAT/checkpoint.pt). "
                    "Writes OUT/log.jsonl and OUT/checkpoint.pt every epoch (atomically); a run "
                    "stopped for any reason continues with --resume and ends with the same "
                    "weights. Under torchrun, trains with DDP (gloo on CPU, NCCL on GPU).",
        epilog="The usual flow: `mpq train --out runs/float` (float pre-training), then "
               "`mpq train --precision 'w4a4,first=w8,last=w8' --init runs/float/checkpoint.pt "
               "--out runs/w4a4`, then `mpq export runs/w4a4/checkpoint.pt -o w4a4.mpq`.")
    what = parser.add_argument_group("what to train")
    what.add_argument("--model", default=defaults.model, metavar="MODEL",
                      help=f"network: {', '.join(MODELS)}, or your own as PATH.py:NAME or "
                           "package.module:NAME, NAME a class or function called with "
                           "num_classes= and in_channels= where it takes them "
                           "(docs/quantize.md); default %(default)s")
    what.add_argument("--dataset", default=defaults.dataset, choices=DATASETS,
                      help="data set: digits ships with scikit-learn; cifar10 needs --data "
                           "(default %(default)s)")
    what.add_argument("--data", default=None,
                      help="CIFAR-10 folder (holding cifar-10-batches-py/, the official python "
                           "layout)")
    what.add_argument("--download", action="store_true",
                      help="download CIFAR-10 into --data through torchvision if absent")
    what.add_argument("--width", type=positive_float, default=defaults.width,
                      help="channel width multiplier: 0.25 is a quarter of the channels of "
                           "every layer; your own network gets it as width= and must take it "
                           "(default %(default)s)")
    what.add_argument("--precision", default=defaults.precision,
                      help="float (pre-training), or weight/activation bits for retraining: "
                           "w4a4, 'w4a4,first=w8,last=w8', 'w2a4,3=w4' (layer 3), or a JSON "
                           "file (docs/quantize.md); default %(default)s")
    what.add_argument("--group-size", type=positive_int, default=defaults.group_size,
                      help="weights per group along the input channel; each group has its own "
                           "bits and step (default %(default)s)")
    what.add_argument("--init", default=None,
                      help="float checkpoint.pt to start retraining from (needed for a "
                           "quantized --precision to start from a trained network)")
    how = parser.add_argument_group("how to train")
    how.add_argument("--epochs", type=positive_int, default=defaults.epochs,
                     help="passes over the training split (default %(default)s)")
    how.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                     help="global batch size, split across processes (default %(default)s)")
    how.add_argument("--optimizer", default=defaults.optimizer, choices=OPTIMIZERS,
                     help="default %(default)s (momentum 0.9)")
    how.add_argument("--lr", type=positive_float, default=defaults.lr,
                     help="peak learning rate (default %(default)s)")
    how.add_argument("--lr-schedule", default=defaults.lr_schedule, choices=LR_SCHEDULES,
                     help="learning-rate schedule over the epochs (default %(default)s)")
    how.add_argument("--weight-decay", type=nonnegative_float, default=defaults.weight_decay,
                     help="L2 weight decay (default %(default)s)")
    how.add_argument("--seed", type=int, default=defaults.seed,
                     help="seeds weights, data order and augmentation (default %(default)s)")
    how.add_argument("--device", default=defaults.device,
                     help="cpu, cuda, cuda:N or auto (default %(default)s)")
    how.add_argument("--threads", type=positive_int, default=None,
                     help="CPU threads per process (default: torch's choice)")
    how.add_argument("--limit-train", type=positive_int, default=None,
                     help="use only the first N training images (quick runs)")
    how.add_argument("--limit-test", type=positive_int, default=None,
                     help="use only the first N test images")
    where = parser.add_argument_group("output")
    where.add_argument("--out", default=defaults.out,
                       help="run folder for checkpoint.pt and log.jsonl (default %(default)s)")
    where.add_argument("--resume", action="store_true",
                       help="continue the run in OUT/checkpoint.pt (same settings)")
    where.add_argument("--force", action="store_true",
                       help="start over in an --out that holds an earlier run's checkpoint "
                            "(it is replaced)")
    where.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_train)


def _register_export(subparsers):
    parser = subparsers.add_parser(
        "export", help="write a retrained network as an integer model file",
        description="Export a quantized training checkpoint to the mpq-model format "
                    "(docs/model_format.md).")
    parser.add_argument("checkpoint", help="a quantized checkpoint.pt from mpq train")
    parser.add_argument("-o", "--out", required=True,
                        help="model file to write (e.g. model.mpq), replaced atomically")
    parser.add_argument("--force", action="store_true",
                        help="replace -o even if it is not a model file")
    parser.set_defaults(run=run_export)


def _register_eval(subparsers):
    parser = subparsers.add_parser(
        "eval", help="accuracy of the integer reference on a model file",
        description="Run the integer reference (int64 only) on the test set and print its "
                    "accuracy as JSON. A checkpoint.pt instead of a model file gives the "
                    "float or fake-quant accuracy (a diagnostic).")
    parser.add_argument("model", help="model file from mpq export (or a checkpoint.pt)")
    parser.add_argument("--dataset", default="digits", choices=DATASETS,
                        help="data set (default %(default)s)")
    parser.add_argument("--data", default=None,
                        help="CIFAR-10 folder (holding cifar-10-batches-py/)")
    parser.add_argument("--download", action="store_true",
                        help="download CIFAR-10 into --data through torchvision if absent")
    parser.add_argument("--limit-test", type=positive_int, default=None,
                        help="use only the first N test images")
    parser.add_argument("--batch-size", type=positive_int, default=100,
                        help="images per batch (default %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    parser.add_argument("--force", action="store_true",
                        help="replace --json even if it is not an earlier mpq eval result")
    parser.set_defaults(run=run_eval)


def run_train(args):
    from sw.quantize.train import train
    config = TrainConfig(model=args.model, dataset=args.dataset, data=args.data, download=args.download,
                         width=args.width, precision=args.precision, group_size=args.group_size,
                         init=args.init, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=args.optimizer, lr=args.lr, lr_schedule=args.lr_schedule,
                         weight_decay=args.weight_decay, seed=args.seed, device=args.device,
                         threads=args.threads, out=args.out, resume=args.resume, force=args.force,
                         limit_train=args.limit_train, limit_test=args.limit_test,
                         progress=not args.no_progress)
    log = train(config)
    if log and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(log[-1]))
    return 0


def run_export(args):
    from common.files import check_output_file
    from sw.quantize.convert import QuantNetwork
    from sw.quantize.export import write_model_file
    from sw.quantize.train import network_from_checkpoint
    if not args.out.strip():
        raise UserError("-o is empty: give the model file to write (e.g. model.mpq)")
    if os.path.isdir(args.out):
        raise UserError(f"-o {args.out} is a directory; give the model file to write "
                        f"(e.g. {os.path.join(args.out, 'model.mpq')})")
    if os.path.exists(args.out) and os.path.exists(args.checkpoint) and \
            os.path.samefile(args.out, args.checkpoint):
        raise UserError(f"-o {args.out} is the checkpoint being exported; give another file name")
    check_output_file(args.out, "export", _is_model_file, force=args.force)
    network, spec = network_from_checkpoint(args.checkpoint)
    if not isinstance(network, QuantNetwork):
        raise UserError(f"{args.checkpoint} is a float checkpoint; retrain it with a quantized "
                        "--precision (mpq train --init ...) before exporting")
    metadata = {k: spec[k] for k in ("model", "width", "dataset", "mean", "std", "precision")}
    header = write_model_file(network, args.out, metadata)
    print(f"wrote {args.out}: {len(header['layers'])} layers, format {header['format']} "
          f"version {header['version']}")
    return 0


def _is_model_file(path):
    import zipfile
    with zipfile.ZipFile(path) as archive:
        return "header.json" in archive.namelist()


def _is_eval_result(path):
    with open(path) as f:
        result = json.load(f)
    return isinstance(result, dict) and {"model", "kind", "accuracy"} <= set(result)


def run_eval(args):
    import torch

    from common.files import check_output_file, write_atomically
    from sw.quantize import data as data_module

    if args.json:
        check_output_file(args.json, "eval", _is_eval_result, force=args.force, option="--json")
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
        write_atomically(args.json, json.dumps(result, indent=1) + "\n")
    return 0
