"""The energy comparison's designs run for real: the Bit Fusion-style
baseline (the MPQ network in uniform 4-bit storage) is bit-exact on the RTL
with the same outputs as the MPQ network, and energies priced from the RTL's
counters equal those priced from the golden model's."""

import numpy as np
import pytest

from hw.config import get_config
from sim.network_sim import first_mismatch, run_network_on_rtl
from sw.compile.network import compile_network
from sw.energy.designs import host_traffic, uniform_storage
from sw.energy.model import EnergyModel
from sw.quantize.data import load_digits
from sw.quantize.export import read_model_file, validate


def test_uniform_storage_is_a_valid_model_with_the_same_outputs(digits_models):
    header, arrays = read_model_file(digits_models["mixed"])
    wide_header, wide_arrays = uniform_storage(header, arrays)
    validate(wide_header, wide_arrays)
    config = get_config("small")
    mpq = compile_network(header, arrays, config)
    wide = compile_network(wide_header, wide_arrays, config)
    x = load_digits().test_x[0].numpy()
    (mpq_out, mpq_counters), (wide_out, wide_counters) = mpq.run_golden(x), wide.run_golden(x)
    assert first_mismatch(wide_out, mpq_out, [s.label for s in mpq.specs]) is None
    # The same integers, more stored bits and no narrow modes.
    assert wide_counters["weight_reads"] > mpq_counters["weight_reads"]
    assert wide_counters["macs_w2a4"] == wide_counters["macs_w2a2"] == 0


@pytest.mark.cocotb
def test_designs_priced_from_rtl_counters(digits_models, rtl_build):
    header, arrays = read_model_file(digits_models["mixed"])
    config = get_config("small")
    image = load_digits().test_x[:1].numpy()
    energies = {}
    for name, model in (("mpq", (header, arrays)), ("bitfusion", uniform_storage(header, arrays))):
        network = compile_network(*model, config)
        (result,) = run_network_on_rtl(network, image, build_dir=rtl_build)
        golden_outputs, golden_counters = network.run_golden(image[0])
        assert first_mismatch(result["outputs"], golden_outputs,
                              [s.label for s in network.specs]) is None
        assert result["counters"] == golden_counters
        traffic = host_traffic(network)
        priced = EnergyModel(config, fused_pe_factor=1.494).price(result["counters"], traffic)
        predicted = EnergyModel(config, fused_pe_factor=1.494).price(golden_counters, traffic)
        assert priced.total() == predicted.total()
        energies[name] = priced
    assert energies["bitfusion"].total() > energies["mpq"].total()
    assert np.isclose(energies["bitfusion"].total("external"), energies["mpq"].total("external"))
