"""The golden model, executing the compiled program on the memory images,
against the plain numpy reference, on random layers.

MPQ_LAYERS sets how many random layers (default 1000, about half a minute on
one core, in batches of 100 that pytest-xdist spreads); above the default the
batches are marked slow: `MPQ_LAYERS=20000 pytest -n 2 tests/sw/compile`.
"""

import os
import zlib

import numpy as np
import pytest

from common.errors import UserError
from hw.config import CONFIGS, AcceleratorConfig
from sw.compile import Placement, compile_layer, random_input, random_layer_spec, reference_layer, run_golden

LAYERS = int(os.environ.get("MPQ_LAYERS", "1000"))
BATCHES = max(10, -(-LAYERS // 100))
BATCH_MARKS = [pytest.mark.slow] if LAYERS > 1000 else []
CONFIG_LIST = [
    CONFIGS["small"],
    CONFIGS["default"],
    # Odd row count, narrow columns, a wide accumulator.
    AcceleratorConfig("r3c2", rows=3, cols=2, acc_width=28, program_depth=4096,
                      chunk_depth=4096, wptr_depth=256, param_depth=512, weight_depth=4096,
                      act_depth=4096, result_depth=1024),
    # More columns than rows: long PPU jobs, so OAB stalls.
    AcceleratorConfig("r5c16", rows=5, cols=16, acc_width=26),
]


def random_placement(rng, spec):
    if rng.random() < 0.6:
        return None
    return Placement(in_base=int(rng.integers(0, 64)), param_base=int(rng.integers(0, 64)),
                     res_base=int(rng.integers(0, 16)), chunk_base=int(rng.integers(0, 64)),
                     wptr_base=int(rng.integers(0, 16)), weight_base=int(rng.integers(0, 64)))


def check_layer(spec, config, rng, placement=None):
    compiled = compile_layer(spec, config, placement)
    x = random_input(rng, spec)
    run = run_golden(compiled, x)
    expected = reference_layer(spec, x)
    assert run.output.shape == expected.shape
    if not np.array_equal(run.output, expected):
        where = np.argwhere(run.output != expected)[0]
        pytest.fail(f"{spec.name} on {config.name}: golden {run.output[tuple(where)]} != "
                    f"reference {expected[tuple(where)]} at {tuple(where)}; manifest "
                    f"{compiled.manifest}")
    assert run.counters == compiled.expected_counters
    return compiled, run


@pytest.mark.parametrize("batch", [pytest.param(b, marks=BATCH_MARKS) for b in range(BATCHES)])
def test_random_layers(batch):
    rng = np.random.default_rng(1000 + batch)
    count = -(-LAYERS // BATCHES)
    compiled_count = 0
    for index in range(count):
        config = CONFIG_LIST[index % len(CONFIG_LIST)]
        # One layer in three residual where it may be (sw/compile/layer.py).
        spec = random_layer_spec(rng, name=f"b{batch}_l{index}", residual=None)
        try:
            check_layer(spec, config, rng, random_placement(rng, spec))
        except UserError as error:
            assert spec.name in str(error)
            continue
        compiled_count += 1
    assert compiled_count >= 0.9 * count


FEATURES = {
    "mpq_3x3_pad": dict(kind="conv", kernel=3, padding=1, style="mpq"),
    "mixed_groups": dict(style="mixed"),
    "int8_weights": dict(style="int8", raw=False, max_channels=12),
    "int8_input": dict(act_bits_in=8, max_channels=16),
    "int8_both": dict(style="int8", act_bits_in=8, in_channels=3, max_channels=12),
    "pool_odd": dict(kind="conv", pool=True, raw=False),
    "raw_linear": dict(kind="linear", raw=True),
    "linear_hidden": dict(kind="linear", raw=False),
    "a2_w2": dict(style="uniform2", act_bits_in=2),
    "ragged_wide": dict(in_channels=33, out_channels=19),
    "stride2_3x3_pad": dict(kind="conv", stride=2, kernel=3, padding=1),
    "stride2_1x1": dict(kind="conv", stride=2, kernel=1, padding=0),
    "stride2_int8_input": dict(kind="conv", stride=2, act_bits_in=8, max_channels=16),
    "stride2_wide": dict(kind="conv", stride=2, kernel=3, padding=1, max_size=40,
                         max_channels=12),
    "split_output_pool": dict(kind="conv", pool=True, raw=False, split_output=True),
    # Residual layers: odd channel counts (shortcut words that straddle
    # channel tiles when R is not a multiple of 4: r3c2, r5c16), signed and
    # unsigned shortcuts of every width, signed outputs.
    "residual": dict(residual=True),
    "residual_odd": dict(residual=True, out_channels=7, in_channels=5),
    "residual_int8_input": dict(residual=True, act_bits_in=8, max_channels=12),
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
@pytest.mark.parametrize("config", CONFIG_LIST, ids=lambda c: c.name)
def test_features(feature, config):
    rng = np.random.default_rng(zlib.crc32(f"{feature}-{config.name}".encode()))
    for index in range(12 if feature.startswith("residual") else 6):
        spec = random_layer_spec(rng, name=f"{feature}{index}", **FEATURES[feature])
        try:
            check_layer(spec, config, rng)
        except UserError as error:
            assert "result_depth" in str(error), error


def test_stalls_happen_and_are_predicted():
    """Short tiles on a wide array wait for the PPU; the prediction is the
    golden's (checked by hand in test_hand.py)."""
    rng = np.random.default_rng(5)
    spec = random_layer_spec(rng, kind="conv", kernel=1, padding=0, in_channels=8,
                             out_channels=8, height=3, width=40, style="uniform2",
                             act_bits_in=2, pool=False, raw=False)
    compiled, run = check_layer(spec, CONFIG_LIST[3], rng)
    assert run.counters["stall_cycles"] > 0
