"""Run a compiled network on the core's RTL, image after image.

Each image is one bench case: for a single-phase network the first image
loads the static images (program, chunks, weight pointers, parameters,
weights) and every image loads its input; a multi-phase network reloads each
phase's static images for every image (the external-memory model). After the
last phase, every layer's output region is read back, so each layer can be
compared with the PyTorch integer reference.
"""

import numpy as np

from sim.core_sim import decode_readback, readback_ranges, run_cases
from sw import driver
from sw.compile.images import host_word_stream


def network_cases(network, images):
    config = network.config
    single = len(network.phases) == 1
    readback = [r for layer in network.layers for r in readback_ranges(layer)]
    expected = sum(layer.expected_counters["cycles"] for layer in network.layers)
    cases = []
    for index, x in enumerate(images):
        phases = []
        for number in range(len(network.phases)):
            if single and index > 0:
                loaded = network.input_images(x)
            else:
                loaded = network.phase_images(number, x)
            phases.append({"load": driver.load_commands(host_word_stream(loaded, config), config)})
        cases.append({"name": f"image{index}", "phases": phases, "readback": readback,
                      "timeout_cycles": 2 * expected + 10_000})
    return cases


def run_network_on_rtl(network, images, **options):
    """Per image: {"outputs": [per-layer arrays], "counters", "status", timings}."""
    results = run_cases(network_cases(network, images), network.config, **options)
    for result in results:
        entries = iter(result["readback"])
        outputs = []
        for layer in network.layers:
            ranges = readback_ranges(layer)
            outputs.append(decode_readback(layer, [next(entries) for _ in ranges]))
        result["outputs"] = outputs
    return results


def first_mismatch(outputs, expected, names):
    """`None`, or a message naming the first layer and element that differ.
    `names` are how messages name the layers (`LayerSpec.label`)."""
    for name, got, want in zip(names, outputs, expected):
        want = np.asarray(want).reshape(got.shape)
        if not np.array_equal(got, want):
            index = tuple(int(i) for i in np.argwhere(got != want)[0])
            return (f"{name}, element (channel, y, x) = {index}: RTL {got[index]}, "
                    f"integer reference {want[index]}")
    return None
