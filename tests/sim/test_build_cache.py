"""Generated Verilog and simulator builds are made once per distinct input:
a second run reads them back, a changed input makes them again."""

import dataclasses

import pytest

from hw.config import get_config
from sim import verilog_cache
from sim.runner import BUILD_STAMP, build
from sim.verilog_cache import cache_path, design_verilog


def test_generated_verilog_is_read_back_not_made_again(tmp_path):
    config = get_config("small")
    text = design_verilog("fused_pe", config, zero_memories=False, cache_dir=tmp_path)
    assert "module fused_pe" in text
    kept = cache_path(tmp_path, "fused_pe", config, zero_memories=False)
    assert kept.read_text() == text
    # What the cache holds is what comes back: it was not generated again.
    kept.write_text("// planted\n")
    assert design_verilog("fused_pe", config, zero_memories=False,
                          cache_dir=tmp_path) == "// planted\n"


def test_a_process_older_than_its_sources_neither_reads_nor_writes_the_cache(tmp_path, monkeypatch):
    # Its imported modules may predate the files the key is made of.
    config = get_config("small")
    kept = cache_path(tmp_path, "fused_pe", config, zero_memories=False)
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text("// planted\n")
    assert not verilog_cache.sources_edited_since_start()
    monkeypatch.setattr(verilog_cache, "process_start", lambda: 0.0)
    assert verilog_cache.sources_edited_since_start()
    text = design_verilog("fused_pe", config, zero_memories=False, cache_dir=tmp_path)
    assert "module fused_pe" in text and kept.read_text() == "// planted\n"
    other = get_config("default")
    design_verilog("fused_pe", other, zero_memories=False, cache_dir=tmp_path)
    assert not cache_path(tmp_path, "fused_pe", other, zero_memories=False).exists()


def test_every_input_of_the_generation_is_in_the_key(tmp_path):
    small = get_config("small")
    wider = dataclasses.replace(small, acc_width=small.acc_width + 2)
    paths = {cache_path(tmp_path, "core", small, zero_memories=False),
             cache_path(tmp_path, "core", small, zero_memories=True),
             cache_path(tmp_path, "core", wider, zero_memories=False),
             cache_path(tmp_path, "fused_pe", small, zero_memories=False)}
    assert len(paths) == 4


COUNTER = """module counter(input clk, input rst, output reg [7:0] count);
  always @(posedge clk) count <= rst ? 8'd0 : count + 8'd{step};
endmodule
"""


@pytest.mark.cocotb
@pytest.mark.icarus
def test_a_build_is_skipped_when_its_inputs_are_unchanged(tmp_path):
    source = tmp_path / "counter.v"
    source.write_text(COUNTER.format(step=1))
    directory = tmp_path / "icarus"

    def build_counter():
        return build(simulator="icarus", sources=[source], toplevel="counter",
                     build_dir=directory)

    assert build_counter() is True
    built = (directory / "sim.vvp").stat().st_mtime_ns
    assert build_counter() is False
    assert (directory / "sim.vvp").stat().st_mtime_ns == built
    source.write_text(COUNTER.format(step=2))
    assert build_counter() is True
    # A stamp that does not name these inputs (a build cut short leaves none) means building.
    (directory / BUILD_STAMP).write_text("{}")
    assert build_counter() is True
