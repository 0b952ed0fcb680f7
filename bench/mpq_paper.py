#!/usr/bin/env python3
"""The MPQ paper's experiment at a scale that decides it: a resumable protocol.

One row is one retraining: (model, width, quantizer, variant, seed), from one
float checkpoint, scored by integer accuracy only (the exported model file
run by the integer reference on the whole test split) and by the hardware
bits it stores (`sw.quantize.mpq.weight_storage_bits`). Variants:

* `uniform-w2`, `uniform-w3`, `uniform-w4`: the line MPQ must beat;
* `mpq-<criterion>-<percent>`: 2-bit base, the extra bit for `percent` of the
  hardware groups (or chunks, `--unit`), ranked by `switching` (the paper's
  oscillation frequency; the budget is always spent, see docs/mpq.md),
  `fisher` (squared gradients times the error the bit removes) or `random`
  (the control), learning-rate rule after the last assignment;
* `layerwise-<criterion>-<percent>`: one precision per layer, whole layers
  upgraded by sensitivity per weight (the baseline a user would pick);
* `chunkwise-<criterion>-<percent>`: the extra bit for whole chunks (the
  array's rows x 16 weights one kernel position: what the PE runs in one
  mode), whatever `--unit` says: what the energy needs, since a chunk with
  one upgraded group runs in the 4-bit mode as if all its groups were;
* extras on request (`--extra-variants`): `freezing-w2`, `lrrule-w2`;
* ablations of an MPQ variant, `<variant>+<change>[+<change>]` (item 5), on
  request: `once` (one assignment at 30% instead of two), `early` (one at
  10%: the fine groups retrain 90% of the run), `long` (the oscillation
  frequency averaged over ~1,000 steps, momentum 0.999, instead of ~50),
  `nolr` (no learning-rate rule), `damp` (Nagel et al.'s oscillation
  dampening, final weight 0.1), `freeze` (Nagel et al.'s freezing at
  frequency 0.02). `chunkwise-switching-10+early+nolr`.

Quantizers: `lsq` (learned step) and `stats` (the paper-era step from the
weights' statistics, no learned step). The plan is ordered so the rows that
decide come first (uniform W4 and W2, switching and random at 25%), then the
rest of the sweep, then more seeds, then the paper-era quantizer.

State (every run continues it; finished rows are skipped; a killed row
continues after its last finished epoch; two runners may share a state
folder, each row is locked while one runs it):

    STATE/<model>_w<width>/protocol.json      settings fixed by the first run
    STATE/<model>_w<width>/float/             float training (no --float-checkpoint)
    STATE/<model>_w<width>/rows/<id>.json     one finished row
    STATE/<model>_w<width>/partial/<id>.pt    retraining state after the last epoch
    STATE/<model>_w<width>/models/<id>.mpq    exported model files
    STATE/<model>_w<width>/overhead.json      --overhead

    .venv/bin/python bench/mpq_paper.py --data /tmp/cifar --float-checkpoint F --plan
    .venv/bin/python bench/mpq_paper.py --data /tmp/cifar --float-checkpoint F --hours 8
    .venv/bin/python bench/mpq_paper.py --report     # bench/results/mpq_paper.{json,md,png}
    .venv/bin/python bench/mpq_paper.py --restore bench/results/mpq_paper.json   # continue elsewhere
    .venv/bin/python bench/mpq_paper.py --model digits-cnn --qat-epochs 1 --float-epochs 2 --state runs/mpq_smoke
"""

import argparse
import dataclasses
import fnmatch
import glob
import hashlib
import json
import math
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import RESULTS, provenance  # noqa: E402
from bench.mpq_report import write_report  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.files import write_atomically  # noqa: E402
from sw.quantize.train_config import MODELS as TRAINABLE_MODELS  # noqa: E402

# Per model: data set and the protocol's defaults. `seconds_per_image` (one
# QAT step per image, 1 CPU thread, at `width`; scales with width squared)
# and `eval_seconds_per_image` (integer reference) are priors for --plan until
# a row has finished; measured on this project's 2-core machine.
FAMILIES = {
    "vgg9": dict(dataset="cifar10", width=0.25, float_epochs=30, qat_epochs=10, batch_size=128,
                 lr=0.01, float_batch_size=64, float_lr=0.05,
                 seconds_per_image=0.0106, eval_seconds_per_image=0.0155),
    "digits-cnn": dict(dataset="digits", width=1.0, float_epochs=30, qat_epochs=10, batch_size=64,
                       lr=0.01, float_batch_size=64, float_lr=0.05,
                       seconds_per_image=0.0003, eval_seconds_per_image=0.0005),
}
# The residual networks (sw/quantize/resnet.py): vgg9's protocol at width 1.0
# (its time priors too, until a row has finished). Plan, runner, storage and
# report are model-agnostic.
for _resnet in ("resnet8", "resnet20"):
    if _resnet in TRAINABLE_MODELS:
        FAMILIES[_resnet] = dict(FAMILIES["vgg9"], width=1.0)

QUANTIZERS = {"lsq": "learned", "stats": "statistics"}
# MPQ variant kinds and the unit each upgrades (None: the protocol's --unit).
UNITS = {"mpq": None, "layerwise": "layer", "chunkwise": "chunk"}
CRITERIA = ("switching", "fisher", "random")
EXTRA_VARIANTS = ("freezing-w2", "lrrule-w2")
# An MPQ variant's ablations (`<variant>+<change>`): what each changes in its
# `MPQConfig`, and where that changes the training at all (a row identical to
# its base would cost hours for nothing). The learning-rate rule still starts
# after the last assignment, and so do dampening and freezing (before it they
# would hide the oscillations the switching criterion looks for).
ABLATIONS = {
    "once": (dict(assign_at=(0.3,)), lambda config: True),
    "early": (dict(assign_at=(0.1,)), lambda config: True),
    "long": (dict(momentum=0.999), lambda config: config.criterion == "switching"),
    "nolr": (dict(lr_rule=None), lambda config: config.lr_rule is not None),
    "damp": (dict(dampen=0.1), lambda config: True),
    "freeze": (dict(freeze_threshold=0.02), lambda config: True),
}
# Batch norm re-estimated after retraining over this many training images
# (Nagel et al. 2022 use a few thousand): a second score per row, no retraining.
BN_REESTIMATE_IMAGES = 5120
# The protocol's settings that make rows comparable: a state folder keeps the
# ones it was started with.
IDENTITY = ("model", "dataset", "width", "float_checkpoint", "float_epochs", "train_images",
            "test_images", "qat_epochs", "batch_size", "lr", "unit", "lr_rule")


# -- variants and the plan --------------------------------------------------------------------------
def variant_config(variant, quantizer, seed, protocol):
    """The `MPQConfig` of one variant."""
    from sw.quantize import mpq
    step = QUANTIZERS[quantizer]
    lr_rule = dict(lr_rule="linear", lr_min=0.2, lr_width=0.2) if protocol["lr_rule"] == "linear" else {}
    base, *changes = variant.split("+")
    if changes:
        unknown = [c for c in changes if c not in ABLATIONS]
        if unknown or len(set(changes)) < len(changes) or not base.startswith(tuple(f"{k}-" for k in UNITS)):
            raise UserError(f"unknown ablation {variant!r}: an MPQ variant (mpq-, layerwise- or chunkwise-"
                            f"CRITERION-PERCENT) and +CHANGE, each once, from {', '.join(ABLATIONS)}")
        config = variant_config(base, quantizer, seed, protocol)
        touched = [field for change in changes for field in ABLATIONS[change][0]]
        if len(set(touched)) < len(touched):
            raise UserError(f"ablation {variant!r}: two changes set the same thing (once and early both "
                            f"set when the bit is assigned); keep one")
        for change in changes:
            fields, applies = ABLATIONS[change]
            if not applies(config):
                raise UserError(f"ablation {variant!r}: +{change} changes nothing in {base} with these "
                                f"settings (long: the switching criterion only; nolr: with --lr-rule linear)")
            config = dataclasses.replace(config, **fields)
        last = max(config.assign_at)
        if config.lr_rule:
            config = dataclasses.replace(config, lr_start=last)
        if config.dampen:
            config = dataclasses.replace(config, dampen_start=last)
        if config.freeze_threshold is not None:
            config = dataclasses.replace(config, freeze_start=last)
        return config
    kind, _, rest = variant.partition("-")
    if kind == "uniform":
        return mpq.MPQConfig(base_bits=int(rest.lstrip("w")), extra_bit=False, track=False,
                             granularity="group", weight_step=step)
    if variant == "freezing-w2":
        return mpq.MPQConfig(base_bits=2, extra_bit=False, freeze_threshold=0.02, weight_step=step)
    if variant == "lrrule-w2":
        return mpq.MPQConfig(base_bits=2, extra_bit=False, weight_step=step, **lr_rule)
    criterion, _, percent = rest.rpartition("-")
    if kind not in UNITS or criterion not in CRITERIA or not percent.isdigit():
        raise UserError(f"unknown variant {variant!r}: uniform-wB, mpq-CRITERION-PERCENT, "
                        f"layerwise-CRITERION-PERCENT, chunkwise-CRITERION-PERCENT or one of "
                        f"{', '.join(EXTRA_VARIANTS)}")
    # With the extra bit, the rule starts after the last assignment: damping
    # before it would hide the oscillations the switching criterion looks for.
    return mpq.MPQConfig(base_bits=2, granularity=UNITS[kind] or protocol["unit"],
                         fraction=int(percent) / 100, criterion=criterion, fill=True, seed=seed,
                         weight_step=step, **(dict(lr_rule, lr_start=0.6) if lr_rule else {}))


@dataclasses.dataclass(frozen=True)
class Row:
    folder: str          # <model>_w<width>
    quantizer: str
    variant: str
    seed: int

    @property
    def name(self):
        return f"{self.quantizer}/{self.variant}/s{self.seed}"

    @property
    def id(self):
        return f"{self.folder}/{self.name}"

    @property
    def file_stem(self):
        return f"{self.quantizer}__{self.variant}__s{self.seed}"


def build_plan(folder, args):
    """The rows, the decisive ones first."""
    head = args.headline_budget
    budgets = [b for b in args.budgets if b != head]
    decisive = ["uniform-w4", "uniform-w2", f"mpq-switching-{head}", f"mpq-random-{head}"]
    # The chunk unit is what the energy needs (a chunk with one upgraded
    # group runs in the 4-bit mode), so it gets its own sweep.
    rest = ([f"chunkwise-switching-{head}", "uniform-w3", f"mpq-fisher-{head}",
             f"layerwise-fisher-{head}"]
            + [f"mpq-switching-{b}" for b in budgets]
            + [f"chunkwise-switching-{b}" for b in budgets if 0 < b < 100])
    headline = decisive + ["uniform-w3"]
    paper_era = decisive + ["uniform-w3"] + [f"mpq-switching-{b}" for b in budgets]
    # the other criteria at the other budgets (0% and 100% are the same for all)
    criteria = [f"{kind}-{b}" for b in budgets if 0 < b < 100
                for kind in ("mpq-random", "chunkwise-random", "mpq-fisher", "layerwise-fisher")]
    first, *others = args.quantizers
    first_seed, more_seeds = args.seeds[0], args.seeds[1:]
    phases = [(first, [first_seed], decisive), (first, [first_seed], rest),
              (first, more_seeds, decisive + rest), (first, args.headline_seeds, headline)]
    for quantizer in others:
        phases += [(quantizer, args.seeds, paper_era), (quantizer, args.headline_seeds, headline)]
    phases += [(first, args.seeds, criteria)]
    phases += [(quantizer, args.seeds, list(args.extra_variants)) for quantizer in args.quantizers]
    plan, seen = [], set()
    for quantizer, seeds, variants in phases:
        for seed in seeds:
            for variant in variants:
                row = Row(folder, quantizer, variant, seed)
                if row not in seen:
                    seen.add(row)
                    plan.append(row)
    return plan


def selected(plan, patterns):
    """The rows whose id matches one of `patterns` (shell wildcards; a
    pattern without any matches as a substring)."""
    if not patterns:
        return plan
    def match(row, pattern):
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(row.id, pattern) or fnmatch.fnmatchcase(row.name, pattern)
        return pattern in row.id
    return [row for row in plan if any(match(row, p) for p in patterns)]


# -- the state folder -----------------------------------------------------------------------------------
def read_state_json(path):
    """A finished row, protocol or overhead file of a state folder; a file
    that is not JSON (edited by hand, or from elsewhere) is named, not a
    traceback. The runner writes them atomically, so it never leaves one half-written."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a readable JSON file ({error}); move it aside (a row "
                        f"file: its row runs again) or restore it") from None


class State:
    """One `<model>_w<width>` folder: finished rows, locks, partial rows."""

    def __init__(self, root, folder):
        self.path = os.path.join(root, folder)
        self.rows = os.path.join(self.path, "rows")
        self.partial = os.path.join(self.path, "partial")
        self.models = os.path.join(self.path, "models")

    def row_file(self, row):
        return os.path.join(self.rows, row.file_stem + ".json")

    def lock_file(self, row):
        return os.path.join(self.rows, row.file_stem + ".lock")

    def partial_file(self, row, ext=".pt"):
        return os.path.join(self.partial, row.file_stem + ext)

    def done(self, row):
        return os.path.isfile(self.row_file(row))

    def finished_rows(self):
        return [read_state_json(path) for path in sorted(glob.glob(os.path.join(self.rows, "*.json")))]

    def epochs_done(self, row):
        try:
            return json.load(open(self.partial_file(row, ".json")))["epochs_done"]
        except (OSError, ValueError, KeyError):
            return 0

    def holder(self, row):
        """The live runner holding `row`'s lock, or None (a stale lock of a
        dead process on this host is removed)."""
        path = self.lock_file(row)
        try:
            info = json.load(open(path))
        except (OSError, ValueError):
            return None
        if info.get("host") == socket.gethostname() and not _alive(info.get("pid"), info.get("process")):
            try:
                os.remove(path)
            except OSError:
                pass
            return None
        return info

    def lock(self, row):
        os.makedirs(self.rows, exist_ok=True)
        if self.holder(row):
            return False
        try:
            fd = os.open(self.lock_file(row), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                       "process": _process_identity(os.getpid())}, f)
        return True

    def unlock(self, row):
        try:
            os.remove(self.lock_file(row))
        except OSError:
            pass

    def check_protocol(self, protocol):
        """Fix the protocol's settings on the first run; refuse a later run
        whose settings differ (its rows would not be comparable)."""
        path = os.path.join(self.path, "protocol.json")
        if os.path.isfile(path):
            saved = read_state_json(path)
            different = [k for k in IDENTITY if k != "float_checkpoint" and saved.get(k) != protocol.get(k)]
            if not same_checkpoint(saved, protocol):
                different.insert(0, "float_checkpoint")
            if different:
                raise UserError(f"{self.path} holds rows of other settings: " + ", ".join(
                    f"{k} ({saved.get(k)!r} there, {protocol.get(k)!r} now)" for k in different)
                    + "; give another --state, or the same settings")
            # The same checkpoint may lie elsewhere on this machine: load it from here.
            return {**saved, "float_checkpoint": protocol["float_checkpoint"]}
        os.makedirs(self.path, exist_ok=True)
        write_atomically(path, json.dumps(protocol, indent=1) + "\n")
        return protocol


def same_checkpoint(saved, current):
    """Whether two protocols start from the same float checkpoint: by content
    where both recorded its digest, else by file name (protocols from before
    the digest), never by folder, so a state continues on another machine."""
    digests = saved.get("float_checkpoint_sha256"), current.get("float_checkpoint_sha256")
    if all(digests):
        return digests[0] == digests[1]
    return os.path.basename(saved.get("float_checkpoint") or "") == os.path.basename(
        current.get("float_checkpoint") or "")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _process_identity(pid):
    """What tells this process from a later one given the same pid: the boot
    and the start time (Linux's /proc; None elsewhere). Sessions on a fresh
    machine of the same host name reuse small pids, so a pid alone would keep
    a dead runner's row locked."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        stat = open(f"/proc/{int(pid)}/stat").read()
    except (OSError, TypeError, ValueError):
        return None
    # field 22, counted after the parenthesised command name (which may hold spaces)
    return f"{boot}/{stat.rpartition(')')[2].split()[19]}"


def _alive(pid, identity=None):
    """Whether the process that wrote a lock still runs: its pid lives and,
    where the lock recorded one, with the same identity."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        pass   # another user's process, or an unreadable pid: held unless its identity says otherwise
    if identity is None:
        return True
    current = _process_identity(pid)
    return current is None or current == identity


# -- the protocol's settings and float checkpoint --------------------------------------------------------
def folder_name(model, width):
    return f"{model}_w{width:g}"


def protocol_settings(args, family):
    return {"model": args.model, "dataset": family["dataset"], "width": args.width,
            "float_checkpoint": None, "float_epochs": args.float_epochs,
            "train_images": args.train_images, "test_images": args.test_images,
            "qat_epochs": args.qat_epochs, "batch_size": args.batch_size, "lr": args.lr,
            "unit": args.unit, "lr_rule": args.lr_rule, "act_bits": 4, "edge": "w8"}


def float_checkpoint(args, family, state):
    """`(path, epochs)` of the finished float training the rows start from:
    --float-checkpoint, or trained (resumably) into the state folder."""
    from sw.quantize.train import TrainConfig, load_checkpoint, train
    if args.float_checkpoint:
        path = os.path.abspath(args.float_checkpoint)
        checkpoint = load_checkpoint(path)
        spec, config = checkpoint["spec"], checkpoint["config"]
        if (spec["model"], spec["width"]) != (args.model, args.width):
            raise UserError(f"--float-checkpoint {path} holds {spec['model']} at width {spec['width']}, "
                            f"not {args.model} at width {args.width}")
        if spec["precision"]["weight_bits"] is not None:
            raise UserError(f"--float-checkpoint {path} is not a float checkpoint")
        if checkpoint["epoch"] + 1 < config["epochs"]:
            raise UserError(f"--float-checkpoint {path} is still training (epoch {checkpoint['epoch'] + 1} "
                            f"of {config['epochs']}); start the protocol when it has finished")
        if config["epochs"] < args.float_epochs:
            raise UserError(f"--float-checkpoint {path} had {config['epochs']} epochs, fewer than "
                            f"--float-epochs {args.float_epochs}")
        return path, config["epochs"]
    out = os.path.join(state.path, "float")
    path = os.path.join(out, "checkpoint.pt")
    if os.path.isfile(path):
        checkpoint = load_checkpoint(path)
        if checkpoint["epoch"] + 1 >= checkpoint["config"]["epochs"]:
            return os.path.abspath(path), checkpoint["config"]["epochs"]
    train(TrainConfig(model=args.model, dataset=family["dataset"], data=args.data, width=args.width,
                      precision="float", epochs=args.float_epochs, batch_size=family["float_batch_size"],
                      lr=family["float_lr"], seed=0, device=args.device, out=out,
                      resume=os.path.isfile(path), limit_train=args.train_images,
                      limit_test=args.test_images, threads=args.threads))
    return os.path.abspath(path), args.float_epochs


_DATA = {}


def load_data(protocol, data_path):
    from sw.quantize import data as data_module
    key = (protocol["dataset"], protocol["train_images"], protocol["test_images"])
    if key not in _DATA:
        _DATA[key] = data_module.load_dataset(protocol["dataset"], data_path, False,
                                              protocol["train_images"], protocol["test_images"])
    return _DATA[key]


# -- one row --------------------------------------------------------------------------------------------
def _bar(total, desc, initial=0, position=0):
    """tqdm that also reports into a log file (not a terminal): one update a minute there."""
    from tqdm import tqdm
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, file=sys.stderr, disable=False,
                mininterval=0.5 if tty else 60, leave=position == 0 or not tty, position=position if tty else None,
                dynamic_ncols=tty)


def run_row(row, protocol, state, dataset, args, deadline):
    """Retrain, export and score one row; its result dict, or None when the
    deadline stopped it (its state is kept for the next run)."""
    import numpy as np
    import torch

    from sw.quantize import mpq
    from sw.quantize.export import read_model_file, write_model_file
    from sw.quantize.reference import IntegerModel
    from sw.quantize.train import _device
    device = _device(args.device, 0)
    config = variant_config(row.variant, row.quantizer, row.seed, protocol)
    network = mpq.network_from_float(protocol["float_checkpoint"], dataset, config, row.seed,
                                     protocol["act_bits"], protocol["edge"], device)
    epochs = protocol["qat_epochs"]
    steps = math.ceil(len(dataset.train_y) / protocol["batch_size"])
    done = state.epochs_done(row)
    bar = _bar(epochs * steps, row.name, initial=done * steps, position=1)
    os.makedirs(state.partial, exist_ok=True)
    last = {"seconds": None}

    def epoch_done(entry):
        last["seconds"] = entry["seconds"]
        write_atomically(state.partial_file(row, ".json"),
                         json.dumps({"epochs_done": entry["epoch"], "seconds": entry["seconds"]}))

    def stop():
        return deadline is not None and time.time() + (last["seconds"] or 0) > deadline

    result = mpq.retrain(network, dataset, config, epochs, protocol["lr"], protocol["batch_size"], row.seed,
                         device=device, progress=epoch_done, evaluate_each_epoch=False,
                         state_path=state.partial_file(row), stop=stop, on_step=lambda: bar.update(1))
    bar.close()
    if result["stopped"]:
        return None
    network.cpu().eval()
    began = time.time()
    model_path = os.path.join(state.models, row.file_stem + ".mpq")
    write_model_file(network, model_path, {"model": protocol["model"], "row": row.id,
                                           "mpq": dataclasses.asdict(config)})
    header, arrays = read_model_file(model_path)
    integer = IntegerModel(header, arrays).accuracy(dataset.test_x, dataset.test_y, progress=True)
    compression, storage, uniform = mpq.compression_vs_uniform_w4(header, arrays)
    middle = mpq.middle_layers(network)
    switches = result["switches"] or []
    record = {
        "id": row.id, "model": protocol["model"], "dataset": protocol["dataset"], "width": protocol["width"],
        "quantizer": row.quantizer, "weight_step": config.weight_step, "variant": row.variant,
        "criterion": config.criterion if config.extra_bit else None,
        "granularity": config.granularity if config.extra_bit else None,
        "budget_percent": round(100 * config.fraction) if config.extra_bit else None,
        "base_bits": config.base_bits, "seed": row.seed,
        "train_images": len(dataset.train_y), "test_images": len(dataset.test_y),
        "qat_epochs": epochs, "float_epochs": protocol["float_epochs"],
        "float_checkpoint": protocol["float_checkpoint"], "float_accuracy": protocol.get("float_accuracy"),
        "integer_accuracy": integer,
        "hardware_bits_per_weight": storage["hardware_average_bits"],
        "average_weight_bits": storage["average_bits"],
        "ideal_bits_per_weight": storage["ideal"] / storage["weights"],
        "hardware_bits": storage["hardware"], "uniform_w4_hardware_bits": uniform["hardware"],
        "compression_vs_uniform_w4": compression,
        "per_layer": [{k: p[k] for k in ("name", "weights", "hardware_mean_bits", "mean_bits")}
                      for p in storage["per_layer"]],
        "upgraded_weights": result["upgraded_weights"], "assignments": result["assignments"],
        "middle_weights": sum(layer.op.weight.numel() for layer in middle),
        "oscillating_weights": sum(s["oscillating_weights"] for s in switches) if switches else None,
        "oscillations": sum(s["oscillations"] for s in switches) if switches else None,
        "drifts": sum(s["drifts"] for s in switches) if switches else None,
        "frozen_weights": result["frozen_weights"],
        "seconds_per_epoch": [h["seconds"] for h in result["history"]],
        "eval_seconds": time.time() - began,
        "mpq_config": dataclasses.asdict(config), "model_file": model_path,
        "device": str(device), "threads": torch.get_num_threads(), **provenance()}
    record["energy"] = row_energy(model_path)
    if args.bn_images:
        record.update(bn_reestimated(network, row, protocol, state, dataset, args.bn_images))
    record["seconds"] = (sum(record["seconds_per_epoch"]) + record["eval_seconds"]
                         + record.get("bn_reestimate_seconds", 0))
    if result["tracker"] is not None and row.variant.startswith("mpq-switching") and row.seed == 0:
        counters = result["tracker"].counters
        oscillations = torch.cat([c.oscillations.flatten() for c in counters]).numpy()
        drifts = torch.cat([c.drifts.flatten() for c in counters]).numpy()
        record["switch_histogram"] = {"oscillations": np.bincount(np.minimum(oscillations, 50)).tolist(),
                                      "drifts": np.bincount(np.minimum(drifts, 50)).tolist(),
                                      "clipped_at": 50}
    write_atomically(state.row_file(row), json.dumps(record, indent=1) + "\n")
    for ext in (".pt", ".json"):
        try:
            os.remove(state.partial_file(row, ext))
        except OSError:
            pass
    return record


def bn_reestimated(network, row, protocol, state, dataset, images):
    """Batch norm re-estimated over `images` training images (the epoch after
    the last one's order, the row's seed), exported beside the row's model and
    scored the same way: the row's fields for it. Changes `network`."""
    import itertools

    from sw.quantize import data as data_module
    from sw.quantize.convert import reestimate_batch_norm
    from sw.quantize.export import read_model_file, write_model_file
    from sw.quantize.reference import IntegerModel
    began = time.time()
    batch = protocol["batch_size"]
    batches = data_module.epoch_batches(dataset, batch, protocol["qat_epochs"], row.seed)
    reestimate_batch_norm(network, (x for x, _ in itertools.islice(batches, math.ceil(images / batch))))
    network.eval()
    path = os.path.join(state.models, row.file_stem + ".bn.mpq")
    write_model_file(network, path, {"model": protocol["model"], "row": row.id, "bn_reestimated_images": images})
    header, arrays = read_model_file(path)
    accuracy = IntegerModel(header, arrays).accuracy(dataset.test_x, dataset.test_y, progress=True)
    return {"integer_accuracy_bn_reestimated": accuracy, "bn_reestimate_images": images,
            "bn_reestimate_seconds": time.time() - began, "bn_reestimated_model_file": path}


# -- time estimates -------------------------------------------------------------------------------------
def estimate_seconds(state, protocol, family, dataset_sizes):
    """`(epoch seconds, eval seconds, measured?)` of one row: the mean of
    finished rows, or the family's prior."""
    rows = state.finished_rows()
    if rows:
        epochs = [s for r in rows for s in r["seconds_per_epoch"]]
        scoring = [r["eval_seconds"] + r.get("bn_reestimate_seconds", 0) for r in rows]
        return statistics.mean(epochs), statistics.mean(scoring), True
    train_images, test_images = dataset_sizes
    scale = (protocol["width"] / family["width"]) ** 2
    return (family["seconds_per_image"] * scale * train_images,
            family["eval_seconds_per_image"] * scale * test_images, False)


def duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def show_plan(plan, state, protocol, estimate):
    epoch_seconds, eval_seconds, measured = estimate
    remaining = 0.0
    print(f"{'#':>3}  {'row':<46} status")
    for index, row in enumerate(plan, 1):
        if state.done(row):
            record = read_state_json(state.row_file(row))
            status = (f"done: {100 * record['integer_accuracy']:.2f}%, "
                      f"{record['hardware_bits_per_weight']:.3f} bits/weight, {duration(record['seconds'])}")
        else:
            done = state.epochs_done(row)
            left = (protocol["qat_epochs"] - done) * epoch_seconds + eval_seconds
            remaining += left
            holder = state.holder(row)
            status = ("running (pid {pid} on {host}), ".format(**holder) if holder else "") + \
                (f"{done}/{protocol['qat_epochs']} epochs, " if done else "") + f"~{duration(left)} left"
        print(f"{index:>3}  {row.id:<46} {status}")
    done_count = sum(state.done(row) for row in plan)
    source = "mean of finished rows" if measured else "prior, no row finished yet"
    print(f"\n{done_count} of {len(plan)} rows done; remaining ~{duration(remaining)} with one runner "
          f"(~{duration(remaining / 2)} with two on two cores); per row ~{duration(epoch_seconds)} an "
          f"epoch + {duration(eval_seconds)} integer evaluation ({source})")


# -- running a slice ------------------------------------------------------------------------------------
def run(plan, state, protocol, dataset, args, epoch_seconds=None):
    """Run the rows of `plan` not yet done, as --max-rows and --hours allow;
    `epoch_seconds` (measured on earlier rows, or None) decides whether a
    new row may start before the deadline."""
    deadline = time.time() + args.hours * 3600 if args.hours else None
    todo = [row for row in plan if not state.done(row)]
    limit = min(len(todo), args.max_rows) if args.max_rows else len(todo)
    bar = _bar(limit, "rows", position=0)
    started = 0
    for row in todo:
        if started >= limit:
            break
        if state.done(row) or not state.lock(row):
            bar.write(f"skip {row.id}: {'done' if state.done(row) else 'another runner has it'}")
            continue
        try:
            if state.done(row):      # finished by another runner between the checks
                continue
            epoch_estimate = json.load(open(state.partial_file(row, ".json")))["seconds"] \
                if state.epochs_done(row) else epoch_seconds
            if deadline is not None and epoch_estimate and time.time() + epoch_estimate > deadline:
                bar.write("--hours: no time left for another epoch")
                break
            started += 1
            bar.write(f"run {row.id}")
            record = run_row(row, protocol, state, dataset, args, deadline)
        finally:
            state.unlock(row)
        if record is None:
            bar.write(f"--hours: stopped {row.id} after epoch {state.epochs_done(row)}; the next run continues it")
            break
        bar.update(1)
        bar.write(f"done {row.id}: integer accuracy {100 * record['integer_accuracy']:.2f}%, "
                  f"{record['hardware_bits_per_weight']:.3f} bits/weight, "
                  f"{record['compression_vs_uniform_w4']:.3f}x vs W4, {duration(record['seconds'])}")
        if deadline is not None and time.time() > deadline:
            break
    bar.close()
    left = sum(not state.done(row) for row in plan)
    print(f"{len(plan) - left} of {len(plan)} rows done in {state.path}")


# -- tracking overhead ----------------------------------------------------------------------------------
def measure_overhead(protocol, dataset, args, steps, repeats):
    """What tracking adds to a QAT epoch. Seconds per QAT step with no
    tracking, the switch tracker, the Fisher tracker, and the switch tracker
    with the learning-rate rule, on the same per-weight coarse-grid network,
    interleaved, the fastest of `repeats`; the runs assign nothing, and one
    assignment of the headline budget is timed on its own: a row makes two
    in all its epochs, so per epoch it adds two assignments over the epochs
    (a short run with its assignments in it would charge them to a few
    steps)."""
    import torch

    from sw.quantize import data as data_module
    from sw.quantize import mpq
    images = steps * protocol["batch_size"]
    subset = data_module.Dataset(dataset.name, dataset.train_x[:images], dataset.train_y[:images],
                                 dataset.test_x[:1], dataset.test_y[:1], dataset.mean, dataset.std,
                                 dataset.num_classes, dataset.source, dataset.augment)
    unit = dict(granularity=protocol["unit"], fraction=0.25, assign_at=())
    settings = {"none": dict(unit, track=False), "switching": dict(unit),
                "fisher": dict(unit, track=False, criterion="fisher"),
                "switching+lr_rule": dict(unit, lr_rule="linear", lr_start=0.0)}
    times = {name: [] for name in settings}
    assignment = []
    for _ in range(repeats):
        for name, options in settings.items():
            config = mpq.MPQConfig(base_bits=2, **options)
            network = mpq.network_from_float(protocol["float_checkpoint"], subset, config, 0,
                                             protocol["act_bits"], protocol["edge"], args.device)
            result = mpq.retrain(network, subset, config, 1, protocol["lr"], protocol["batch_size"], 0,
                                 device=args.device, evaluate_each_epoch=False)
            times[name].append(result["history"][0]["seconds"] / steps)
            if name == "switching":
                began = time.perf_counter()
                mpq.assign_extra_bit(mpq.middle_layers(network), result["tracker"].counters, config)
                assignment.append(time.perf_counter() - began)
    base = min(times["none"])
    steps_per_epoch = math.ceil(len(dataset.train_y) / protocol["batch_size"])
    assignments = len(mpq.MPQConfig().assign_at)
    amortized = assignments * min(assignment) / protocol["qat_epochs"] / (base * steps_per_epoch)
    per_step = {k: 100 * (min(v) / base - 1) for k, v in times.items() if k != "none"}
    return {"seconds_per_step": {k: min(v) for k, v in times.items()}, "all_seconds_per_step": times,
            "assignment_seconds": min(assignment), "assignments_per_row": assignments,
            "per_step_percent": per_step,
            # what an epoch of an MPQ row pays: the per-step cost and its share of the assignments
            "overhead_percent": {k: v + 100 * amortized for k, v in per_step.items()},
            "setting": (f"{protocol['model']} width {protocol['width']:g}, {protocol['unit']} unit (per-weight "
                        f"quantizer), {steps} steps of {protocol['batch_size']} images, "
                        f"{torch.get_num_threads()} thread(s), fastest of {repeats} interleaved runs; "
                        f"{assignments} assignments per row over {protocol['qat_epochs']} epochs of "
                        f"{steps_per_epoch} steps"),
            **provenance()}


def row_energy(model_path):
    """The row's network on the default core: energy per inference and the
    Bit Fusion-style design's over it, per memory scenario (golden-model
    counts, which the RTL regressions hold equal to the RTL's; seconds, not
    minutes). A network the compiler refuses gets the reason instead."""
    from hw.config import get_config
    from sw.energy.summary import bitfusion_over_mpq
    from sw.quantize.export import read_model_file
    try:
        return bitfusion_over_mpq(*read_model_file(model_path), get_config("default"))
    except UserError as error:
        return {"error": str(error)}


def fill_energy(rows):
    """Price the rows finished before rows carried their energy, from their
    model files (not written back: the row files are the runner's)."""
    from common.progress import Progress
    missing = [row for row in rows if "energy" not in row and os.path.isfile(row.get("model_file", ""))]
    if not missing:
        return
    with Progress("pricing rows", len(missing), "row") as bar:
        for row in missing:
            row["energy"] = row_energy(row["model_file"])
            bar.update()


# -- the command ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("the protocol (defaults: the model's; vgg9 in brackets)")
    what.add_argument("--model", default="vgg9", choices=sorted(FAMILIES))
    what.add_argument("--width", type=float, default=None, help="channel width (vgg9: 0.25)")
    what.add_argument("--full", action="store_true",
                      help="full width (--width 1.0): the scale a GPU makes affordable (bench/device/)")
    what.add_argument("--data", default=None, help="CIFAR-10 folder (official python layout)")
    what.add_argument("--float-checkpoint", default=None,
                      help="finished float training checkpoint.pt; without it the float network is "
                           "trained (resumably) into STATE/<model>_w<width>/float")
    what.add_argument("--float-epochs", type=int, default=None,
                      help="float epochs: trained, or the least --float-checkpoint must have (30)")
    what.add_argument("--qat-epochs", type=int, default=None, help="QAT epochs per row (10)")
    what.add_argument("--train-images", type=int, default=None, help="first N training images (default all)")
    what.add_argument("--test-images", type=int, default=None, help="first N test images (default all)")
    what.add_argument("--batch-size", type=int, default=None, help="QAT batch size (vgg9: 128)")
    what.add_argument("--lr", type=float, default=None, help="QAT learning rate (0.01)")
    what.add_argument("--unit", default="hardware", choices=("hardware", "chunk"),
                      help="what the budget counts: compiler groups, or chunks (8 rows x a group: one "
                           "PE mode) (default %(default)s)")
    what.add_argument("--bn-images", type=int, default=BN_REESTIMATE_IMAGES,
                      help="training images over which each row also re-estimates batch norm after "
                           "retraining and scores that model too (a second integer evaluation); 0: "
                           "not (default %(default)s)")
    what.add_argument("--lr-rule", default="linear", choices=("linear", "none"),
                      help="MPQ rows' threshold learning-rate rule after the last assignment (default %(default)s)")
    plan = parser.add_argument_group("the plan")
    plan.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of every row (default 0 1)")
    plan.add_argument("--headline-seeds", type=int, nargs="*", default=[2],
                      help="more seeds for the headline rows: uniform W2/W3/W4, switching and random at "
                           "the headline budget (default 2)")
    plan.add_argument("--budgets", type=int, nargs="+", default=[0, 10, 25, 50, 100],
                      help="extra-bit budgets, percent of the hardware groups (default 0 10 25 50 100)")
    plan.add_argument("--headline-budget", type=int, default=25)
    plan.add_argument("--quantizers", nargs="+", default=["lsq", "stats"], choices=sorted(QUANTIZERS),
                      help="lsq: learned step; stats: the paper-era step from the weights' statistics")
    plan.add_argument("--extra-variants", nargs="*", default=[], metavar="VARIANT",
                      help=f"more variants for every seed and quantizer: {', '.join(EXTRA_VARIANTS)}, any "
                           f"MPQ variant, or an ablation <variant>+<change> with changes from "
                           f"{', '.join(ABLATIONS)} (see the top of this file)")
    slices = parser.add_argument_group("this sitting")
    slices.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                        help="rows whose id (e.g. vgg9_w0.25/lsq/uniform-w4/s0) matches a pattern "
                             "(shell wildcards; without any, a substring)")
    slices.add_argument("--max-rows", type=int, default=None, help="start at most N rows")
    slices.add_argument("--hours", type=float, default=None,
                        help="stop at the first epoch end after which another epoch would pass H hours "
                             "(the row continues on the next run)")
    slices.add_argument("--device", default="cpu", help="cpu, cuda or auto (default %(default)s)")
    slices.add_argument("--threads", type=int, default=1, help="CPU threads (default %(default)s)")
    slices.add_argument("--state", default="runs/mpq_paper", help="state folder (default %(default)s)")
    action = parser.add_argument_group("instead of running")
    action.add_argument("--plan", "--status", dest="plan", action="store_true",
                        help="list the rows: done, running, left, with the estimated time")
    action.add_argument("--report", action="store_true",
                        help="aggregate every finished row under --state into OUT.json, OUT.md and the plots")
    action.add_argument("--restore", metavar="REPORT_JSON", default=None,
                        help="copy a committed report's finished rows and settings into --state "
                             "(kept where present), to continue the protocol on another machine")
    action.add_argument("--overhead", action="store_true",
                        help="measure the tracking overhead per QAT step into STATE/<model>_w<width>/overhead.json")
    action.add_argument("--overhead-steps", type=int, default=20)
    action.add_argument("--overhead-repeats", type=int, default=3)
    action.add_argument("--out", default=str(RESULTS / "mpq_paper"), help="report path stem (default %(default)s)")
    args = parser.parse_args(argv)
    family = FAMILIES[args.model]
    if args.full:
        if args.width not in (None, 1.0):
            parser.error(f"--full is width 1.0; drop --width {args.width:g}")
        args.width = 1.0
    for name in ("width", "float_epochs", "qat_epochs", "batch_size", "lr"):
        if getattr(args, name) is None:
            setattr(args, name, family[name])
    if args.bn_images < 0:
        parser.error(f"--bn-images must be 0 or more, got {args.bn_images}")
    for name in ("float_epochs", "qat_epochs", "batch_size", "train_images", "test_images", "max_rows",
                 "threads", "overhead_steps", "overhead_repeats"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if any(not 0 <= b <= 100 for b in args.budgets) or args.headline_budget not in args.budgets:
        parser.error("--budgets must lie in 0..100 and include --headline-budget")
    if not args.seeds:
        parser.error("--seeds: give at least one")
    return args


def read_reports(root):
    rows, protocols, overheads = [], {}, {}
    for folder in sorted(glob.glob(os.path.join(root, "*", "rows"))):
        state_path = os.path.dirname(folder)
        name = os.path.basename(state_path)
        rows += State(root, name).finished_rows()
        for what, target in (("protocol.json", protocols), ("overhead.json", overheads)):
            path = os.path.join(state_path, what)
            if os.path.isfile(path):
                target[name] = read_state_json(path)
    return rows, protocols, overheads


def restore(report_path, root):
    """Copy a committed report's finished rows, protocols and overheads into
    the state folder `root` (what is there already is kept): a sitting on a
    machine without the earlier `runs/` continues the protocol instead of
    repeating it. Restored rows carry their energy but no model file."""
    # Every row is read before anything is written: a bad file writes nothing.
    try:
        report = json.load(open(report_path))
        protocols, overheads = dict(report["protocols"]), dict(report.get("overhead", {}))
        placed = []
        for row in report["rows"]:
            folder, quantizer, variant, seed = row["id"].split("/")
            if not seed.startswith("s"):
                raise ValueError(f"row id {row['id']!r}")
            placed.append((State(root, folder), Row(folder, quantizer, variant, int(seed[1:])), row))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"--restore {report_path}: not a report of this bench ({error}); give the .json "
                        f"that `--report` wrote") from None
    added = 0
    for state, key, row in placed:
        path = state.row_file(key)
        if not os.path.isfile(path):
            os.makedirs(state.rows, exist_ok=True)
            write_atomically(path, json.dumps(row, indent=1) + "\n")
            added += 1
    for folder, settings in (("protocol.json", protocols), ("overhead.json", overheads)):
        for name, value in settings.items():
            path = os.path.join(root, name, folder)
            if not os.path.isfile(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_atomically(path, json.dumps(value, indent=1) + "\n")
    return added


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.restore:
            added = restore(args.restore, args.state)
            print(f"restored {added} finished rows from {args.restore} into {args.state}")
            return 0
        if args.report:
            rows, protocols, overheads = read_reports(args.state)
            if not rows:
                raise UserError(f"no finished rows under {args.state}/*/rows")
            fill_energy(rows)
            write_report(rows, protocols, overheads, args.out)
            print(f"wrote {args.out}.json, .md and plots from {len(rows)} rows")
            return 0
        import torch

        from sw.quantize.train import _device
        torch.set_num_threads(args.threads)
        family = FAMILIES[args.model]
        folder = folder_name(args.model, args.width)
        state = State(args.state, folder)
        protocol = protocol_settings(args, family)
        plan = selected(build_plan(folder, args), args.only)
        for row in plan:   # a misspelt --extra-variants fails here, not hours into the run
            variant_config(row.variant, row.quantizer, row.seed, {"unit": args.unit, "lr_rule": args.lr_rule})
        if not plan:
            raise UserError(f"--only {' '.join(args.only)}: no row of the plan matches (see --plan)")
        if args.plan:
            saved = os.path.join(state.path, "protocol.json")
            if os.path.isfile(saved):
                protocol = dict(read_state_json(saved))
            sizes = (args.train_images or (50000 if family["dataset"] == "cifar10" else 1437),
                     args.test_images or (10000 if family["dataset"] == "cifar10" else 360))
            show_plan(plan, state, protocol, estimate_seconds(state, protocol, family, sizes))
            return 0
        args.device = str(_device(args.device, 0))   # TF32 off on a GPU: exact integer sums
        checkpoint, float_epochs = float_checkpoint(args, family, state)
        protocol.update(float_checkpoint=checkpoint, float_epochs=float_epochs,
                        float_checkpoint_sha256=file_sha256(checkpoint))
        dataset = load_data(protocol, args.data)
        saved = os.path.join(state.path, "protocol.json")
        if not os.path.isfile(saved):
            from sw.quantize.train import evaluate, network_from_checkpoint
            network, _ = network_from_checkpoint(checkpoint)
            protocol["float_accuracy"] = evaluate(network, dataset, torch.device("cpu"))[1]
        protocol = state.check_protocol(protocol)
        if args.overhead:
            result = measure_overhead(protocol, dataset, args, args.overhead_steps, args.overhead_repeats)
            write_atomically(os.path.join(state.path, "overhead.json"), json.dumps(result, indent=1) + "\n")
            print(json.dumps(result["overhead_percent"]))
            return 0
        epoch_seconds, _, measured = estimate_seconds(state, protocol, family, (0, 0))
        run(plan, state, protocol, dataset, args, epoch_seconds if measured else None)
        return 0
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
