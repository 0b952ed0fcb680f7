"""VGG-9 on CIFAR-10, end to end on the RTL: a model file (`mpq export`) is
compiled, run on real test images in Verilator, and every layer of every
image is compared bit for bit with the PyTorch integer reference. Writes
bench/results/e2e_vgg9.json.

    .venv/bin/python bench/e2e_vgg9.py MODEL.mpq --data DIR [--images 100] [--config default]

DIR holds CIFAR-10 in the official python layout (the offline copy:
`python ../shared/data/cifar10/to_batches.py DIR`).
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.common import write_json  # noqa: E402
from bench.e2e import run_end_to_end, summary_line  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--config", default="default")
    args = parser.parse_args()
    run = run_end_to_end(args.model, args.data, args.images, config=args.config,
                         build_dir="build/bench/e2e_vgg9")
    path = write_json("e2e_vgg9", run.figures)
    print(summary_line(path, run.report))


if __name__ == "__main__":
    main()
