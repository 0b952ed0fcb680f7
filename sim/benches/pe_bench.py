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

from hw.pe.modes import SLICE_BITS, PeMode


def lanes(words, lane_bits, signed):
    """numpy: the lane values of 8-bit operand words, shape (cycles, lanes)."""
    count = 8 // lane_bits
    shifts = np.arange(count) * lane_bits
    values = (words[:, None] >> shifts) & ((1 << lane_bits) - 1)
    if signed:
        values = np.where(values >> (lane_bits - 1), values - (1 << lane_bits), values)
    return values


class PeReference:
    """numpy model of the PE: per-cycle dot products and the accumulator."""

    def __init__(self, acc_width):
        self.acc_width = acc_width

    @staticmethod
    def dot_products(modes, weights, activations):
        dots = np.zeros(len(modes), dtype=np.int64)
        for mode in PeMode:
            rows = modes == mode.value
            w = lanes(weights[rows], mode.weight_bits, signed=True)[:, :mode.lanes]
            a = lanes(activations[rows], mode.activation_bits, signed=False)[:, :mode.lanes]
            dots[rows] = (w * a).sum(axis=1)
        return dots

    def accumulate(self, dots, enable, first, psum_in):
        """The accumulator after each cycle (wrapping at acc_width bits)."""
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
    """Random cycles: modes change on any cycle, with stalls and restarts."""

    def __init__(self, rng, cycles, acc_width, fused):
        self.modes = rng.integers(0, len(PeMode), cycles) if fused else np.zeros(cycles, int)
        self.weights = rng.integers(0, 256, cycles)
        self.activations = rng.integers(0, 256, cycles)
        if not fused:  # one 4-bit lane each
            self.weights &= 0xF
            self.activations &= 0xF
        self.enable = rng.random(cycles) < 0.9
        self.first = rng.random(cycles) < 0.05
        half = 1 << (acc_width - 1)
        self.psum_in = rng.integers(-half, half, cycles)


class PeDriver:
    """Applies one cycle's inputs to the DUT (fused or fixed PE)."""

    def __init__(self, dut, acc_width, fused):
        self.dut = dut
        self.fused = fused
        self.mask = (1 << acc_width) - 1

    def apply(self, stimulus, cycle):
        dut = self.dut
        if self.fused:
            dut.mode.value = int(stimulus.modes[cycle])
            dut.weights.value = int(stimulus.weights[cycle])
            dut.activations.value = int(stimulus.activations[cycle])
        else:
            dut.weight.value = int(stimulus.weights[cycle])
            dut.activation.value = int(stimulus.activations[cycle])
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
    dots = reference.dot_products(stimulus.modes, stimulus.weights, stimulus.activations)
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
                               hex(stimulus.weights[cycle]), hex(stimulus.activations[cycle]),
                               got, int(expected[cycle])))
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
