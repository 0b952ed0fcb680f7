"""The generated PE Verilog in Verilator and Icarus through cocotb.

MPQ_PE_SAMPLES sets the cycles per run (CI default 4000; a deep run: 10**6).
"""


import pytest

from hw.config import get_config
from hw.generate import designs, to_verilog
from sim.runner import run_bench

pytestmark = pytest.mark.cocotb


@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=pytest.mark.icarus)])
@pytest.mark.parametrize("toplevel, testcase", [("fused_pe", "fused_pe_random"),
                                                ("fixed_pe", "fixed_pe_random")])
def test_pe_rtl_random_against_numpy(tmp_path_factory, simulator, toplevel, testcase):
    build = tmp_path_factory.mktemp(f"{toplevel}-{simulator}")
    source = build / f"{toplevel}.v"
    source.write_text(to_verilog(designs()[toplevel](get_config("default")), toplevel))
    tests, failures = run_bench(simulator=simulator, sources=[source], toplevel=toplevel,
                                bench="sim.benches.pe_bench", testcase=testcase,
                                build_dir=build / "sim")
    assert (tests, failures) == (1, 0)
