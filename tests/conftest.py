"""Fixtures and rules shared by every test directory."""

import os

import pytest

from common.tools import find_tool

# Icarus Verilog is the second simulator, a system package (Debian: apt-get
# install iverilog) that a fresh machine may lack. Tests marked `icarus` skip
# there, saying how to install it; CI installs it and sets MPQ_REQUIRE_ICARUS=1
# (.ci/run), so that there a missing iverilog fails them instead.
REQUIRE_ICARUS = "MPQ_REQUIRE_ICARUS"


def pytest_runtest_setup(item):
    if (item.get_closest_marker("icarus") is not None and os.environ.get(REQUIRE_ICARUS) != "1"
            and find_tool("iverilog") is None):
        pytest.skip(f"iverilog is not on PATH: install Icarus Verilog (Debian: apt-get install "
                    f"iverilog); {REQUIRE_ICARUS}=1 makes this a failure")


@pytest.fixture(scope="session")
def rtl_build(tmp_path_factory):
    """One build directory per test process for RTL simulations: tests that
    simulate the same configuration reuse its Verilator or Icarus build
    (sim/core_sim.py keys builds by configuration and source hash)."""
    return tmp_path_factory.mktemp("rtl-builds")
