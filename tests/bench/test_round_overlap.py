"""bench/round_overlap.py: the overlap designs' cycle models run the compiled
program through the golden model with their own timing rules."""

import numpy as np

from bench import round_overlap
from bench.core_perf import layer_spec
from hw.config import get_config
from sw.compile import compile_layer


def test_the_models_time_the_compiled_program_and_only_ever_save_cycles():
    config = get_config("default")
    rng = np.random.default_rng(0)
    spec = layer_spec(rng, "conv2", "conv", 32, 16, 8, True, 2, 2, last=False)
    compiled = compile_layer(spec, config)
    images = compiled.memories(rng.integers(0, 4, size=spec.input_shape))
    cycles = round_overlap.program_cycles(config, [images])
    busy = compiled.expected_counters["busy_cycles"]
    assert cycles["built"] == compiled.expected_counters["cycles"]     # the golden model's rules
    assert busy < cycles["B"] < cycles["built"] < cycles["A"] < cycles["serial"]


def test_serial_is_the_design_before_the_overlap():
    """The serial model's figure for a one-round tile: fetch, prefetch, steps,
    skew and drain in turn (36 fixed cycles on 8x8, docs/dataflow.md)."""
    from hw import timing
    config = get_config("default")
    timeline = round_overlap.SerialRounds(config.rows, config.cols, config.packed_activations)
    timeline.fetch()
    timeline.round(0, True, True, 4)
    assert timeline.now == timing.FETCH_CYCLES + 9 + 4 + 15 + 8
