"""Training: float pre-training and quantization-aware retraining.

One epoch loop for both; on one CPU, one GPU, or several processes under
`torchrun` (DDP: gloo on CPU, NCCL on GPU). Every epoch rewrites `OUT/log.jsonl`
(a JSON line per epoch) and replaces `OUT/checkpoint.pt` with everything a
resume needs (model, optimizer, scheduler, RNG states, log), both atomically;
the data order and augmentation of epoch `e` come from a generator seeded by `(seed, e)`. A run
killed and resumed with `--resume` therefore ends with exactly the weights of
an uninterrupted one.
"""

import dataclasses
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.files import write_atomically, writing_file
from common.progress import Progress
from sw.quantize import data as data_module
from sw.quantize import user_model
from sw.quantize.config import parse_precision
from sw.quantize.convert import QuantNetwork, calibrate, quantize_network
from sw.quantize.graph import plan_layers
from sw.quantize.models import build_model
from sw.quantize.train_config import TrainConfig  # noqa: F401 - re-exported for callers

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CHECKPOINT_FORMAT = "mpq-checkpoint"
CHECKPOINT_VERSION = 1


# -- processes and devices ---------------------------------------------------------
def _distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))


def _device(name, local_rank):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        if name == "cuda":
            name = f"cuda:{local_rank}"
        # TF32 would make the float accumulation of integer operands inexact.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif name != "cpu":
        raise UserError(f"unknown device {name!r}; use cpu, cuda or auto")
    return torch.device(name)


# -- model building ----------------------------------------------------------------------
def model_spec(config, dataset):
    spec = {"model": config.model, "width": config.width, "dataset": config.dataset,
            "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes,
            "mean": list(dataset.mean), "std": list(dataset.std),
            "precision": parse_precision(config.precision, config.group_size).to_dict()}
    if user_model.is_user_model(config.model):
        # Rebuilt from the file later (export, eval, --init): its hash says if it changed.
        located = user_model.locate(config.model)
        spec.update(model=located.spec, model_sha256=located.sha256())
    return spec


class _DatasetInfo:
    def __init__(self, spec):
        self.input_shape = tuple(spec["input_shape"])
        self.num_classes = spec["num_classes"]
        self.mean, self.std = spec["mean"], spec["std"]


def build_network(spec):
    """The float or quantized network a model spec describes (fresh weights)."""
    from sw.quantize.config import PrecisionConfig
    if user_model.is_user_model(spec["model"]):
        user_model.check_unchanged(spec["model"], spec.get("model_sha256"))
    model = build_model(spec["model"], spec["width"], _DatasetInfo(spec))
    precision = PrecisionConfig.from_dict(spec["precision"])
    if precision.is_float:
        return model
    return quantize_network(model, precision, tuple(spec["input_shape"]))


def load_checkpoint(path, map_location="cpu"):
    if os.path.isdir(path):
        inside = os.path.join(path, CHECKPOINT)
        hint = f"give {inside}" if os.path.isfile(inside) else f"give OUT/{CHECKPOINT} from mpq train"
        raise UserError(f"{path} is a directory, not a training checkpoint; {hint}")
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}")
    import zipfile
    try:  # a model file is a zip with header.json (a checkpoint is a zip too, without it)
        with zipfile.ZipFile(path) as archive:
            is_model_file = "header.json" in archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        is_model_file = False
    if is_model_file:
        raise UserError(f"{path} is an mpq model file (from mpq export), not a training "
                        f"checkpoint; give OUT/{CHECKPOINT} from mpq train")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises many types (and long texts) on a bad file
        raise UserError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, or truncated or "
                        f"corrupted ({type(error).__name__}); give OUT/{CHECKPOINT} from mpq "
                        "train") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an mpq training checkpoint")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: checkpoint version {checkpoint.get('version')!r}, "
                        f"this mpq reads version {CHECKPOINT_VERSION}")
    return checkpoint


def _load_weights(network, checkpoint, path):
    try:
        network.load_state_dict(checkpoint["model"])
    except RuntimeError as error:  # the user's file changed since training
        first = str(error).strip().splitlines()
        raise UserError(f"{path}: its weights do not fit the network {checkpoint['spec']['model']} "
                        f"builds now ({first[1].strip() if len(first) > 1 else first[0]}); was "
                        "the network's file changed since training?") from None


def network_from_checkpoint(path, map_location="cpu"):
    """`(network, spec)` rebuilt from a checkpoint, in eval mode."""
    checkpoint = load_checkpoint(path, map_location)
    network = build_network(checkpoint["spec"])
    _load_weights(network, checkpoint, path)
    network.eval()
    return network, checkpoint["spec"]


def _initial_network(config, dataset, spec, device):
    precision = parse_precision(config.precision, config.group_size)
    if config.init:
        checkpoint = load_checkpoint(config.init)
        init_spec = checkpoint["spec"]
        if (init_spec["model"], init_spec["width"]) != (spec["model"], config.width):
            raise UserError(f"--init {config.init} holds {init_spec['model']} at width "
                            f"{init_spec['width']}, not {spec['model']} at width {config.width}")
        if init_spec["precision"]["weight_bits"] is not None:
            raise UserError(f"--init {config.init} is not a float checkpoint")
        if user_model.is_user_model(spec["model"]):
            user_model.check_unchanged(spec["model"], init_spec.get("model_sha256"))
    float_model = build_model(config.model, config.width, dataset)
    if config.init:
        _load_weights(float_model, checkpoint, config.init)
    if precision.is_float:
        # Refuse a network the accelerator cannot take before training it, not at export.
        plan_layers(float_model, dataset.input_shape)
        return float_model.to(device)
    network = quantize_network(float_model, precision, dataset.input_shape).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    sample = torch.randperm(len(dataset.train_y), generator=generator)[:256]
    calibrate(network, dataset.train_x[sample].to(device))
    return network


# -- optimisation ---------------------------------------------------------------------------
def _optimizer(config, network):
    decay, no_decay = [], []
    for name, parameter in network.named_parameters():
        is_weight = parameter.dim() > 1
        (decay if is_weight else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    raise UserError(f"unknown optimizer {config.optimizer!r}; use sgd or adam")


def _schedule(config, optimizer, steps_per_epoch):
    total = max(1, config.epochs * steps_per_epoch)
    rules = {
        "cosine": lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)),
        "step": lambda step: 0.1 ** (step * 3 // total),
        "constant": lambda step: 1.0,
    }
    rule = rules.get(config.lr_schedule)
    if rule is None:
        raise UserError(f"unknown learning-rate schedule {config.lr_schedule!r}; "
                        "use cosine, step or constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, rule)


@torch.no_grad()
def evaluate(network, dataset, device, batch_size=500):
    """`(loss, accuracy)` of a float or fake-quant network on the test set."""
    network.eval()
    loss, correct = 0.0, 0
    for images, labels in data_module.epoch_batches(dataset, batch_size, 0, 0, train=False):
        logits = network(images.to(device).float())
        labels = labels.to(device)
        loss += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    count = len(dataset.test_y)
    return loss / count, correct / count


# -- files -----------------------------------------------------------------------------------
def _atomic_save(obj, path):
    with writing_file(path) as temporary:
        torch.save(obj, temporary)


def _is_log(path):
    """Whether `path` reads as a log this command wrote (one JSON entry with
    an epoch and its seconds per line), so a new run may replace it."""
    try:
        with open(path) as f:
            entries = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return False
    return all(isinstance(e, dict) and "epoch" in e and "seconds" in e for e in entries)


def _write_log(path, entries):
    write_atomically(path, "".join(json.dumps(entry) + "\n" for entry in entries))


def _rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _resume_config_check(saved, config):
    keys = ("model", "dataset", "width", "precision", "group_size", "epochs", "batch_size",
            "optimizer", "lr", "lr_schedule", "weight_decay", "momentum", "seed", "init",
            "limit_train")
    different = [k for k in keys if saved.get(k) != getattr(config, k)]
    if different:
        raise UserError("--resume with different settings than the checkpoint: " +
                        ", ".join(f"{k} ({saved.get(k)!r} there, {getattr(config, k)!r} now)"
                                  for k in different))


# -- the loop --------------------------------------------------------------------------------
def train(config, on_step=None):
    """Train as `config` says; returns the list of per-epoch log entries.
    `on_step(epoch, step, steps_per_epoch)` (1-based) after every step."""
    config.check()
    if user_model.is_user_model(config.model):  # the same run from any folder (--resume)
        config = dataclasses.replace(config, model=user_model.locate(config.model).spec)
    checkpoint_path = os.path.join(config.out, CHECKPOINT)
    log_path = os.path.join(config.out, LOG)
    _check_out(config, checkpoint_path, log_path)
    world, rank, device = _start_processes(config)
    dataset = data_module.load_dataset(config.dataset, config.data, config.download,
                                       config.limit_train, config.limit_test)
    spec = model_spec(config, dataset)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    network = _initial_network(config, dataset, spec, device)
    optimizer = _optimizer(config, network)
    steps_per_epoch = sum(1 for _ in range(0, len(dataset.train_y), config.batch_size))
    scheduler = _schedule(config, optimizer, steps_per_epoch)
    try:
        os.makedirs(config.out, exist_ok=True)
    except OSError as error:
        raise UserError(f"--out {config.out}: cannot create the folder ({error.strerror}); "
                        "give a writable folder path") from None
    log, start = [], 0
    if config.resume:
        log, start = _resume(config, checkpoint_path, device, network, optimizer, scheduler)
        if rank == 0:   # the checkpoint's log: a run killed between its two writes lost a line
            _write_log(log_path, log)
    model = network
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    is_quantized = isinstance(network, QuantNetwork)
    for epoch in range(start, config.epochs):
        if config.stop_after_epoch is not None and epoch > config.stop_after_epoch:
            break
        batches = data_module.epoch_batches(dataset, config.batch_size, epoch, config.seed, rank, world)
        # A bar on a terminal, a line every few seconds in a log; the epoch's
        # summary line below replaces it.
        bar = Progress(f"epoch {epoch + 1}/{config.epochs}", steps_per_epoch, "batch",
                       leave=False) if config.progress and rank == 0 else None

        def after_step(step, epoch=epoch, bar=bar):
            if bar:
                bar.update()
            if on_step:
                on_step(epoch + 1, step, steps_per_epoch)

        began = time.time()
        train_loss, train_accuracy = _train_epoch(model, batches, optimizer, scheduler, device,
                                                  after_step)
        if bar:
            bar.close()
        seconds = time.time() - began
        test_loss, test_accuracy = evaluate(network, dataset, device)
        entry = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_accuracy,
                 "test_loss": test_loss,
                 ("fake_quant_accuracy" if is_quantized else "test_accuracy"): test_accuracy,
                 "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                 "precision": parse_precision(config.precision, config.group_size).describe(),
                 "processes": world}
        log.append(entry)
        if rank == 0:
            _atomic_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                          "epoch": epoch, "config": dataclasses.asdict(config), "spec": spec,
                          "model": network.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "rng": _rng_state(), "log": log},
                         checkpoint_path)
            # the whole log, atomically: an earlier run's is replaced at the
            # first epoch, a resumed one's continues
            _write_log(log_path, log)
            accuracy_name = "fake-quant" if is_quantized else "float"
            print(f"epoch {epoch + 1}/{config.epochs}: loss {train_loss:.4f}, "
                  f"{accuracy_name} test accuracy {100 * test_accuracy:.2f}%, {seconds:.1f} s",
                  file=sys.stderr, flush=True)
        if world > 1:
            torch.distributed.barrier()
    return log


def _check_out(config, checkpoint_path, log_path):
    """Refuse, before anything is loaded, an --out whose files this run would
    replace without being asked to."""
    if config.resume and not os.path.isfile(checkpoint_path):
        raise UserError(f"--resume: {config.out} holds no {CHECKPOINT} to continue; start the "
                        "run without --resume, or give the --out of the run to continue")
    if os.path.isfile(checkpoint_path) and not (config.resume or config.force):
        raise UserError(f"--out {config.out} holds a checkpoint of an earlier run; pass --resume "
                        "to continue it, --force to start over (it is replaced), or another --out")
    if not config.resume and not config.force and os.path.isfile(log_path) and not _is_log(log_path):
        raise UserError(f"--out {config.out} holds a {LOG} that is not a training log (this "
                        "command writes its log there); move it, give another --out, or pass "
                        "--force to replace it")


def _start_processes(config):
    """This process's place in a distributed run (torchrun's variables; one
    process otherwise) and its device; joins the process group. Returns
    (world, rank, device)."""
    world, rank, local_rank = _distributed()
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config.device, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend)
    return world, rank, device


def _resume(config, checkpoint_path, device, network, optimizer, scheduler):
    """Load the checkpoint's weights, optimizer, schedule and random state;
    returns (its log, the epoch to start at)."""
    checkpoint = load_checkpoint(checkpoint_path, device)
    _resume_config_check(checkpoint["config"], config)
    if user_model.is_user_model(config.model):
        user_model.check_unchanged(config.model, checkpoint["spec"].get("model_sha256"))
    _load_weights(network, checkpoint, checkpoint_path)
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _set_rng_state(checkpoint["rng"])
    return checkpoint["log"], checkpoint["epoch"] + 1


def _train_epoch(model, batches, optimizer, scheduler, device, after_step):
    """One pass over `batches`; `after_step(step)` (1-based) after each.
    Returns (mean training loss, training accuracy)."""
    model.train()
    total_loss, total_correct, total_count = 0.0, 0, 0
    for step, (images, labels) in enumerate(batches, 1):
        images, labels = images.to(device).float(), labels.to(device)
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        total_correct += (logits.argmax(1) == labels).sum().item()
        total_count += len(labels)
        after_step(step)
    return total_loss / max(total_count, 1), total_correct / max(total_count, 1)
