"""Run a compiled network on the core's RTL, image after image.

Each image is one bench case: for a single-phase network the first image of
each simulation loads the static images (program, chunks, weight pointers, parameters,
weights) and every image loads its input; a multi-phase network reloads each
phase's static images for every image (the external-memory model). After the
last phase, the output region of every layer whose output survives the run
(`CompiledNetwork.checked`; all of them unless the compiler reused
activation memory) is read back, so each can be compared with the PyTorch
integer reference. The images may be cut into
shards that run side by side (sim/shards.py).
"""

import numpy as np

from sim.core_sim import build_core, decode_readback, readback_ranges
from sim.shards import run_sharded
from sw import driver
from sw.compile.images import host_word_stream


def checked_layers(network):
    """The compiled layers whose output survives a run, in layer order."""
    return [layer for layer, checked in zip(network.layers, network.checked) if checked]


def network_cases(network, images, first_index=0):
    """One case per image, named by its index in the whole run
    (`first_index` + position), the first of them loading the static images."""
    config = network.config
    single = len(network.phases) == 1
    readback = [r for layer in checked_layers(network) for r in readback_ranges(layer)]
    expected = sum(layer.expected_counters["cycles"] for layer in network.layers)
    cases = []
    for position, x in enumerate(images):
        phases = []
        for number in range(len(network.phases)):
            if single and position > 0:
                loaded = network.input_images(x)
            else:
                loaded = network.phase_images(number, x)
            phases.append({"load": driver.load_commands(host_word_stream(loaded, config), config)})
        cases.append({"name": f"image{first_index + position}", "phases": phases,
                      "readback": readback,
                      "timeout_cycles": 2 * expected + 10_000})
    return cases


def run_network_on_rtl(network, images, *, core=None, first_index=0, jobs=1, client=None,
                       progress=None, simulator="verilator", build_dir="build/sim/network",
                       seed=1, stall=0.2, waves=False, work_root=None):
    """Per image: {"outputs": [per-layer arrays; None for a layer whose
    output a later one overwrote], "counters", "status", timings}.

    The images run in `jobs` shards side by side on one build of the core
    (`core` from `build_core`, else built here), on local cores or on the
    Dask cluster of `client` (sim/shards.py); the results are the same
    however they are cut. Image i is named (and stalled) as image
    `first_index` + i. `progress(done, cycles)` and `work_root` as in
    `run_sharded`."""
    if core is None:
        core = build_core(network.config, build_dir, simulator, waves)

    def cases_for(start, stop):
        return network_cases(network, images[start:stop], first_index + start)

    results = run_sharded(core, len(images), cases_for, jobs=jobs, client=client,
                             seed=seed, stall=stall, progress=progress, work_root=work_root)
    for result in results:
        entries = iter(result["readback"])
        outputs = []
        for layer, checked in zip(network.layers, network.checked):
            if not checked:
                outputs.append(None)
                continue
            ranges = readback_ranges(layer)
            outputs.append(decode_readback(layer, [next(entries) for _ in ranges]))
        result["outputs"] = outputs
    return results


def first_mismatch(outputs, expected, names):
    """`None`, or a message naming the first layer and element that differ.
    `names` are how messages name the layers (`LayerSpec.label`). A layer
    whose output is None (overwritten by a later layer) is not compared."""
    for name, got, want in zip(names, outputs, expected):
        if got is None:
            continue
        want = np.asarray(want).reshape(got.shape)
        if not np.array_equal(got, want):
            index = tuple(int(i) for i in np.argwhere(got != want)[0])
            return (f"{name}, element (channel, y, x) = {index}: RTL {got[index]}, "
                    f"integer reference {want[index]}")
    return None
