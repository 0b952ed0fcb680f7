#!/usr/bin/env python3
"""Seconds per QAT training step (forward, backward, SGD update) of the
bit-exact quantized layers, on one CPU thread: what bounds how many of issue
17's rows a CPU session runs (`bench/mpq_paper.py`: 391 steps of 128 images
an epoch, 10 epochs a row).

    .venv/bin/python bench/qat_step.py            # bench/results/qat_step.json

Networks are untrained (calibrated on random images): the step's cost is
the shapes', not the weights'. Per case the median of `--steps` timed steps
after two warm-up steps, W2A4 and W4A4 middle layers (8-bit first and last,
the protocol's setting), 128 random CIFAR-sized images.
"""

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import write_json  # noqa: E402
from sw.quantize.config import parse_precision  # noqa: E402
from sw.quantize.convert import calibrate, quantize_network  # noqa: E402
from sw.quantize.models import MODELS  # noqa: E402

CASES = [("vgg9", 0.25), ("resnet20", 1.0)]
SHAPE = (3, 32, 32)
STEPS_PER_EPOCH = 391      # 50,000 images in batches of 128


def step_seconds(name, width, weight_bits, batch, steps):
    torch.manual_seed(0)
    network = quantize_network(MODELS[name](width=width), parse_precision(f"w{weight_bits}a4,first=w8,last=w8"),
                               SHAPE, input_mean=0.5, input_std=0.25)
    calibrate(network, torch.randint(0, 256, (16, *SHAPE), dtype=torch.uint8))
    network.train()
    images = torch.randint(0, 256, (batch, *SHAPE), dtype=torch.uint8).float()
    labels = torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9)
    times = []
    for index in range(steps + 2):
        began = time.perf_counter()
        loss = F.cross_entropy(network(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index >= 2:
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per case (default 8)")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [(name, width, bits) for name, width in CASES for bits in (2, 4)]
    figures = []
    for name, width, bits in tqdm(cases, desc="networks", mininterval=0, file=sys.stdout):
        seconds = step_seconds(name, width, bits, args.batch, args.steps)
        figures.append({"model": name, "width": width, "precision": f"W{bits}A4", "batch": args.batch,
                        "seconds_per_step": round(seconds, 4),
                        "qat_epoch_minutes": round(seconds * STEPS_PER_EPOCH / 60, 2)})
        print(f"{name} w{width} W{bits}A4: {seconds:.3f} s/step, "
              f"{seconds * STEPS_PER_EPOCH / 60:.1f} min per 50,000-image epoch")
    path = write_json("qat_step", {"threads": 1, "steps_timed": args.steps, "cases": figures})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
