"""The energy model: a hand-priced tiny layer, the rules against the cited
tables, independence from run order, and clear errors for bad tables."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

from common.errors import UserError
from hw.config import CONFIGS
from sw.compile import LayerSpec, compile_layer
from sw.energy.designs import uniform_storage
from sw.energy.model import EnergyModel, node_scale
from sw.energy.tables import TABLE_DIR, interpolate, load_table, load_tables

# The counters of tests/sw/compile/test_hand.py::test_single_chunk_layer,
# worked out there by hand from docs/isa.md: a 1x1 conv, 16 -> 4 channels,
# a 1x4 map, W2A2, one ROUND of one chunk on the 4x4 `small` array.
HAND_COUNTERS = {
    "cycles": 0, "busy_cycles": 4, "stall_cycles": 0,
    "macs_w4a4": 0, "macs_w4a2": 0, "macs_w2a4": 0, "macs_w2a2": 4 * 4 * 4 * 4,
    "weight_reads": 4 * 2, "act_reads": 4 * 4, "act_writes": 16, "result_writes": 0,
    "chunk_reads": 1, "wptr_reads": 1, "param_reads": 4, "program_reads": 20,
    "oab_reads": 4, "oab_writes": 4, "shortcut_reads": 4 * 2}


def test_a_hand_counted_layer_priced_by_hand():
    config = CONFIGS["small"]
    model = EnergyModel(config, fused_pe_factor=1.5)
    report = model.price(HAND_COUNTERS)
    # Horowitz 45 nm, 0.9 V, scaled to 65 nm, 1.0 V: x (65/45) (1.0/0.9)^2.
    scale = 65 / 45 * (1.0 / 0.9) ** 2
    # 4x4 multiply: the 8-bit 0.2 pJ scaled down the 8 -> 32-bit slope
    # (3.1 / 0.2 over 4x the bits); 24-bit add: 0.03 pJ up the 0.03 -> 0.1 slope.
    multiply = 0.2 * 0.5 ** (math.log(3.1 / 0.2) / math.log(4))
    add = 0.03 * 3 ** (math.log(0.1 / 0.03) / math.log(4))
    pe_cycle = (multiply + add) * 1.5 * scale
    # W2A2: 4 lanes, so 256 MACs are 64 PE cycles.
    expected = {"pe_cycles_w2a2": 64 * pe_cycle}
    # SRAM per 64 bits at the bank's size: 10 pJ at 8 KB, x sqrt(size / 8 KB)
    # below and up to 32 KB (the 8 KB -> 32 KB slope is exactly 1/2).
    def sram(bank_bytes, bits):
        return 10 * math.sqrt(bank_bytes / 8192) * bits / 64 * scale
    expected["weights.read"] = 8 * sram(4096 * 2, 16)          # 8 planes, 8 KB banks
    expected["activations.read"] = 16 * sram(4096 * 2, 16)
    expected["activations.shortcut_read"] = 8 * sram(4096 * 2, 16)   # priced as activation reads
    expected["activations.write"] = 16 * sram(4096 * 2, 4)     # 4-bit slots
    expected["chunks.read"] = 1 * sram(2048 * 34 // 8, 34)     # 22 + 3 x 4 bits
    expected["wptr.read"] = 1 * sram(256 * 48 // 8, 48)        # 4 rows x 12 address bits
    expected["params.read"] = 4 * sram(512 * 8, 64)        # bias, M, Mr
    expected["program.read"] = 20 * sram(2048 * 8, 64)
    expected["oab.read"] = 4 * sram(2 * 4 * 4 * 3, 96)         # 2 x R rows of C 24-bit sums
    expected["oab.write"] = 4 * sram(2 * 4 * 4 * 3, 96)
    got = {event.name: event.energy_pj for event in report.events if event.count}
    assert got.keys() == expected.keys()
    for name, energy in expected.items():
        assert got[name] == pytest.approx(energy, rel=1e-12), name
    assert report.total() == pytest.approx(sum(expected.values()), rel=1e-12)
    assert report.total("compute") == pytest.approx(expected["pe_cycles_w2a2"], rel=1e-12)
    # The layer's map in 2-bit slots (packed_activations): its writes priced
    # at 2 bits, given directly or as the run's traffic says.
    for packed in (model.price(HAND_COUNTERS, act_write_bits=2),
                   model.price(HAND_COUNTERS, {"host_writes": {}, "host_reads": {},
                                               "external_bytes": 0, "act_write_bits": 2})):
        writes = {event.name: event.energy_pj for event in packed.events}["activations.write"]
        assert writes == pytest.approx(16 * sram(4096 * 2, 2), rel=1e-12)


def test_the_rules_reproduce_the_cited_points():
    horowitz = load_table("horowitz45")
    for points in (horowitz["integer_add_pj"], horowitz["integer_multiply_pj"],
                   horowitz["sram_read_64bit_pj"]):
        for x, y in points:
            assert interpolate(points, x) == pytest.approx(y)
    model = EnergyModel(CONFIGS["small"], fused_pe_factor=1.0, node_nm=45, supply_v=0.9)
    assert model.multiply_pj(8, 8) == pytest.approx(0.2)
    assert model.add_pj(32) == pytest.approx(0.1)
    assert node_scale(45, 0.9, 45, 0.9) == 1.0
    # DRAM: the midpoint of 1.3-2.6 nJ per 64 bits, per byte, unscaled.
    assert EnergyModel(CONFIGS["small"], fused_pe_factor=1.0).dram_byte_pj() == 1950 / 8


def test_a_fixed_array_refuses_narrow_modes():
    model = EnergyModel(CONFIGS["small"], fused_pe_factor=1.5, pe="fixed")
    with pytest.raises(UserError, match="W4A4 only"):
        model.price(HAND_COUNTERS)


def _layer(rng, precision):
    weights = rng.integers(-2, 2, size=(8, 32, 3, 3))
    groups = (8, 3, 3, 2)
    return LayerSpec(kind="conv", weights=weights, precision=np.full(groups, precision),
                     shift=np.zeros(groups, np.int64), bias=rng.integers(-20, 20, 8),
                     multiplier=np.full(8, 1 << 13), requant_shift=14, act_bits_in=4,
                     act_bits_out=4, input_shape=(32, 6, 6), padding=1, name="conv")


def test_ratios_do_not_depend_on_run_order():
    """Two configurations, compiled and priced in either order, give the
    same energies: no state carries from one run to the next."""
    rng = np.random.default_rng(3)
    spec2, spec4 = _layer(rng, 2), None
    spec4 = dataclasses.replace(spec2, precision=np.full(spec2.precision.shape, 4))
    small, default = CONFIGS["small"], CONFIGS["default"]

    def energy(spec, config):
        counters = compile_layer(spec, config).expected_counters
        return EnergyModel(config, fused_pe_factor=1.494).price(counters).total()

    forward = [energy(spec2, small), energy(spec4, small), energy(spec2, default),
               energy(spec4, default)]
    backward = [energy(spec4, default), energy(spec2, default), energy(spec4, small),
                energy(spec2, small)][::-1]
    assert forward == backward
    assert forward[1] / forward[0] > 1.2      # 4-bit weights cost more than 2-bit ones


@pytest.mark.parametrize("damage, message", [
    (None, "not found"),
    ("{not json", "not readable JSON"),
    ('{"format": "something-else"}', "not an energy table"),
    ("version", "version"),
    ("source", "field `source`"),
    ("sram", "field `sram_read_64bit_pj`"),
    ("dram", "field `dram_64bit_pj.high`"),
])
def test_missing_or_malformed_tables_are_named(tmp_path, damage, message):
    for name in ("horowitz45", "eyeriss65", "bitfusion45"):
        shutil.copy(TABLE_DIR / f"{name}.json", tmp_path / f"{name}.json")
    target = tmp_path / "horowitz45.json"
    table = json.loads(target.read_text())
    if damage is None:
        target.unlink()
    elif damage.startswith("{"):
        target.write_text(damage)
    else:
        if damage == "version":
            table["version"] = 99
        elif damage == "source":
            table["source"] = ""
        elif damage == "sram":
            table["sram_read_64bit_pj"] = [[8192, 10.0], [4096, 20.0]]
        elif damage == "dram":
            table["dram_64bit_pj"] = {"low": 1300.0, "high": -1}
        target.write_text(json.dumps(table))
    with pytest.raises(UserError, match=message) as error:
        load_tables(tmp_path)
    assert "horowitz45.json" in str(error.value)


def test_uniform_storage_keeps_every_value():
    """Widening MPQ groups to 4-bit storage changes no weight's value."""
    rng = np.random.default_rng(0)
    q = rng.integers(-2, 2, size=(4, 32, 3, 3)).astype(np.int8)
    bits = np.full((4, 3, 3, 2), 2, np.uint8)
    shift = rng.integers(0, 2, size=(4, 3, 3, 2)).astype(np.uint8)
    bits[shift == 0] = 3
    header = {"group_size": 16, "layers": [{}], "metadata": {}}
    arrays = [{"weight": q, "weight_bits": bits, "weight_shift": shift}]
    _, (widened,) = uniform_storage(header, arrays)
    per_weight_shift = np.repeat(shift, 16, axis=-1).transpose(0, 3, 1, 2)
    assert np.array_equal(widened["weight"].astype(np.int64), q.astype(np.int64) << per_weight_shift)
    assert (widened["weight_bits"] == 4).all() and (widened["weight_shift"] == 0).all()
