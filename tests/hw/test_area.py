# amaranth: UnusedElaboratable=no
"""hw/area.py: the Yosys parser on a real synthesis of the fused PE, the
block-RAM rule against Yosys' own mapping of single memories, and the area
model against the measured figures of bench/results/area.json."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw import area
from hw.config import AcceleratorConfig, get_config
from hw.generate import to_verilog

# The area model's stated error (docs/area.md): LUTs and flip-flops of a
# whole core, iCE40 and ECP5, fused and fixed PEs. Fitted on the 4x4 and
# 16x16 cores, it passes through them (two points, two parameters per term);
# the 8x8 core, which it never saw, is within HELD_OUT_ERROR.
FITTED_ERROR = 0.005
HELD_OUT_ERROR = 0.06


class OneMemory(wiring.Component):
    """One memory with a read port and a write port, as the core's memories."""

    def __init__(self, width, depth, granularity=None):
        self._shape = width, depth, granularity
        super().__init__({"write_addr": In(range(depth)), "read_addr": In(range(depth)),
                          "write_data": In(width),
                          "write_en": In(width // granularity if granularity else 1),
                          "read_data": Out(width)})

    def elaborate(self, platform):
        width, depth, granularity = self._shape
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=width, depth=depth, init=[])
        write, read = mem.write_port(granularity=granularity), mem.read_port()
        m.d.comb += [write.addr.eq(self.write_addr), write.data.eq(self.write_data),
                     write.en.eq(self.write_en), read.addr.eq(self.read_addr),
                     self.read_data.eq(read.data)]
        return m


def test_fused_pe_generic_synthesis_parses():
    config = get_config("default")
    result = area.synthesize("pe", config, "generic")
    summary = result["summary"]
    assert summary["memories"] == 0
    assert summary["logic_cells"] == summary["cells"] == sum(result["cells_by_type"].values())
    # The accumulator is the PE's only state.
    assert summary["ffs"] == config.acc_width
    fixed = area.synthesize("pe", config, "generic", pe="fixed")["summary"]
    assert fixed["ffs"] == config.acc_width
    assert fixed["logic_cells"] < summary["logic_cells"]


@pytest.mark.parametrize("target, width, depth, granularity", [
    ("ice40", 34, 1024, None),   # a chunk-table-like shape: 1024x4 blocks win
    ("ice40", 16, 512, 4),       # an activation bank: masked 256x16 or 512x8 blocks
    ("ecp5", 16, 1024, 4),       # 4-bit write enables: a 9-bit byte lane each
    ("ecp5", 48, 256, None),     # 512x36 blocks
])
def test_bram_rule_matches_yosys(target, width, depth, granularity):
    verilog = to_verilog(OneMemory(width, depth, granularity), "top", zero_memories=False)
    cells = area.yosys_stat(verilog, "top", area.TARGETS[target].format(top="top"))
    assert area.summarize(target, cells)["brams"] == \
        area.bram_blocks(width, depth, target, granularity=granularity)


def test_bram_rule_counts_real_memories():
    config = AcceleratorConfig("t", rows=2, cols=2, program_depth=512, chunk_depth=256,
                               wptr_depth=256, param_depth=256, weight_depth=512,
                               act_depth=512, result_depth=256)
    ice40 = area.bram_count(config, "ice40")
    # program 64x512: 4 x 2 blocks of 256x16 (or 8 x 1 of 512x8).
    assert ice40["by_memory"]["program"] == 8
    assert ice40["by_memory"]["weights"] == 2 * 2      # two banks of 16x512
    assert ice40["bits"] == sum(banks * width * depth for _, banks, width, depth
                                in config.memory_shapes().values())
    # Never fewer blocks than the bits need.
    for target in ("ice40", "ecp5"):
        count = area.bram_count(get_config("default"), target)
        assert count["total"] * area.BRAM_BITS[target] >= count["bits"]


def test_synthesis_config_caps_depths_only():
    config = get_config("default")
    capped = area.synthesis_config(config, 1024)
    assert capped.weight_depth == 1024 and capped.rows == config.rows
    assert capped.acc_width == config.acc_width and capped.wptr_depth == 1024


def test_area_model_reproduces_measurements():
    results = area.load_area_results()
    configs = results["configs"]
    for name in ("4x4", "8x8", "16x16"):
        assert configs[name]["core_measured"], f"{name}: whole core not synthesized"
    model = area.fit_area_model(results, fit_on=["4x4", "16x16"])
    sizes = {"4x4": 4, "8x8": 8, "16x16": 16}
    for name, size in sizes.items():
        config = AcceleratorConfig("t", rows=size, cols=size)
        bound = FITTED_ERROR if name in model["fit_on"] else HELD_OUT_ERROR
        for pe, key in (("fused", "core"), ("fixed", "core_fixed")):
            estimate = area.estimate_area(config, pe=pe, model=model)
            for target in ("ice40", "ecp5"):
                for metric in ("luts", "ffs"):
                    measured = configs[name][key][target][metric]
                    error = abs(estimate[target][metric] - measured) / measured
                    assert error <= bound, (name, pe, target, metric, estimate[target][metric],
                                            measured)
                assert estimate[target]["brams"] == area.bram_count(config, target)["total"]
