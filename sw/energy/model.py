"""Energy of a run: counted events times cited per-event energies.

Every count comes from the core's counters (hw/counters.py: measured in RTL
simulation, or predicted exactly by the compiler's golden model, which the
tests hold equal to the RTL) and from the compiled program's host traffic
(`host_traffic`). Every price comes from a table in sw/energy/tables/. The
rules that turn a table into a price are here, once; docs/energy.md states
them and the assumptions behind them.

Prices are computed in the table's node and scaled to `node_nm` (65 nm, the
paper's process) by one rule, `node_scale`. Energies are in pJ.
"""

import dataclasses

from common.errors import UserError
from hw.isa import ACT_SLOT_BITS, Memory
from hw.pe import PeMode
from sw.energy.tables import interpolate, load_tables

PE_KINDS = ("fused", "fixed")
PRICINGS = ("horowitz45", "eyeriss65")
PE_TABLES = ("horowitz45", "bitfusion45")
DRAM_LEVELS = ("low", "mid", "high")
# The 65 nm process the paper used: 1.0 V nominal supply (assumption: a
# general-purpose 65 nm library; Horowitz's 45 nm figures are at 0.9 V).
NODE_NM = 65
NODE_SUPPLY_V = 1.0
MEMORY_NAMES = tuple(memory.name.lower() for memory in Memory) + ("oab",)
# Counter -> (memory, access: read or write).
MEMORY_COUNTERS = {
    "program_reads": ("program", "read"),
    "chunk_reads": ("chunks", "read"),
    "wptr_reads": ("wptr", "read"),
    "param_reads": ("params", "read"),
    "weight_reads": ("weights", "read"),
    "act_reads": ("activations", "read"),
    # A residual layer's shortcut words: activation reads like the column readers'.
    "shortcut_reads": ("activations", "shortcut_read"),
    "act_writes": ("activations", "write"),
    "result_writes": ("results", "write"),
    "oab_reads": ("oab", "read"),
    "oab_writes": ("oab", "write"),
}


def node_scale(from_nm, from_v, to_nm=NODE_NM, to_v=NODE_SUPPLY_V):
    """Dynamic energy C V^2 with capacitance proportional to feature size."""
    return (to_nm / from_nm) * (to_v / from_v) ** 2


@dataclasses.dataclass(frozen=True)
class Event:
    name: str           # e.g. "pe_cycles_w2a4", "weights.read"
    category: str       # "compute", "on_chip" or "external"
    count: int
    unit_pj: float      # energy of one event at the model's node
    source: str         # where the count and the price come from

    @property
    def energy_pj(self):
        return self.count * self.unit_pj


@dataclasses.dataclass(frozen=True)
class EnergyReport:
    events: tuple

    def total(self, category=None):
        return sum(e.energy_pj for e in self.events if category in (None, e.category))

    def by_memory(self):
        totals = {}
        for event in self.events:
            if event.category == "on_chip":
                memory = event.name.split(".")[0]
                totals[memory] = totals.get(memory, 0.0) + event.energy_pj
        return totals

    def as_dict(self):
        return {
            "total_pj": self.total(),
            "compute_pj": self.total("compute"),
            "on_chip_memory_pj": self.total("on_chip"),
            "external_memory_pj": self.total("external"),
            "on_chip_by_memory_pj": self.by_memory(),
            "events": [{"name": e.name, "category": e.category, "count": int(e.count),
                        "unit_pj": e.unit_pj, "energy_pj": e.energy_pj, "source": e.source}
                       for e in self.events],
        }


def memory_geometry(config):
    """Memory name -> (word bits, bits per bank) for every priced memory."""
    geometry = {}
    for name, banks, width, depth in config.memory_shapes().values():
        geometry[name] = (width, width * depth)
    # The output accumulator buffer: 2 tiles x R rows of C accumulators.
    row_bits = config.cols * config.acc_width
    geometry["oab"] = (row_bits, row_bits * 2 * config.rows)
    return geometry


class EnergyModel:
    """Prices for one accelerator configuration, PE kind and table set.

    fused_pe_factor: energy of one fused-PE cycle over one fixed 4x4-bit PE
    cycle. The bench passes the area ratio measured by synthesis of the two
    PEs (bench/results/pe_cost.json); Bit Fusion's 0.118 / 0.082 is the
    cross-check, and `pe_table="bitfusion45"` prices the PE cycle with Bit
    Fusion's synthesized figures instead (composable 4/2-bit PE for the
    fused kind, fixed 4/4 for the fixed one)."""

    def __init__(self, config, *, fused_pe_factor, pe="fused", pricing="horowitz45",
                 pe_table="horowitz45", dram="mid", tables=None, node_nm=NODE_NM,
                 supply_v=NODE_SUPPLY_V):
        if pe not in PE_KINDS:
            raise UserError(f"PE kind {pe!r}: choose one of {', '.join(PE_KINDS)}")
        if pricing not in PRICINGS:
            raise UserError(f"pricing {pricing!r}: choose one of {', '.join(PRICINGS)}")
        if pe_table not in PE_TABLES:
            raise UserError(f"PE table {pe_table!r}: choose one of {', '.join(PE_TABLES)}")
        if dram not in DRAM_LEVELS:
            raise UserError(f"DRAM level {dram!r}: choose one of {', '.join(DRAM_LEVELS)}")
        if not fused_pe_factor >= 1:
            raise UserError(f"fused_pe_factor {fused_pe_factor!r}: a fused PE cannot cost less "
                            "than the fixed PE it contains")
        self.config, self.pe, self.pricing, self.dram = config, pe, pricing, dram
        self.pe_table = pe_table
        self.fused_pe_factor = float(fused_pe_factor)
        self.tables = tables or load_tables()
        horowitz = self.tables["horowitz45"]
        self.scale = node_scale(horowitz["technology_nm"], horowitz["supply_v"], node_nm, supply_v)
        self.node_nm = node_nm
        self.geometry = memory_geometry(config)

    # -- arithmetic (Horowitz, scaled to the node) --

    def add_pj(self, bits):
        return interpolate(self.tables["horowitz45"]["integer_add_pj"], bits) * self.scale

    def multiply_pj(self, weight_bits, act_bits):
        """An array multiplier's energy grows with its partial-product bits
        (Horowitz: 8 -> 32 bits is x15.5 = x4^1.98): price a w x a multiply
        as a square one of sqrt(w a) bits."""
        bits = (weight_bits * act_bits) ** 0.5
        return interpolate(self.tables["horowitz45"]["integer_multiply_pj"], bits) * self.scale

    def fixed_pe_cycle_pj(self):
        """One active cycle of the fixed PE: a 4x4 multiply and the
        accumulator add (acc_width bits)."""
        return self.multiply_pj(4, 4) + self.add_pj(self.config.acc_width)

    def pe_cycle_pj(self):
        """One active cycle of this model's PE. The fused PE switches all
        four bricks and its fusion tree in every mode (W4A4 uses the four for
        one product, W2A2 for four), so its cycle costs the same in every
        mode; what a narrow mode saves is cycles."""
        if self.pe_table == "bitfusion45":
            # Bit Fusion's figures are 45 nm like Horowitz's: the same scaling
            # (assumption: Bit Fusion's supply voltage is not given; 0.9 V).
            figures = self.tables["bitfusion45"]["pe_pj_per_cycle"]
            return figures["composable_4_2" if self.pe == "fused" else "fixed_4x4"] * self.scale
        factor = self.fused_pe_factor if self.pe == "fused" else 1.0
        return self.fixed_pe_cycle_pj() * factor

    def mac16_pj(self):
        """Eyeriss's unit: one 16-bit MAC (16x16 multiply, 32-bit add)."""
        return self.multiply_pj(16, 16) + self.add_pj(32)

    # -- storage --

    def sram_access_pj(self, memory, bits):
        """Read or write `bits` of one bank of `memory` (writes priced as reads:
        Horowitz gives reads only)."""
        _, bank_bits = self.geometry[memory]
        if self.pricing == "eyeriss65":
            eyeriss = self.tables["eyeriss65"]
            level = "register_file" if memory == "oab" else "global_buffer"
            unit = eyeriss["normalized_access"][level] * self.mac16_pj()
            return unit * bits / eyeriss["access_bits"]
        per_64 = interpolate(self.tables["horowitz45"]["sram_read_64bit_pj"], bank_bits / 8)
        return per_64 * self.scale * bits / 64

    def dram_byte_pj(self):
        """DRAM energy per byte: an off-chip access, not scaled with the
        logic node (assumption: it is set by the DRAM and its interface)."""
        if self.pricing == "eyeriss65":
            eyeriss = self.tables["eyeriss65"]
            return eyeriss["normalized_access"]["dram"] * self.mac16_pj() * 8 / eyeriss["access_bits"]
        levels = self.tables["horowitz45"]["dram_64bit_pj"]
        per_64 = {"low": levels["low"], "high": levels["high"],
                  "mid": (levels["low"] + levels["high"]) / 2}[self.dram]
        return per_64 / 8

    # -- pricing a run --

    def price(self, counters, traffic=None, act_write_bits=None):
        """EnergyReport for `counters` (hw.counters names) and the host
        traffic of the same run (`host_traffic`, or None for none). An
        activation write is priced at `act_write_bits` (the mean slot bits of
        the run's writes), else at the traffic's `act_write_bits`, else at
        4-bit slots."""
        if act_write_bits is None:
            act_write_bits = (traffic or {}).get("act_write_bits", ACT_SLOT_BITS)
        events = []
        horowitz = "horowitz45 (Horowitz, ISSCC 2014)"
        if self.pe_table == "bitfusion45":
            pe_source = ("counter macs_<mode> / lanes; bitfusion45 (Sharma et al., ISCA 2018) "
                         "PE energy per cycle")
        else:
            pe_source = (f"counter macs_<mode> / lanes; {horowitz} 4x4 multiply + "
                         f"{self.config.acc_width}-bit add" +
                         (f" x fused PE factor {self.fused_pe_factor:.3f}"
                          if self.pe == "fused" else ""))
        for mode in PeMode:
            macs = int(counters[f"macs_{mode.name.lower()}"])
            if macs % mode.lanes:
                raise UserError(f"counter macs_{mode.name.lower()} = {macs} is not a multiple of "
                                f"the mode's {mode.lanes} lanes: not a counter set from this core")
            if self.pe == "fixed" and mode != PeMode.W4A4 and macs:
                raise UserError(f"the fixed 4-bit PE array runs W4A4 only, but the run has "
                                f"{macs} MACs in {mode.name}: compile the network with 4-bit "
                                "weights and activations (sw.energy.designs.uniform_storage)")
            events.append(Event(f"pe_cycles_{mode.name.lower()}", "compute", macs // mode.lanes,
                                self.pe_cycle_pj(), pe_source))
        if self.pricing == "eyeriss65":
            # Eyeriss prices moving an operand between PEs (2x a MAC per 16
            # bits); every active PE cycle moves its 8-bit weight and 8-bit
            # activation one PE on.
            pe_cycles = sum(e.count for e in events)
            unit = self.tables["eyeriss65"]["normalized_access"]["array"] * self.mac16_pj()
            events.append(Event("array.operand_moves", "compute", pe_cycles, unit,
                                "active PE cycles; eyeriss65 array level (Chen et al., ISCA 2016)"))
        price_source = ("eyeriss65 (Chen et al., ISCA 2016)" if self.pricing == "eyeriss65"
                        else f"{horowitz} SRAM read per 64 bits at the bank's size")
        for counter, (memory, access) in MEMORY_COUNTERS.items():
            word_bits, bank_bits = self.geometry[memory]
            bits = act_write_bits if counter == "act_writes" else word_bits
            events.append(Event(f"{memory}.{access}", "on_chip", int(counters[counter]),
                                self.sram_access_pj(memory, bits),
                                f"counter {counter}; {bits:g} bits of a {bank_bits // 8}-byte bank; "
                                + price_source))
        if traffic:
            for memory, words in sorted(traffic["host_writes"].items()):
                word_bits, bank_bits = self.geometry[memory]
                events.append(Event(f"{memory}.host_write", "on_chip", int(words),
                                    self.sram_access_pj(memory, word_bits),
                                    "host words loaded per inference (compiled images); "
                                    + price_source))
            for memory, words in sorted(traffic["host_reads"].items()):
                word_bits, _ = self.geometry[memory]
                events.append(Event(f"{memory}.host_read", "on_chip", int(words),
                                    self.sram_access_pj(memory, word_bits),
                                    "host words read back per inference; " + price_source))
            dram_source = ("eyeriss65 DRAM level" if self.pricing == "eyeriss65" else
                           f"{horowitz} DRAM per 64 bits ({self.dram})")
            events.append(Event("dram.bytes", "external", int(traffic["external_bytes"]),
                                self.dram_byte_pj(),
                                "input image, weight phases reloaded per inference (manifest) "
                                f"and logits read back; {dram_source}"))
        return EnergyReport(tuple(events))
