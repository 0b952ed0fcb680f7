"""What every benchmark writes beside its figures: command, revision, machine."""

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

from common.files import write_atomically, writing_file

RESULTS = pathlib.Path(__file__).parent / "results"


def provenance():
    def git(*args):
        try:
            # In the checkout, wherever the bench runs from.
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=pathlib.Path(__file__).resolve().parents[1]).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"
    return {
        "command": " ".join([pathlib.Path(sys.executable).name] + sys.argv),
        # A copy without .git (a lent GPU machine) is told its revision.
        "revision": os.environ.get("MPQ_REVISION") or git("rev-parse", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"node": platform.node(), "cpu": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def write_json(name, figures):
    """Write bench/results/<name>.json atomically; returns the path."""
    path = RESULTS / f"{name}.json"
    write_atomically(path, json.dumps({**provenance(), **figures}, indent=2) + "\n")
    return path


def save_figure(figure, path, **options):
    """Save a matplotlib figure atomically: `path` is the old picture or the
    new one, never half of one."""
    with writing_file(path) as temporary:
        figure.savefig(temporary, format=pathlib.Path(path).suffix.lstrip(".") or "png", **options)


def untrained_model_file(model, precision, shape, path):
    """(header, arrays) of `model` quantized at `precision` (a string),
    calibrated on four random images of `shape` (seed 0) and written to
    `path`: a network whose map shapes, not its weights, are what a
    benchmark measures."""
    import torch

    from sw.quantize.config import parse_precision
    from sw.quantize.convert import calibrate, quantize_network
    from sw.quantize.export import read_model_file, write_model_file
    torch.manual_seed(0)
    network = quantize_network(model, parse_precision(precision), shape, input_mean=0.5, input_std=0.25)
    calibrate(network, torch.randint(0, 256, (4, *shape), dtype=torch.uint8))
    network.eval()
    write_model_file(network, str(path))
    return read_model_file(str(path))
