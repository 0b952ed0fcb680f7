"""Where a ROUND's fixed cycles go, and what overlapping them buys: cycle
models of round-overlap designs on the golden model's instruction stream
(issue 15; docs/dataflow.md, "Per-round overhead").

Each design is a `Timeline` (the golden model's timing rules) with its rules
changed; `sw.compile.golden.execute(timeline=...)` runs the compiled program
with it (compute=False: the cycles do not depend on the data), so the count
of rounds, steps, tiles, SETs and PPU jobs is exactly the compiled
program's. `built` is the golden model (what the RTL matches cycle for
cycle): the array hands its sums to shadow registers that drain in the
background and the controller decodes ahead (docs/isa.md, "Timing").
`serial` is the design before it, every round fetched, prefetched, skewed
and drained in turn (the rules the RTL matched before issue 15, kept here
for the comparison).

  A  "prefetch under drain": the controller fetches the next instructions
     and the round engine prefetches the next round's first chunk while the
     array skews and drains the current round; the next first step enters
     the array in the last drain cycle (it reaches PE (0, 0) one cycle
     later). The array and the OAB are unchanged.
  B  "accumulator hand-off": as A, and every PE hands its sum to a shadow
     register when the round's last step passes it (a bit travelling with
     the step); the shadows drain down their column into the OAB in the
     background (R cycles, columns skewed by one cycle each), so the next
     round's steps follow the last one with no gap, except that a PE's
     shadow must be empty before its next hand-off: a round's last step
     comes at least R cycles after the previous round's. The controller
     decodes the next ROUND as soon as the engine has latched the current
     one (a one-round queue in the engine).

Both keep the barrier rules (SET and HALT wait for the PPU and the last
drain; a tile's first ROUND waits for tile n - 2's PPU job), the PPU's
timing and every counter but the cycles (and `stall_cycles`, the same
rule).

    PYTHONPATH=. .venv/bin/python bench/round_overlap.py [--config default]
                                                          [--models M.mpq ...]
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import write_json  # noqa: E402
from bench.core_perf import PRECISIONS, layer_spec, vgg9_layers  # noqa: E402
from hw import timing  # noqa: E402
from hw.config import get_config  # noqa: E402
from sw.compile import compile_layer, golden  # noqa: E402
from sw.compile.tap_packing import pack_taps  # noqa: E402

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6")


class OverlapTimeline(golden.Timeline):
    """The rules of design A (`handoff = False`) or B (`handoff = True`).

    `ctrl` is the controller's next free cycle, `now` the latest cycle any
    part is busy until (the run's cycles at HALT)."""

    handoff = False

    def __init__(self, rows, cols, packed):
        super().__init__(rows, cols, packed)
        self.ctrl = 0
        self.prev_last = None    # cycle of the previous round's last step
        self.drain_end = 0       # first cycle after its sums are all in the OAB

    def fetch(self):
        self.ctrl += timing.FETCH_CYCLES
        self.now = max(self.now, self.ctrl)

    def set(self):
        wait = max(self.ppu_idle, self.drain_end)
        if wait > self.ctrl - 1:
            self.ctrl = wait + 1

    def round(self, tile_number, first, last, steps, reads_shortcut=False):
        rows, cols = self.rows, self.cols
        start = self.ctrl
        if first and tile_number - 2 in self.ppu_end:
            start = max(start, self.ppu_end[tile_number - 2])
        self.stall += start - self.ctrl
        first_step = start + timing.PREFETCH_CYCLES
        if self.prev_last is not None:
            if self.handoff:
                first_step = max(first_step, self.prev_last + 1, self.prev_last + rows - steps + 1)
            else:
                first_step = max(first_step, self.drain_end - 1)
        last_step = first_step + steps - 1
        self.busy += steps
        self.prev_last = last_step
        self.drain_end = last_step + 1 + rows + cols - 1 + timing.PIPE_CYCLES + rows
        # A: the controller waits for the engine's done; B: for its latch.
        self.ctrl = start + 1 if self.handoff else last_step + 1
        self.now = max(self.now, self.drain_end)
        if last:
            accept = self.drain_end if self.last_element is None else max(self.drain_end, self.last_element)
            self.last_element = accept + rows * cols
            self.ppu_idle = self.ppu_end[tile_number] = self.last_element + timing.PPU_CYCLES

    def halt(self):
        self.now = max(self.ctrl + timing.HALT_CYCLES - 1, self.ppu_idle, self.drain_end) + 1


class PrefetchUnderDrain(OverlapTimeline):
    """A: fetch and prefetch under the previous round's skew and drain."""
    handoff = False


class AccumulatorHandoff(OverlapTimeline):
    """B: A, and PE sums handed to shadow registers that drain in the background."""
    handoff = True


class SerialRounds(golden.Timeline):
    """Before issue 15: a ROUND's fetch, prefetch, steps, skew and drain in
    turn (the golden model's rules, which the RTL matched, until 2026-11)."""

    def set(self):
        decode = self.now - 1
        if self.ppu_idle > decode:
            self.now = self.ppu_idle + 1

    def round(self, tile_number, first, last, steps, reads_shortcut=False):
        start = self.now
        if first and tile_number - 2 in self.ppu_end:
            start = max(start, self.ppu_end[tile_number - 2])
        self.stall += start - self.now
        self.now = start + timing.PREFETCH_CYCLES + steps
        self.busy += steps
        self.now += self.rows + self.cols - 1 + timing.PIPE_CYCLES + self.rows
        if last:
            accept = self.now if self.last_element is None else max(self.now, self.last_element)
            self.last_element = accept + self.rows * self.cols
            self.ppu_idle = self.ppu_end[tile_number] = self.last_element + timing.PPU_CYCLES

    def halt(self):
        self.now = max(self.now + timing.HALT_CYCLES - 1, self.ppu_idle) + 1


DESIGNS = {"serial": SerialRounds, "A": PrefetchUnderDrain, "built": None, "B": AccumulatorHandoff}


def program_cycles(config, phases):
    """{design: cycles} of the programs `phases` (memory images), run in turn."""
    return {name: sum(golden.execute(config, images, compute=False, timeline=timeline).counters["cycles"]
                      for images in phases)
            for name, timeline in DESIGNS.items()}


def layer_rows(config, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for precision in ("w4a4", "w2a2"):
        weight_bits, act_bits = PRECISIONS[precision]
        for name, kind, cin, cout, size, pool in vgg9_layers(1.0):
            if name not in LAYERS:
                continue
            spec = layer_spec(rng, name, kind, cin, cout, size, pool, weight_bits, act_bits, last=False)
            x = np.zeros(spec.input_shape, dtype=np.int64)
            variants = [(name, spec, x)]
            if name == "conv1":
                packed, packing = pack_taps(spec)
                variants.append(("conv1 packed", packed, packing.apply(x)))
            for label, variant, data in variants:
                compiled = compile_layer(variant, config)
                busy = compiled.expected_counters["busy_cycles"]
                cycles = program_cycles(config, [compiled.memories(data)])
                rows.append({"precision": precision, "layer": label, "busy_cycles": busy, "cycles": cycles,
                             "busy_share": {k: busy / v for k, v in cycles.items()}})
                print(precision, label, busy, cycles, flush=True)
    return rows


def model_rows(config, paths):
    from sw.compile.network import compile_network
    from sw.quantize.export import read_model_file
    rows = []
    for path in paths:
        network = compile_network(*read_model_file(path), config)
        cycles = program_cycles(config, [network.phase_images(i) for i in range(len(network.phases))])
        rows.append({"model": str(path), "cycles_per_inference": cycles})
        print(path, cycles, flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--models", nargs="*", default=[], help="model files (.mpq) to time whole")
    args = parser.parse_args()
    config = get_config(args.config)
    figures = {"config": config.name, "array": [config.rows, config.cols],
               "designs": {name: (timeline.__doc__ or "") if timeline else "the golden model (built)"
                           for name, timeline in DESIGNS.items()},
               "layers": layer_rows(config), "models": model_rows(config, args.models)}
    print(f"wrote {write_json(f'round_overlap_{config.name}', figures)}")


if __name__ == "__main__":
    main()
