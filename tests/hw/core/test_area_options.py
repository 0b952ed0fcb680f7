"""The iCE40's area options (hw/config.py): every other named configuration
keeps today's defaults; the options are checked. What each does is tested
where it acts: counters in test_counter_width.py, the PPU's clamped shift in
test_ppu.py, coord_bits and stride2 in tests/sw/compile/test_rejections.py,
and all of them together (but stride2, so that stride 2 runs with the
others), bit-exact with the cycle count, on `small` in test_core_rtl.py and
on `ice40` in tests/hw/fpga/test_board_sim.py."""

import dataclasses

import pytest

from hw.config import CONFIGS, get_config

DEFAULTS = {"counters": True, "ppu_barrel_shift": True, "coord_bits": 16, "narrow_counts": False,
            "shared_bank_address": False, "ppu_hold_registers": True,
            "permuted_buffers": False, "stride2": True, "residual": True}


def test_only_ice40_uses_them():
    for name in ("default", "small", "large", "ecp5"):
        config = CONFIGS[name]
        assert {key: getattr(config, key) for key in DEFAULTS} == DEFAULTS, name
    ice40 = get_config("ice40")
    assert (ice40.rows, ice40.cols) == (1, 2)
    assert not ice40.counters and not ice40.ppu_barrel_shift and ice40.narrow_counts
    assert ice40.shared_bank_address and not ice40.ppu_hold_registers
    assert ice40.permuted_buffers and not ice40.stride2 and not ice40.residual
    assert ice40.coord_bits == 10


@pytest.mark.parametrize("field, value", [("counters", 1), ("ppu_barrel_shift", None),
                                          ("narrow_counts", "yes"), ("shared_bank_address", 0),
                                          ("ppu_hold_registers", 1),
                                          ("permuted_buffers", "no"), ("stride2", 2),
                                          ("coord_bits", 7),
                                          ("coord_bits", 17)])
def test_options_are_checked(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(CONFIGS["small"], **{field: value})
