"""Energy figures of one compiled network, as the demo and `mpq report` show
them: the network on our accelerator, and the same network on the two
uniform-4-bit baselines of sw/energy/designs.py (counts from the golden
model, which the RTL tests hold equal to the RTL's counters)."""

import json
import pathlib

from common.errors import UserError
from sw.compile.network import compile_network
from sw.energy.designs import host_traffic, uniform_storage
from sw.energy.model import NODE_NM, EnergyModel

PE_COST = pathlib.Path(__file__).resolve().parents[2] / "bench" / "results" / "pe_cost.json"


def measured_fused_pe_factor(path=PE_COST):
    """The fused/fixed PE area ratio measured by synthesis (`make cost`)."""
    try:
        return float(json.loads(pathlib.Path(path).read_text())["area_ratio_lut"])
    except (OSError, KeyError, ValueError) as error:
        raise UserError(f"{path} has no area_ratio_lut ({error}): run `make cost` "
                        "(synthesizes the PEs) first") from None


def network_counters(network):
    """Counters of one inference: the golden model runs the whole program
    (every phase) on a blank image; the counts do not depend on the data."""
    import numpy as np
    return network.run_golden(np.zeros(network.image_shape, np.int64))[1]


def energy_summary(header, arrays, network, counters=None, fused_pe_factor=None):
    """JSON-ready energy of `network` (compiled from `header`, `arrays`),
    priced from `counters` (e.g. the RTL's; the golden model's if None),
    and its ratio to the uniform-4-bit baselines on the same configuration."""
    factor = fused_pe_factor or measured_fused_pe_factor()
    config = network.config
    counters = counters or network_counters(network)
    report = EnergyModel(config, fused_pe_factor=factor).price(counters, host_traffic(network))
    widened = compile_network(*uniform_storage(header, arrays), config)
    wide_counters, wide_traffic = network_counters(widened), host_traffic(widened)
    baselines = {
        "bitfusion_style": EnergyModel(config, fused_pe_factor=factor).price(wide_counters,
                                                                             wide_traffic),
        "fixed_4bit_array": EnergyModel(config, fused_pe_factor=factor, pe="fixed").price(
            wide_counters, wide_traffic),
    }
    return {
        "pricing": f"Horowitz (ISSCC 2014) scaled to {NODE_NM} nm; sw/energy, docs/energy.md",
        "per_inference_uj": report.total() / 1e6,
        "compute_uj": report.total("compute") / 1e6,
        "on_chip_memory_uj": report.total("on_chip") / 1e6,
        "external_memory_uj": report.total("external") / 1e6,
        "on_chip_by_memory_uj": {k: v / 1e6 for k, v in report.by_memory().items()},
        "fused_pe_factor": factor,
        "baseline_over_this": {name: baseline.total() / report.total()
                               for name, baseline in baselines.items()},
    }


def sized_for(header, arrays, base):
    """`base` with the smallest power-of-two weight memory that holds the
    network's weights in one phase."""
    import dataclasses
    depth = 256
    while depth < base.weight_depth:
        config = dataclasses.replace(base, name=f"{base.name}-w{depth}", weight_depth=depth)
        try:
            if len(compile_network(header, arrays, config).phases) == 1:
                return config
        except UserError:
            pass        # a single layer that does not fit at this depth
        depth *= 2
    return base


def bitfusion_over_mpq(header, arrays, base):
    """Per memory scenario of the energy comparison (bench/energy_paper.py):
    `on_chip` (`base`) and `sized_for_w4` (the smallest weight memory that
    holds the network in uniform 4-bit storage), the network's energy per
    inference (uJ) and the Bit Fusion-style design's over it, from the
    golden model's counts."""
    scenarios = {"on_chip": base, "sized_for_w4": sized_for(*uniform_storage(header, arrays), base)}
    result = {}
    for scenario, config in scenarios.items():
        summary = energy_summary(header, arrays, compile_network(header, arrays, config))
        result[scenario] = {"config": config.name, "energy_uj": summary["per_inference_uj"],
                            "bitfusion_over_mpq": summary["baseline_over_this"]["bitfusion_style"]}
    return result


def layer_energies(network, model):
    """Per layer of `network`: its cycles and its energy priced by `model`
    (an EnergyModel) from the golden model's counters of that layer:
    compute and on-chip memory; the host's traffic (input, phases, logits,
    DRAM) belongs to the whole inference, not to a layer."""
    layers = []
    for spec, layer, entry in zip(network.specs, network.layers, network.manifest["layers"]):
        report = model.price(layer.expected_counters,
                             act_write_bits=None if spec.raw else entry["act_bits_stored"])
        layers.append({"name": spec.name, "cycles": int(layer.expected_counters["cycles"]),
                       "total_pj": report.total(), "compute_pj": report.total("compute"),
                       "on_chip_memory_pj": report.total("on_chip")})
    return layers
