"""cocotb bench for the PEs: random operands and random mode sequences, every
cycle's accumulator checked against a numpy reference.

Environment: MPQ_PE_SAMPLES (cycles, default 4000), MPQ_SEED (default 1),
MPQ_BENCH_REPORT (if set, a JSON summary is written there).
"""

import json
import os
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from hw.pe.modes import PeMode, activation_range, pack_activations, pack_weights, weight_range


class PeReference:
    """numpy model of the PE: per-cycle dot products from lane values, and the
    accumulator (wrapping at acc_width bits)."""

    def __init__(self, acc_width):
        self.acc_width = acc_width

    @staticmethod
    def dot_products(weight_lanes, activation_lanes):
        return (weight_lanes * activation_lanes).sum(axis=1)

    def accumulate(self, dots, enable, first, psum_in):
        mask = (1 << self.acc_width) - 1
        out = np.empty(len(dots), dtype=np.int64)
        acc = 0
        for cycle, (dot, en, fst, psum) in enumerate(zip(dots, enable, first, psum_in)):
            if en:
                acc = ((int(psum) if fst else acc) + int(dot)) & mask
                if acc >> (self.acc_width - 1):
                    acc -= 1 << self.acc_width
            out[cycle] = acc
        return out


class Stimulus:
    """Random cycles: a random mode on any cycle, random lane values (unused
    lanes zero), stalls and restarts, packed into the PE's operand words."""

    def __init__(self, rng, cycles, acc_width, fused):
        modes = list(PeMode) if fused else [PeMode.W4A4]
        self.modes = rng.integers(0, len(modes), cycles)
        self.weight_lanes = np.zeros((cycles, 4), dtype=np.int64)
        self.activation_lanes = np.zeros((cycles, 4), dtype=np.int64)
        for index, mode in enumerate(modes):
            rows = self.modes == index
            low, high = weight_range(mode.weight_bits)
            self.weight_lanes[rows, :mode.lanes] = rng.integers(low, high + 1, (rows.sum(), mode.lanes))
            high = activation_range(mode.activation_bits)[1]
            self.activation_lanes[rows, :mode.lanes] = rng.integers(0, high + 1, (rows.sum(), mode.lanes))
        self.modes = np.array([modes[index].value for index in self.modes])
        self.enable = rng.random(cycles) < 0.9
        self.first = rng.random(cycles) < 0.05
        half = 1 << (acc_width - 1)
        self.psum_in = rng.integers(-half, half, cycles)

    def words(self, cycle):
        mode = PeMode(int(self.modes[cycle]))
        return (pack_weights(mode, self.weight_lanes[cycle, :mode.lanes]),
                pack_activations(mode, self.activation_lanes[cycle, :mode.lanes]))


class PeDriver:
    """Applies one cycle's inputs to the DUT (fused or fixed PE)."""

    def __init__(self, dut, acc_width, fused):
        self.dut = dut
        self.fused = fused
        self.mask = (1 << acc_width) - 1

    def apply(self, stimulus, cycle):
        dut = self.dut
        if self.fused:
            weights, activations = stimulus.words(cycle)
            dut.mode.value = int(stimulus.modes[cycle])
            dut.weights.value = weights
            dut.activations.value = activations
        else:
            dut.weight.value = int(stimulus.weight_lanes[cycle, 0]) & 0xF
            dut.activation.value = int(stimulus.activation_lanes[cycle, 0])
        dut.enable.value = int(stimulus.enable[cycle])
        dut.first.value = int(stimulus.first[cycle])
        dut.psum_in.value = int(stimulus.psum_in[cycle]) & self.mask


async def run_random(dut, fused):
    cycles = int(os.environ.get("MPQ_PE_SAMPLES", "4000"))
    seed = int(os.environ.get("MPQ_SEED", "1"))
    acc_width = len(dut.psum_out)
    rng = np.random.default_rng(seed)
    stimulus = Stimulus(rng, cycles, acc_width, fused)
    reference = PeReference(acc_width)
    dots = reference.dot_products(stimulus.weight_lanes, stimulus.activation_lanes)
    expected = reference.accumulate(dots, stimulus.enable, stimulus.first, stimulus.psum_in)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    driver = PeDriver(dut, acc_width, fused)
    dut.rst.value = 1
    driver.apply(stimulus, 0)
    dut.enable.value = 0
    await FallingEdge(dut.clk)
    dut.rst.value = 0

    # Inputs change on falling edges; the rising edge between two falling edges
    # captures them, so psum_out read at the next falling edge is that cycle's.
    mismatches = []
    start = time.perf_counter()
    for cycle in range(cycles):
        driver.apply(stimulus, cycle)
        await FallingEdge(dut.clk)
        got = dut.psum_out.value.to_signed()
        if got != expected[cycle]:
            mismatches.append((cycle, PeMode(int(stimulus.modes[cycle])).name,
                               stimulus.weight_lanes[cycle].tolist(),
                               stimulus.activation_lanes[cycle].tolist(), got, int(expected[cycle])))
    wall_s = time.perf_counter() - start
    dut._log.info("%d cycles, %d mismatches, %.0f cycles/s", cycles, len(mismatches),
                  cycles / wall_s)
    if os.environ.get("MPQ_BENCH_REPORT"):
        modes = [PeMode(int(value)) for value in stimulus.modes[stimulus.enable]]
        macs = {mode.name: mode.lanes * modes.count(mode) for mode in PeMode}
        summary = {"toplevel": dut._name, "cycles": cycles, "seed": seed,
                   "mismatches": len(mismatches), "wall_s": wall_s,
                   "cycles_per_s": cycles / wall_s,
                   "enabled_cycles": int(stimulus.enable.sum()),
                   "macs_per_mode": macs if fused else {"W4A4": int(stimulus.enable.sum())}}
        with open(os.environ["MPQ_BENCH_REPORT"], "w") as file:
            json.dump(summary, file, indent=2)
    assert not mismatches, f"{len(mismatches)} of {cycles} cycles wrong; first: {mismatches[:5]}"


@cocotb.test()
async def fused_pe_random(dut):
    await run_random(dut, fused=True)


@cocotb.test()
async def fixed_pe_random(dut):
    await run_random(dut, fused=False)
