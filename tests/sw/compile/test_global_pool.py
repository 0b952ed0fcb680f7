"""Global average pooling (a linear layer on the sum of its (C, H, W) input
over H and W): the compiler runs it as the H x W convolution whose weights
are the same at every kernel position, one ROUND per position and weight
shift sharing the stored planes (sw/compile/lower.py). The golden model
against the numpy reference and the model file's integer reference, the
storage (nothing replicated) and the accumulator bound."""

import dataclasses

import numpy as np
import pytest

from common.errors import UserError
from hw.config import CONFIGS, AcceleratorConfig
from hw.isa import GROUP_SIZE
from sw.compile import compile_layer, random_input, random_layer_spec, reference_layer, run_golden
from sw.compile.lower import accumulator_bound

CONFIG_LIST = [
    CONFIGS["small"],
    CONFIGS["default"],
    AcceleratorConfig("r3c2", rows=3, cols=2, acc_width=28, program_depth=4096,
                      chunk_depth=4096, wptr_depth=256, param_depth=512, weight_depth=4096,
                      act_depth=4096, result_depth=1024),
]
STYLES = ("uniform2", "uniform3", "uniform4", "mpq", "mixed", "int8")


def check(spec, config, rng):
    compiled = compile_layer(spec, config)
    x = random_input(rng, spec)
    run = run_golden(compiled, x)
    expected = reference_layer(spec, x)
    assert np.array_equal(run.output, expected), (spec.name, config.name)
    assert run.counters == compiled.expected_counters
    return compiled, run


@pytest.mark.parametrize("style", STYLES)
def test_random_global_pool_layers(style):
    """Random C, H, W (odd sizes included), hidden and raw layers, every
    weight style (8-bit: three digit passes), 2/3/4/8-bit inputs."""
    rng = np.random.default_rng(sum(map(ord, style)))
    compiled = 0
    for index in range(12):
        config = CONFIG_LIST[index % len(CONFIG_LIST)]
        spec = random_layer_spec(rng, global_pool=True, style=style, raw=bool(index % 2),
                                 act_bits_in=int(rng.choice([2, 3, 4, 8], p=[.3, .2, .4, .1])),
                                 max_size=9, max_channels=40, name=f"{style}_{index}")
        try:
            check(spec, config, rng)
        except UserError as error:     # the sum of up to 81 pixels of 8-bit codes
            assert "overflows the" in str(error)
            continue
        compiled += 1
    assert compiled >= 9


def test_reference_is_the_sum_then_the_linear_layer():
    rng = np.random.default_rng(5)
    spec = random_layer_spec(rng, global_pool=True, height=3, width=5, raw=True)
    x = random_input(rng, spec)
    flat = dataclasses.replace(spec, global_pool=False, input_shape=(spec.in_channels, 1, 1))
    assert np.array_equal(reference_layer(spec, x), reference_layer(flat, x.sum((1, 2))))


@pytest.mark.parametrize("style", ["uniform4", "mpq", "int8"])
def test_weights_are_stored_once(style):
    """The pooled layer stores the weight planes and wptr entries of the
    plain linear layer; only chunk descriptors and ROUNDs repeat per position."""
    rng = np.random.default_rng(7)
    config = CONFIGS["small"]
    spec = random_layer_spec(rng, global_pool=True, height=4, width=3, style=style,
                             in_channels=37, out_channels=11, raw=True)
    flat = dataclasses.replace(spec, global_pool=False, input_shape=(spec.in_channels, 1, 1))
    pooled, plain = compile_layer(spec, config), compile_layer(flat, config)
    for region in ("weights", "wptr"):
        assert pooled.manifest["regions"][region] == plain.manifest["regions"][region]
    assert pooled.manifest["rounds"] == 12 * plain.manifest["rounds"]
    assert pooled.manifest["precision_histogram"] == plain.manifest["precision_histogram"]
    _, run = check(spec, config, rng)
    assert run.counters["weight_reads"] == 12 * compile_layer(flat, config).expected_counters[
        "weight_reads"]


def test_accumulator_bound_counts_every_position():
    rng = np.random.default_rng(9)
    spec = random_layer_spec(rng, global_pool=True, height=5, width=7, style="uniform4",
                             raw=True, act_bits_in=4)
    flat = dataclasses.replace(spec, global_pool=False, input_shape=(spec.in_channels, 1, 1))
    assert np.array_equal(accumulator_bound(spec), 35 * accumulator_bound(flat))
    # An accumulator that holds the linear layer but not the sum over 35 pixels.
    width = int(accumulator_bound(flat).max() + np.abs(spec.bias).max()).bit_length() + 2
    config = dataclasses.replace(CONFIGS["small"], name="narrow", acc_width=width)
    compile_layer(flat, config)
    if (accumulator_bound(spec) + np.abs(spec.bias)).max() >= 1 << (width - 1):
        with pytest.raises(UserError, match="overflows the"):
            compile_layer(spec, config)


def test_a_map_larger_than_the_kernel_limit_is_refused():
    rng = np.random.default_rng(11)
    spec = random_layer_spec(rng, global_pool=True, height=17, width=2, raw=True)
    with pytest.raises(UserError, match="global pooling of a 17x2 map"):
        compile_layer(spec, CONFIGS["default"])


def test_each_position_costs_one_round():
    """A position more is one ROUND more per weight shift: the prefetch and
    one cycle a step (docs/isa.md, "Timing"); its fetch, the skew and the
    drain overlap the rounds around it."""
    from hw.timing import PREFETCH_CYCLES
    rng = np.random.default_rng(13)
    config = CONFIGS["default"]
    R = config.rows
    spec = random_layer_spec(rng, global_pool=True, height=3, width=4, in_channels=40,
                             out_channels=R, style="uniform4", act_bits_in=4, raw=True)
    wider = random_layer_spec(rng, global_pool=True, height=3, width=5, in_channels=40,
                              out_channels=R, style="uniform4", act_bits_in=4, raw=True)
    cycles = [compile_layer(s, config).expected_counters["cycles"] for s in (spec, wider)]
    steps = 3 * GROUP_SIZE      # 40 channels: 3 blocks, W4A4
    per_round = PREFETCH_CYCLES + steps
    assert per_round == 9 + 48 == 57
    assert cycles[1] - cycles[0] == 3 * per_round
