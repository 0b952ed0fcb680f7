"""The whole core's RTL on random layers, through the host stream.

Every layer's output is compared bit for bit with the compiler's golden
model and with a plain numpy integer layer, and every counter with the
golden model's prediction. The random layers include stride-2
convolutions (parity-split inputs) and parity-split outputs
(`random_layer_spec`), and about one layer in three that may be residual
is (unsigned and signed shortcuts of 2 to 4 bits, signed outputs), and
globally pooled linear layers apart; the
iCE40 options build no residual hardware (residual=False) and draw none.
MPQ_CORE_LAYERS sets the number of random layers (CI default 200; a deep
run: 2000), MPQ_SEED the seed.
"""

import dataclasses
import os

import numpy as np
import pytest

from common.errors import UserError
from hw.config import get_config
from sim.core_sim import run_on_rtl
from sw.compile import compile_layer, random_input, random_layer_spec, reference_layer, run_golden
from sw.fpga.cases import compared_counters

pytestmark = pytest.mark.cocotb

SEED = int(os.environ.get("MPQ_SEED", "1"))


def random_layers(config, count, seed, **limits):
    rng = np.random.default_rng(seed)
    layers, goldens, references = [], [], []
    for index in range(count):
        while True:  # a layer the configuration cannot take is redrawn (its error is tested elsewhere)
            spec = random_layer_spec(rng, name=f"layer{index}", **limits)
            try:
                compiled = compile_layer(spec, config)
                break
            except UserError:
                continue
        x = random_input(rng, spec)
        layers.append((compiled, x, spec.name))
        goldens.append(run_golden(compiled, x))
        references.append(reference_layer(spec, x))
    return layers, goldens, references


def first_difference(got, expected):
    index = tuple(int(i) for i in np.argwhere(got != expected)[0])
    return f"output[k={index[0]}, y={index[1]}, x={index[2]}] = {got[index]}, expected {expected[index]}"


def check(layers, goldens, references, results, config=None):
    assert len(results) == len(layers)
    failures = []
    for (compiled, _, name), golden, reference, result in zip(layers, goldens, references, results):
        assert np.array_equal(golden.output, reference), f"{name}: golden model != numpy reference"
        spec = compiled.spec
        label = (f"{name} ({spec.kind} {spec.input_shape} -> {spec.out_channels}, k={spec.kernel}, "
                 f"pad={spec.padding}, stride={spec.stride}, pool={spec.pool}, raw={spec.raw}, "
                 f"split={spec.split_output}, a_in={spec.act_bits_in}, residual={spec.residual}, "
                 f"signed={spec.act_signed})")
        if not result["status"]["done"] or result["status"]["error"]:
            failures.append(f"{label}: status {result['status']}")
        elif not np.array_equal(result["output"], golden.output):
            failures.append(f"{label}: {first_difference(result['output'], golden.output)}")
        else:
            compared = compared_counters(config) if config is not None else golden.counters
            wrong = {key: (result["counters"][key], value) for key, value in golden.counters.items()
                     if key in compared and result["counters"][key] != value}
            if wrong:
                failures.append(f"{label}: counters (rtl, golden) {wrong}")
    assert not failures, f"{len(failures)} of {len(layers)} layers wrong:\n" + "\n".join(failures[:10])


def test_random_residual_layers_on_verilator(rtl_build):
    """Residual layers only, on `small` and on a 3x2 array (R not a multiple
    of 4: channel tiles start mid-word, J differs between tiles), every
    precision pair and odd channel counts."""
    for config, seed in ((get_config("small"), SEED + 4),
                         (dataclasses.replace(get_config("small"), name="small-r3c2", rows=3, cols=2),
                          SEED + 5)):
        layers, goldens, references = random_layers(config, 24, seed, max_channels=11, max_size=6,
                                                    residual=True)
        assert any(g.counters["shortcut_reads"] for g in goldens)
        results = run_on_rtl(layers, config, simulator="verilator", seed=SEED, stall=0.3,
                             build_dir=rtl_build)
        check(layers, goldens, references, results)


def test_random_global_pool_layers_on_verilator(rtl_build):
    """Globally pooled linear layers (one ROUND per kernel position and
    weight shift, all reading the same stored planes), hidden and raw, odd
    maps, every weight style (8-bit: three digit passes), on `small` and on
    a 3x2 array."""
    for config, seed in ((get_config("small"), SEED + 6),
                         (dataclasses.replace(get_config("small"), name="small-r3c2", rows=3, cols=2),
                          SEED + 7)):
        layers, goldens, references = random_layers(config, 16, seed, max_channels=20, max_size=7,
                                                    global_pool=True)
        assert sum(compiled.manifest["rounds"] > compiled.manifest["tiles"] * 3
                   for compiled, _, _ in layers) >= 8
        results = run_on_rtl(layers, config, simulator="verilator", seed=SEED, stall=0.3,
                             build_dir=rtl_build)
        check(layers, goldens, references, results)


def test_random_layers_on_verilator(rtl_build):
    config = get_config("small")
    count = int(os.environ.get("MPQ_CORE_LAYERS", "200"))
    layers, goldens, references = random_layers(config, count, SEED, max_channels=12, max_size=7,
                                                residual=None)
    results = run_on_rtl(layers, config, simulator="verilator", seed=SEED, stall=0.3,
                         build_dir=rtl_build)
    check(layers, goldens, references, results)


@pytest.mark.icarus
def test_random_layers_on_icarus(rtl_build):
    config = get_config("small")
    layers, goldens, references = random_layers(config, 6, SEED + 1, max_channels=8, max_size=5,
                                                residual=None)
    results = run_on_rtl(layers, config, simulator="icarus", seed=SEED, stall=0.3,
                         build_dir=rtl_build)
    check(layers, goldens, references, results)


def test_random_layers_on_the_default_array(rtl_build):
    """8x8 with the default memories: channel counts around and above 8 and 16."""
    config = get_config("default")
    layers, goldens, references = random_layers(config, 8, SEED + 2, max_channels=40, max_size=10,
                                                residual=None)
    results = run_on_rtl(layers, config, simulator="verilator", seed=SEED, stall=0.1,
                         build_dir=rtl_build)
    check(layers, goldens, references, results)


def test_random_layers_with_the_ice40_area_options(rtl_build):
    """`small` (4x4) with every area option the iCE40 uses: no counters but
    `cycles` (compared with the golden model's), the PPU's clamped shift,
    10-bit coordinates, narrow counts, one bank-address product, no PPU hold
    registers, chunk buffers in lane order shifted by one, no residual
    adds, 4-bit activation slots; but stride 2 kept, so that its addresses
    run with one bank-address product."""
    config = dataclasses.replace(get_config("small"), name="small-lean", counters=False,
                                 ppu_barrel_shift=False, coord_bits=10, narrow_counts=True,
                                 shared_bank_address=True, ppu_hold_registers=False,
                                 permuted_buffers=True, residual=False, packed_activations=False)
    layers, goldens, references = random_layers(config, 40, SEED + 3, max_channels=12, max_size=7)
    results = run_on_rtl(layers, config, simulator="verilator", seed=SEED, stall=0.3,
                         build_dir=rtl_build)
    check(layers, goldens, references, results, config)
