"""cocotb bench for the whole core: load memory images through the host
stream (with random stalls), start, wait for `done` (the simulator runs
freely meanwhile), read results and counters back (with random
back-pressure), and write what it saw to a JSON file.

The bench knows nothing about layers: the pytest side compiles cases into
command words and compares what comes back. Environment:

  MPQ_CORE_CASES   JSON file: a list of cases, each
                   {"name", "phases": [{"load": [words]}, ...],
                    "readback": [[mem, bank, start, count], ...], "timeout_cycles": N}
                   Each phase is loaded, started and run to done in turn (a network
                   whose static data does not fit on chip runs as several phases);
                   memories keep their contents between phases and between cases.
  MPQ_CORE_RESULTS JSON file written by the bench: per case
                   {"name", "status", "counters", "readback": [[entries], ...], "wait_cycles",
                    "load_words", "load_s", "run_s", "readback_s"} (wall seconds)
  MPQ_CORE_PROGRESS  text file (optional): a line "<case name> <cycles>" is appended
                   as each case finishes, for whoever follows the run
  MPQ_SEED         seed of the stalls and back-pressure (default 1); each case's come
                   from (seed, case name), so a case sees the same stalls whichever run,
                   and whichever place in it, it is in
  MPQ_STALL        probability of a stall cycle on each stream (default 0.2)
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, with_timeout

from hw.config import AcceleratorConfig, get_config
from sw import driver


class HostLink:
    """Drives `host_in` and watches `host_out`, one cycle at a time.

    Inputs change on falling edges. A word moves at a rising edge when valid
    and ready were both high in the cycle before it; ready is sampled
    mid-cycle (it does not depend on valid in this design's host interface).
    """

    def __init__(self, dut, rng, stall):
        self.dut = dut
        self.rng = rng
        self.stall = stall
        dut.host_in__valid.value = 0
        dut.host_in__payload.value = 0
        dut.host_out__ready.value = 0

    async def exchange(self, words, responses):
        """Send `words`; return the `responses` words the core answers."""
        # One Python wake-up per cycle is what this bench costs: handles are
        # looked up once, and a signal is written only when it changes and
        # read only when its value is used.
        dut, random, stall = self.dut, self.rng.random, self.stall
        falling = FallingEdge(dut.clk)
        in_valid_h, in_payload_h, in_ready_h = (dut.host_in__valid, dut.host_in__payload,
                                                dut.host_in__ready)
        out_ready_h, out_valid_h, out_payload_h = (dut.host_out__ready, dut.host_out__valid,
                                                   dut.host_out__payload)
        total = len(words)
        sent = 0
        received = []
        moves_in = moves_out = False   # valid and ready both high in the cycle before
        in_valid = out_ready = False   # what this bench drives now
        payload_sent = None            # index of the word on host_in__payload
        out_payload = 0
        while sent < total or len(received) < responses:
            await falling
            # What happened at the rising edge just before this falling edge.
            if moves_in:
                sent += 1
            if moves_out:
                received.append(out_payload)
            # Next cycle's inputs.
            valid = sent < total and random() >= stall
            if valid != in_valid:
                in_valid_h.value = int(valid)
                in_valid = valid
            if valid and payload_sent != sent:
                in_payload_h.value = words[sent]
                payload_sent = sent
            ready = len(received) < responses and random() >= stall
            if ready != out_ready:
                out_ready_h.value = int(ready)
                out_ready = ready
            moves_in = valid and bool(in_ready_h.value)
            moves_out = ready and bool(out_valid_h.value)
            if moves_out:
                out_payload = int(out_payload_h.value)
        if in_valid:
            in_valid_h.value = 0
        if out_ready:
            out_ready_h.value = 0
        return received


@cocotb.test()
async def run_cases(dut):
    config = (AcceleratorConfig(**json.loads(os.environ["MPQ_CONFIG_JSON"]))
              if "MPQ_CONFIG_JSON" in os.environ else get_config(os.environ.get("MPQ_CONFIG", "small")))
    shapes = config.memory_shapes()
    cases = json.load(open(os.environ["MPQ_CORE_CASES"]))
    seed = int(os.environ.get("MPQ_SEED", "1"))
    stall = float(os.environ.get("MPQ_STALL", "0.2"))
    progress = os.environ.get("MPQ_CORE_PROGRESS")
    # The clock toggles in the simulator's C++ (GPI), not in a Python
    # coroutine: while the core runs, no Python executes at all.
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns", impl="gpi").start())
    link = HostLink(dut, None, stall)
    results = []
    for case in cases:
        link.rng = random.Random(f"{seed}/{case['name']}")
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        load_s = run_s = 0.0
        load_words = wait_cycles = 0
        counters = dict.fromkeys(driver.COUNTERS, 0)
        for phase in case["phases"]:
            started = time.perf_counter()
            await link.exchange(phase["load"], 0)
            loaded = time.perf_counter()
            await link.exchange(driver.start_command(), 0)
            wait_start = cocotb.utils.get_sim_time("ns")
            if not int(dut.done.value):
                await with_timeout(RisingEdge(dut.done), case["timeout_cycles"] * 10, "ns")
            wait_cycles += int((cocotb.utils.get_sim_time("ns") - wait_start) // 10)
            ran = time.perf_counter()
            load_words += len(phase["load"])
            load_s += loaded - started
            run_s += ran - loaded
            status = driver.decode_status((await link.exchange(driver.status_command(), 1))[0])
            phase_counters = driver.decode_counters(
                await link.exchange(driver.counter_commands(), 2 * len(driver.COUNTERS)))
            counters = {key: counters[key] + phase_counters[key] for key in counters}
            if status["error"] or not status["done"]:
                break
        ran = time.perf_counter()
        readback = []
        for mem, bank, start, count in case["readback"]:
            width = shapes[mem][2]
            words = await link.exchange(driver.read_memory(mem, bank, start, count),
                                        count * driver.words_per_entry(width))
            readback.append(driver.entries_from_words(words, width))
        results.append({"name": case["name"], "status": status, "counters": counters,
                        "readback": readback, "wait_cycles": wait_cycles,
                        "load_words": load_words, "load_s": load_s,
                        "run_s": run_s, "readback_s": time.perf_counter() - ran})
        dut._log.info("%s: %s, %d cycles", case["name"], status, counters["cycles"])
        if progress:
            with open(progress, "a") as file:
                file.write(f"{case['name']} {counters['cycles']}\n")
    with open(os.environ["MPQ_CORE_RESULTS"], "w") as file:
        json.dump(results, file)
