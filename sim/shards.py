"""Many bench cases over many simulators: one build, shards run side by side.

The cases (a network's images) are cut into contiguous shards. Each shard is
one simulation of the same built model (sim/core_sim.py `run_built`) in its
own work directory, on a local core (`jobs`) or on a Dask distributed
cluster (a client of its scheduler: `connect`). The results come back
in case order, so whoever merges them cannot tell how they were cut: a case's
outputs and counters do not depend on its neighbours, and its host-stream
stalls come from (seed, case name) (sim/benches/core_bench.py).

A local shard is a thread that waits on its simulator process: the work is
in the simulator, not in Python. A Dask worker must see the build and work
directories at the same paths as this process (a shared filesystem; see
docs/sim.md) and import this project.
"""

import concurrent.futures
import os
import pathlib
import shutil
import tempfile

from common.errors import UserError
from sim.core_sim import finished_cases, run_built

POLL_S = 1.0   # how often the shards' progress files are read


def usable_cores():
    """Cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def shard_ranges(count, shards):
    """`shards` contiguous [start, stop) ranges over `count` cases, sizes
    differing by at most one (none empty)."""
    shards = max(1, min(shards, count))
    size, extra = divmod(count, shards)
    ranges, start = [], 0
    for index in range(shards):
        stop = start + size + (index < extra)
        ranges.append((start, stop))
        start = stop
    return ranges


def run_sharded(core, count, cases_for, *, jobs=None, client=None, seed=1, stall=0.2,
                progress=None, work_root=None):
    """Run `count` cases on the built `core` in shards; `cases_for(start,
    stop)` makes the cases of one range. Returns the results in case order,
    each with the index of its "shard".

    `jobs`: shards run at once; default every usable core, or with a Dask
    `client` (`connect`) every thread of the cluster's workers. `progress(done,
    cycles)` is called about every second with the cases finished so far
    and their cycles. Shard k works in `work_root`/shard<k>: kept when given
    (a waveform is written there), else a temporary folder beside the build,
    removed unless a shard failed (its error names its log). A failed
    shard's error is raised once every shard has ended."""
    if jobs is None and client:
        jobs = sum(client.nthreads().values())
    elif jobs is None:
        jobs = usable_cores()
    ranges = shard_ranges(count, jobs)
    root = pathlib.Path(work_root) if work_root is not None else \
        pathlib.Path(tempfile.mkdtemp(prefix="shards-", dir=core.directory.parent))
    work_dirs = [root / f"shard{index}" for index in range(len(ranges))]
    arguments = [(core, cases_for(start, stop), work_dir)
                 for (start, stop), work_dir in zip(ranges, work_dirs)]
    if client:
        futures = [client.submit(run_built, *args, seed=seed, stall=stall, pure=False)
                   for args in arguments]
        _follow(futures, work_dirs, progress, _dask_wait)
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            futures = [pool.submit(run_built, *args, seed=seed, stall=stall)
                       for args in arguments]
            _follow(futures, work_dirs, progress, _local_wait)
    results = [_result(future, index, work_dirs) for index, future in enumerate(futures)]
    if work_root is None:
        shutil.rmtree(root, ignore_errors=True)
    return [dict(result, shard=index) for index, shard in enumerate(results) for result in shard]


def connect(address, timeout=30):
    """A Dask client of the scheduler at `address` with at least one worker
    (close it when done), or a `UserError` that says what to start."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise UserError("--scheduler needs Dask's distributed package: pip install "
                        "'dask[distributed]' (make setup installs it)") from None
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as error:
        raise UserError(f"--scheduler {address}: no Dask scheduler answers there ({error}); "
                        "start one with `dask scheduler` and workers with `dask worker "
                        "ADDRESS` (docs/sim.md)") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise UserError(f"--scheduler {address}: no Dask worker joined in {timeout} s; start "
                        f"workers with `dask worker {address}` (docs/sim.md)") from None
    return client


def _local_wait(futures):
    concurrent.futures.wait(futures, timeout=POLL_S)


def _dask_wait(futures):
    from dask.distributed import wait
    try:
        wait(futures, timeout=POLL_S)
    except TimeoutError:
        pass


def _follow(futures, work_dirs, progress, wait):
    """Wait for every shard, telling `progress` how far they are."""
    finished = {}   # shard -> its finished cases, once it has ended
    while True:
        if progress:
            done = cycles = 0
            for index, work_dir in enumerate(work_dirs):
                cases = finished.get(index)
                if cases is None:
                    ended = futures[index].done()   # asked first: then the file is whole
                    cases = finished_cases(work_dir)
                    if ended:
                        finished[index] = cases
                done += len(cases)
                cycles += sum(count for _, count in cases)
            progress(done, cycles)
        if all(future.done() for future in futures):
            return
        wait(futures)


def _result(future, index, work_dirs):
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, UserError):
        raise error
    if type(error).__name__ == "KilledWorker":   # Dask gave up on the shard's workers
        raise UserError(f"shard {index}: the Dask cluster lost the workers that ran it "
                        f"({error}); its files are under {work_dirs[index]}") from None
    raise error


def rtl_status(done, total, cycles, elapsed):
    """One line for a person following an RTL run."""
    rate = cycles / elapsed if elapsed > 0 else 0
    text = f"{done}/{total} images, {rate / 1e6:.2f} M cycles/s"
    if done:
        text += f", ETA {_duration(elapsed / done * (total - done))}"
    return text


def _duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}" if minutes else f"{seconds} s"
