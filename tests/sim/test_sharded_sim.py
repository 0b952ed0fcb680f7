"""A compiled network's images in shards of one build: in one simulation, in
two side by side, and on a Dask cluster of two worker processes, the report
is the same apart from timings; results come back in image order under
their global indices; host-stream stalls change nothing."""

import concurrent.futures
import json
import logging
import pathlib
import socket
import time

import pytest

from common.errors import UserError
from hw.config import get_config
from sim.commands import RUN_FIELDS, comparable, simulate
from sim.core_sim import PROGRESS_FILE, CoreBuild, build_core, finished_cases, run_built
from sim.network_sim import network_cases, run_network_on_rtl
from sim.shards import shard_ranges
from sw.compile.artifacts import read_compiled, write_compiled
from sw.quantize.data import load_digits
from tests.sim.conftest import make_model_file

IMAGES = 6


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sharded")
    model = make_model_file(directory / "w4a4.mpq")
    images = load_digits().test_x[:1].numpy()
    write_compiled(model, "small", directory / "compiled", images)
    return directory / "compiled"


def test_shards_cover_the_cases_in_order_and_never_empty():
    assert shard_ranges(6, 1) == [(0, 6)]
    assert shard_ranges(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert shard_ranges(2, 8) == [(0, 1), (1, 2)]
    for count in range(1, 12):
        for shards in range(1, 6):
            ranges = shard_ranges(count, shards)
            assert [start for start, _ in ranges[1:]] == [stop for _, stop in ranges[:-1]]
            assert ranges[0][0] == 0 and ranges[-1][1] == count
            assert all(stop > start for start, stop in ranges)


def test_progress_counts_only_whole_lines(tmp_path):
    (tmp_path / PROGRESS_FILE).write_text("image0 41018\nimage1 41018\nimage2 410")
    assert finished_cases(tmp_path) == [("image0", 41018), ("image1", 41018)]
    assert finished_cases(tmp_path / "not-started") == []


def test_a_machine_that_cannot_see_the_build_says_so(tmp_path):
    core = CoreBuild("verilator", tmp_path / "elsewhere" / "verilator", {})
    with pytest.raises(UserError, match=f"{socket.gethostname()}: .*elsewhere.* same path"):
        run_built(core, [], tmp_path / "work")


@pytest.mark.cocotb
@pytest.mark.slow
def test_one_two_and_dask_processes_report_the_same(compiled, rtl_build):
    from dask.distributed import LocalCluster

    heard = []
    one = simulate(compiled, IMAGES, build_dir=rtl_build, jobs=1)
    two = simulate(compiled, IMAGES, build_dir=rtl_build, jobs=2, progress=heard.append)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        dask = simulate(compiled, IMAGES, build_dir=rtl_build, jobs=2,
                        scheduler=cluster.scheduler_address)
    assert one["bit_exact"] and one["images"] == IMAGES
    assert comparable(two) == comparable(one)
    assert comparable(dask) == comparable(one)
    assert set(one) - set(comparable(one)) == set(RUN_FIELDS)
    assert [r["run"]["shards"] for r in (one, two, dask)] == [1, 2, 2]
    assert dask["run"]["scheduler"] == cluster.scheduler_address
    # The model was built once (or by an earlier test) and then only reused.
    assert not two["run"]["model_built"] and not dask["run"]["model_built"]
    assert any(f"{IMAGES}/{IMAGES} images" in text and "M cycles/s" in text for text in heard)


@pytest.mark.cocotb
def test_results_come_back_in_order_with_global_names_whatever_the_stalls(compiled, rtl_build):
    network, _, _ = read_compiled(compiled)
    images = load_digits().test_x[:4].numpy()
    core = build_core(get_config("small"), rtl_build)
    whole = run_network_on_rtl(network, images, core=core, jobs=1, seed=1, stall=0.1)
    # Three shards of a run that starts at image 10, with other stalls.
    cut = run_network_on_rtl(network, images, core=core, jobs=3, first_index=10, seed=7,
                             stall=0.4)
    assert [r["name"] for r in cut] == [f"image{10 + i}" for i in range(4)]
    assert [r["shard"] for r in cut] == [0, 0, 1, 2]
    for a, b in zip(whole, cut):
        assert a["counters"] == b["counters"] and a["status"] == b["status"]
        assert a["readback"] == b["readback"]


@pytest.mark.cocotb
def test_a_simulator_that_dies_is_an_error_that_names_its_log(compiled, rtl_build, tmp_path):
    import psutil

    network, _, _ = read_compiled(compiled)
    core = build_core(get_config("small"), rtl_build)
    cases = network_cases(network, load_digits().test_x[:50].numpy())
    executable = str(core.directory / "core")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_built, core, cases, tmp_path / "work")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not run.done():
            simulators = [p for p in psutil.Process().children(recursive=True)
                          if _command(p)[:1] == [executable]]
            if simulators:
                simulators[0].kill()
                break
            time.sleep(0.2)
        with pytest.raises(UserError, match=r"the RTL simulation failed .*work/test.log"):
            run.result(timeout=60)


def _command(process):
    import psutil
    try:
        return process.cmdline()
    except psutil.Error:   # it ended (or is ending) while we looked
        return []


@pytest.mark.cocotb
@pytest.mark.slow
def test_a_mismatch_is_reported_by_image_and_layer_with_a_waveform_of_it(compiled, rtl_build,
                                                                          monkeypatch):
    """The core is right; the reference is made to expect one logit more for
    the second image (a fault injected where the comparison reads it), so the
    report must name that image and the logits layer and leave a waveform."""
    from sw.quantize.reference import IntegerModel

    original = IntegerModel.__call__

    def off_by_one_on_image_1(self, images, return_codes=False):
        logits, trace = original(self, images, return_codes=True)
        logits = logits.clone()
        logits[1, 0] += 1
        return (logits, trace) if return_codes else logits

    monkeypatch.setattr(IntegerModel, "__call__", off_by_one_on_image_1)
    report = simulate(compiled, 3, build_dir=rtl_build, jobs=1)
    assert not report["bit_exact"]
    assert [m["image"] for m in report["mismatches"]] == [1]
    network, _, _ = read_compiled(compiled)
    assert network.specs[-1].label in report["mismatches"][0]["problem"]
    waves = [p for p in pathlib.Path(report["waveform_dir"]).rglob("*")
             if p.suffix in (".fst", ".vcd") and p.stat().st_size > 0]
    assert waves, f"no waveform under {report['waveform_dir']}"
    written = json.loads((compiled / "sim_report.json").read_text())
    assert written["mismatches"] == report["mismatches"] and not written["bit_exact"]
