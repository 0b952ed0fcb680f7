"""Fixtures shared by every test directory."""

import pytest


@pytest.fixture(scope="session")
def rtl_build(tmp_path_factory):
    """One build directory per test process for RTL simulations: tests that
    simulate the same configuration reuse its Verilator or Icarus build
    (sim/core_sim.py keys builds by configuration and source hash)."""
    return tmp_path_factory.mktemp("rtl-builds")
