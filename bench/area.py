"""Area of the accelerator per component and configuration: Yosys synthesis
of the generated RTL (generic cells, iCE40, ECP5), fused-PE cores of 4x4,
8x8 and 16x16 against the same cores with fixed 4-bit PEs.

Writes bench/results/area.json, area.md and area.png.

    .venv/bin/python bench/area.py                 # synthesize everything (~30 min, 2 cores)
    .venv/bin/python bench/area.py --report-only   # area.md / area.png from area.json

Every figure is one Yosys run made by this script (hw/area.py has the
scripts); nothing is cached between runs. What is composed rather than
synthesized is said so in area.md:

  - the core with fixed PEs = the synthesized fused core - its synthesized
    fused array + the synthesized fixed array (hw/core.py builds fused PEs);
  - "rest of core" (controller, OAB, memory ports, counters) = core - array
    - round engine - PPU - host interface, each synthesized as its own top,
    so it also absorbs what flattening optimizes across their boundaries;
  - a whole core whose synthesis runs past --core-timeout is composed from
    its synthesized components plus the rest of the largest smaller core
    that was synthesized whole.

Memories are synthesized at depth min(depth, 1024) (hw/area.SYNTH_MAX_DEPTH);
block RAMs at the real depths come from the shape rule hw/area.bram_count,
checked against Yosys' own count on every synthesized core.
"""

import argparse
import concurrent.futures
import json
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import RESULTS, provenance, save_figure, write_json  # noqa: E402
from common.files import write_atomically  # noqa: E402
from hw import area  # noqa: E402
from hw.config import AcceleratorConfig, get_config  # noqa: E402

# The compared configurations: the named 8x8 and 16x16 and a 4x4 with the
# default memories (the named "small" one has smaller memories).
CONFIGS = {
    "4x4": AcceleratorConfig("area_4x4", rows=4, cols=4),
    "8x8": get_config("default"),
    "16x16": get_config("large"),
}
PARTS = ("engine", "ppu", "host")
TARGETS = tuple(area.TARGETS)
FIT_ON, HELD_OUT = ("4x4", "16x16"), "8x8"
RUNS_PATH = pathlib.Path(__file__).resolve().parents[1] / "build" / "area_runs.json"


def _job(spec):
    name, component, pe, target, timeout = spec
    config = CONFIGS[name] if name in CONFIGS else get_config("default")
    try:
        result = area.synthesize(component, config, target, pe=pe, timeout=timeout)
    except subprocess.TimeoutExpired:
        result = {"error": f"timeout after {timeout} s"}
    except RuntimeError as error:
        result = {"error": str(error)[-1500:]}
    return {"config": name, "component": component, "pe": pe, "target": target, **result}


def jobs(core_timeout, part_timeout, targets=TARGETS):
    # Longest first, so that two workers finish together.
    specs = []
    for name in ("16x16", "8x8", "4x4"):
        specs += [(name, "core", "fused", t, core_timeout) for t in ("ecp5", "ice40", "generic")]
    for name in ("16x16", "8x8", "4x4"):
        for pe in area.PE_KINDS:
            specs += [(name, "array", pe, t, part_timeout) for t in TARGETS]
        for part in PARTS:
            specs += [(name, part, "fused", t, part_timeout) for t in TARGETS]
    for pe in area.PE_KINDS:
        specs += [("pe", "pe", pe, t, part_timeout) for t in TARGETS]
    return [spec for spec in specs if spec[3] in targets]


def _sub(a, b):
    return {key: a[key] - b[key] for key in a}


def _add(*items):
    return {key: sum(item[key] for item in items) for key in items[0]}


def assemble(runs):
    """The per-configuration figures from the raw runs."""
    def get(name, component, pe, target):
        for run in runs:
            if (run["config"], run["component"], run["pe"], run["target"]) == \
                    (name, component, pe, target) and "summary" in run:
                return run["summary"]
        return None

    configs = {}
    for name in ("4x4", "8x8", "16x16"):   # smallest first: composition borrows from below
        config = CONFIGS[name]
        entry = {"config": config.name, "rows": config.rows, "cols": config.cols,
                 "acc_width": config.acc_width, "synth_max_depth": area.SYNTH_MAX_DEPTH,
                 "array": {pe: {t: get(name, "array", pe, t) for t in TARGETS}
                           for pe in area.PE_KINDS}}
        for part in PARTS:
            entry[part] = {t: get(name, part, "fused", t) for t in TARGETS}
        entry["core"], entry["rest"], entry["core_composed_from"] = {}, {}, {}
        for t in TARGETS:
            core = get(name, "core", "fused", t)
            parts = [entry["array"]["fused"][t]] + [entry[p][t] for p in PARTS]
            if core is not None:
                entry["core"][t] = core
                entry["rest"][t] = _sub(core, _add(*parts))
                entry["core_composed_from"][t] = None
            else:
                donor = next(n for n in reversed(list(configs)) if configs[n]["core_composed_from"]
                             .get(t) is None)
                entry["rest"][t] = configs[donor]["rest"][t]
                entry["core"][t] = _add(*parts, entry["rest"][t])
                entry["core_composed_from"][t] = (f"components of {name} + rest of core of "
                                                  f"{donor} (its whole-core synthesis timed out)")
        entry["core_measured"] = all(v is None for v in entry["core_composed_from"].values())
        # Fixed-PE core: the fused core with its array replaced.
        entry["core_fixed"] = {t: _add(_sub(entry["core"][t], entry["array"]["fused"][t]),
                                       entry["array"]["fixed"][t]) for t in TARGETS}
        entry["pe_positions"] = config.rows * config.cols
        entry["array_per_position"] = {
            pe: {t: {k: v / entry["pe_positions"] for k, v in entry["array"][pe][t].items()}
                 for t in TARGETS} for pe in area.PE_KINDS}
        synth_config = area.synthesis_config(config)
        entry["brams"] = {}
        for t in ("ice40", "ecp5"):
            real = area.bram_count(config, t)
            entry["brams"][t] = {
                "real_depths_rule": real["total"], "real_depths_by_memory": real["by_memory"],
                "real_memory_bits": real["bits"],
                "synth_depths_rule": area.bram_count(synth_config, t)["total"],
                "synth_depths_yosys": (entry["core"][t]["brams"]
                                       if entry["core_composed_from"][t] is None else None),
            }
        configs[name] = entry
    pe = {kind: {t: get("pe", "pe", kind, t) for t in TARGETS} for kind in area.PE_KINDS}
    return {"configs": configs, "pe": pe}


def model_check(figures):
    """Fit on FIT_ON, check every measured core (FIT_ON and HELD_OUT)."""
    measured = [n for n, c in figures["configs"].items() if c["core_measured"]]
    fit_on = [n for n in FIT_ON if n in measured]
    if len(fit_on) < 2 or HELD_OUT not in measured:
        return {"error": f"needs whole-core syntheses of {FIT_ON} and {HELD_OUT}; "
                         f"measured: {measured}"}
    model = area.fit_area_model(figures, fit_on=fit_on)
    checks = {}
    for name in measured:
        config = CONFIGS[name]
        for pe, core_key in (("fused", "core"), ("fixed", "core_fixed")):
            estimate = area.estimate_area(config, pe=pe, model=model)
            for t in ("ice40", "ecp5"):
                for metric in ("luts", "ffs"):
                    actual = figures["configs"][name][core_key][t][metric]
                    checks[f"{name} {pe} {t} {metric}"] = {
                        "estimate": estimate[t][metric], "measured": actual,
                        "error": (estimate[t][metric] - actual) / actual,
                        "fitted": name in fit_on}
    held = [abs(c["error"]) for c in checks.values() if not c["fitted"]]
    fitted = [abs(c["error"]) for c in checks.values() if c["fitted"]]
    return {"fit_on": fit_on, "held_out": HELD_OUT, "model": model, "checks": checks,
            "max_abs_error_fitted": max(fitted), "max_abs_error_held_out": max(held)}


def measure(workers, core_timeout, part_timeout, targets, reuse):
    specs = jobs(core_timeout, part_timeout, targets)
    runs = []
    start = time.monotonic()
    invocation = {"started": provenance()["date"], "revision": provenance()["revision"],
                  "worktree_dirty": provenance()["worktree_dirty"]}
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_job, spec): spec for spec in specs}
        with tqdm(total=len(specs), desc="synthesizing", unit="run") as bar:
            for future in concurrent.futures.as_completed(futures):
                run = {**future.result(), "invocation": invocation}
                runs.append(run)
                bar.set_postfix_str(f"{run['config']} {run['component']} {run['pe']} "
                                    f"{run['target']} {run.get('seconds', run.get('error'))}")
                bar.update()
    seconds = round(time.monotonic() - start)
    if reuse:
        # The other targets' runs of the previous invocation (each run names
        # the invocation that made it).
        previous = json.loads(RUNS_PATH.read_text())
        runs += [run for run in previous["runs"] if run["target"] not in targets]
        seconds += previous["synthesis_seconds"]
    order = {spec[:4]: i for i, spec in enumerate(jobs(core_timeout, part_timeout))}
    runs.sort(key=lambda r: order[(r["config"], r["component"], r["pe"], r["target"])])
    # This invocation's raw runs, before anything is derived from them, so
    # that a failure after an hour of synthesis can be assembled (--from-runs).
    RUNS_PATH.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(RUNS_PATH, json.dumps({"synthesis_seconds": seconds, "runs": runs}, indent=1))
    return runs, seconds


# ---------------------------------------------------------------- report

COMPONENT_ROWS = (("pe", "PE (one)"), ("array", "systolic array"), ("engine", "round engine"),
                  ("ppu", "post-processor (PPU)"), ("host", "host interface"),
                  ("rest", "rest of core (controller, OAB, memory ports, counters)"),
                  ("core", "whole core"))


def _cells(summary, target):
    if summary is None:
        return "n/a"
    if target == "generic":
        return f"{summary['cells']} / {summary['logic_cells']} / {summary['ffs']}"
    return (f"{summary['luts']} / {summary['carries']} / {summary['ffs']} / {summary['brams']}"
            + (f" / {summary['dsps']}" if target == "ice40" else f" / {summary['lutrams']}"))


def report(data):
    """area.md from area.json: the runs, per configuration its components,
    fused against fixed PEs, block RAMs, the area model's check."""
    configs = data["configs"]
    return "\n".join(_report_header(data) + _component_tables(data) + _fused_against_fixed(configs)
                     + _block_rams(data) + _model_check(data["model_check"]))


def _report_header(data):
    """How and where the runs were made, and what the columns count."""
    lines = ["# Area: Yosys synthesis per component and configuration", "",
             f"Made by `{data['command']}` at {data['revision'][:10]}"
             f"{' (dirty tree)' if data['worktree_dirty'] else ''}, {data['date']}; "
             f"{data['synthesis_seconds']} s of synthesis on {data['machine']['cpus']} CPUs "
             f"({data['workers']} in parallel). Yosys: YoWASP 0.70. Method: docs/area.md.", "",
             "Columns per target:", "",
             "- generic (`synth -flatten` without memory_map): cells / logic cells (all but "
             "memories: the area proxy) / flip-flops",
             "- iCE40 (`splitnets; synth_ice40`): SB_LUT4 / SB_CARRY / SB_DFF* / SB_RAM40_4K / SB_MAC16",
             "- ECP5 (`synth_ecp5 -nodsp -noabc9`): LUT4 / CCU2C / TRELLIS_FF / DP16KD / "
             "TRELLIS_DPR16X4", "",
             "Runs by invocation (`--targets ... --reuse-runs` keeps the other targets' "
             "runs of the previous invocation; each run in area.json names its own):", ""]
    invocations = {}
    for run in data["runs"]:
        key = (run["invocation"]["started"], run["invocation"]["revision"])
        invocations.setdefault(key, set()).add(run["target"])
    for (started, revision), targets in sorted(invocations.items()):
        lines.append(f"- started {started} at {revision[:40]}: {', '.join(sorted(targets))}")
    lines += ["",
             f"Memories synthesized at depth min(depth, {area.SYNTH_MAX_DEPTH}); the block "
             "RAMs at the real depths are in the next table. Whole-core figures are 24-bit "
             "accumulators throughout.", ""]
    return lines


def _component_tables(data):
    """Per configuration: every component on every target."""
    configs, lines = data["configs"], []
    for name, entry in configs.items():
        lines += [f"## {name} ({entry['config']}, {entry['rows']}x{entry['cols']})", "",
                  "| component | generic | iCE40 | ECP5 |", "|---|---|---|---|"]
        for key, label in COMPONENT_ROWS:
            if key == "pe":
                for kind in area.PE_KINDS:
                    lines.append(f"| {kind} PE (one, standalone) | " + " | ".join(
                        _cells(data["pe"][kind][t], t) for t in TARGETS) + " |")
                continue
            if key == "array":
                for kind in area.PE_KINDS:
                    lines.append(f"| systolic array, {kind} PEs | " + " | ".join(
                        _cells(entry["array"][kind][t], t) for t in TARGETS) + " |")
                continue
            source = entry[key]
            mark = ""
            if key == "core" and not entry["core_measured"]:
                mark = " (composed, see below)"
            if key == "rest":
                mark = " (core - parts)"
            lines.append(f"| {label}{mark} | " + " | ".join(_cells(source[t], t)
                                                            for t in TARGETS) + " |")
        lines.append("| **core with fixed 4-bit PEs** (core - fused array + fixed array) | "
                     + " | ".join(_cells(entry["core_fixed"][t], t) for t in TARGETS) + " |")
        composed = {t: why for t, why in entry["core_composed_from"].items() if why}
        for t, why in composed.items():
            lines.append(f"\n{t} whole core of {name}: {why}.")
        lines.append("")

    return lines


def _fused_against_fixed(configs):
    """The array and the core with fused PEs over those with fixed 4-bit PEs."""
    lines = ["## Fused against fixed", "",
              "| config | target | metric | array fused | array fixed | ratio | core fused | "
              "core fixed | ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in configs.items():
        for t, metrics in (("ice40", ("luts", "ffs")), ("ecp5", ("luts", "ffs")),
                           ("generic", ("logic_cells",))):
            for metric in metrics:
                af, ax = entry["array"]["fused"][t][metric], entry["array"]["fixed"][t][metric]
                cf, cx = entry["core"][t][metric], entry["core_fixed"][t][metric]
                lines.append(f"| {name} | {t} | {metric} | {af} | {ax} | {af / ax:.2f} | {cf} | "
                             f"{cx} | {cf / cx:.2f} |")
    lines += ["", "Per PE position (array / rows*cols, skew registers included), iCE40 LUTs: "
              + ", ".join(f"{n} fused {e['array_per_position']['fused']['ice40']['luts']:.1f}, "
                          f"fixed {e['array_per_position']['fixed']['ice40']['luts']:.1f}"
                          for n, e in configs.items()) + ".", ""]

    return lines


def _block_rams(data):
    """Block RAMs by the rule and by Yosys."""
    lines = ["## Block RAMs", "",
              "Rule (hw/area.bram_count): each memory of `config.memory_shapes()` is tiled by "
              "the one block shape that needs fewest blocks (iCE40 SB_RAM40_4K 4 kbit: 256x16, "
              "512x8, 1024x4, 2048x2; ECP5 DP16KD 18 kbit: 16384x1 ... 2048x9, 1024x18, "
              "512x36); the activation banks' 4-bit write enables take a 9-bit byte lane each "
              "on ECP5. The OAB (2*rows entries, two read ports): on iCE40 in block RAM, one copy "
              "per read port, from 16 entries on (flip-flops below); on ECP5 distributed RAM "
              "(TRELLIS_DPR16X4), as Yosys chose here.", "",
              "| config | target | rule, synthesized depths | Yosys, synthesized depths | "
              "rule, real depths | memory bits, real |", "|---|---|---|---|---|---|"]
    for name, entry in data["configs"].items():
        for t in ("ice40", "ecp5"):
            b = entry["brams"][t]
            yosys = b["synth_depths_yosys"] if b["synth_depths_yosys"] is not None else "n/a"
            lines.append(f"| {name} | {t} | {b['synth_depths_rule']} | {yosys} | "
                         f"{b['real_depths_rule']} | {b['real_memory_bits']} |")
    agree = data["bram_rule_agreement"]
    lines += ["", f"The rule agrees with Yosys on {agree['agree']} of {agree['compared']} "
              "synthesized cores (both targets)." + (f" Disagreements: {agree['disagree']}."
                                                     if agree["disagree"] else ""), ""]

    return lines


def _model_check(check):
    """hw/area.estimate_area against the measured points."""
    lines = ["## Area model (hw/area.estimate_area)", ""]
    if "error" in check:
        lines.append(f"Not checked: {check['error']}.")
    else:
        lines += [f"Fitted on {', '.join(check['fit_on'])}; held out: {check['held_out']}. "
                  f"Largest error on the fitted points {check['max_abs_error_fitted']:.1%}, on "
                  f"the held-out point {check['max_abs_error_held_out']:.1%}.", "",
                  "| point | estimate | measured | error |", "|---|---|---|---|"]
        for key, c in check["checks"].items():
            lines.append(f"| {key}{'' if c['fitted'] else ' (held out)'} | {c['estimate']} | "
                         f"{c['measured']} | {c['error']:+.1%} |")
    lines.append("")
    return lines


def plot(data, path):
    configs = data["configs"]
    parts = (("array", "array"), ("engine", "round engine"), ("ppu", "PPU"),
             ("host", "host"), ("rest", "rest of core"))
    panels = (("ice40", "luts", "iCE40 SB_LUT4s"), ("ecp5", "luts", "ECP5 LUT4s"),
              ("generic", "logic_cells", "generic logic cells"))
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.5))
    for ax, (target, metric, title) in zip(axes, panels):
        labels, bars = [], []
        for name, entry in configs.items():
            for pe in area.PE_KINDS:
                labels.append(f"{name}\n{pe}")
                bars.append([(entry["array"][pe] if key == "array" else entry[key])[target][metric]
                             for key, _ in parts])
        bottoms = [0] * len(bars)
        for index, (_, label) in enumerate(parts):
            heights = [values[index] for values in bars]
            ax.bar(range(len(bars)), heights, bottom=bottoms, label=label)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        ax.set_xticks(range(len(bars)), labels)
        ax.set_ylabel(title)
        ax.set_title(f"core {title} by component")
    axes[0].legend(fontsize=8)
    fig.suptitle("Fused 2/4-bit PE cores vs fixed 4-bit PE cores (Yosys)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def finish(data):
    write_atomically(RESULTS / "area.md", report(data))
    plot(data, RESULTS / "area.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--core-timeout", type=int, default=1500,
                        help="seconds per whole-core synthesis before it is composed instead")
    parser.add_argument("--part-timeout", type=int, default=900)
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite area.md and area.png from area.json")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS),
                        help="synthesize for these targets only")
    parser.add_argument("--reuse-runs", action="store_true",
                        help=f"take the other targets' runs from the last invocation ({RUNS_PATH})")
    parser.add_argument("--from-runs", action="store_true",
                        help=f"assemble the raw runs the last invocation left in {RUNS_PATH}")
    args = parser.parse_args()
    if args.report_only:
        finish(area.load_area_results())
        return
    if args.from_runs:
        saved = json.loads(RUNS_PATH.read_text())
        runs, seconds = saved["runs"], saved["synthesis_seconds"]
    else:
        runs, seconds = measure(args.workers, args.core_timeout, args.part_timeout,
                                args.targets, args.reuse_runs)
    figures = assemble(runs)
    compared = agree = 0
    disagree = []
    for name, entry in figures["configs"].items():
        for t in ("ice40", "ecp5"):
            b = entry["brams"][t]
            if b["synth_depths_yosys"] is not None:
                compared += 1
                if b["synth_depths_yosys"] == b["synth_depths_rule"]:
                    agree += 1
                else:
                    disagree.append(f"{name} {t}: rule {b['synth_depths_rule']}, "
                                    f"Yosys {b['synth_depths_yosys']}")
    figures["bram_rule_agreement"] = {"compared": compared, "agree": agree,
                                      "disagree": disagree}
    figures["model_check"] = model_check(figures)
    figures.update({"targets": area.TARGETS, "synthesis_seconds": seconds,
                    "workers": args.workers, "runs": runs})
    path = write_json("area", figures)
    finish(json.loads(path.read_text()))
    print(f"wrote {path}, area.md, area.png")


if __name__ == "__main__":
    main()
