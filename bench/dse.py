"""Design-space sweep for VGG-9: array size x weight-memory size -> cycles,
energy and area, and the Pareto front.

Counts at every point come from the compiler's golden model (the analytic
model: it times and counts the program without running the data path).
Before it is trusted, the sweep runs a set of its points on the RTL in
Verilator and compares every counter (`--validate`, default: one point per
array size that finishes in reasonable time); the JSON states the error.
Energy: sw/energy/model.py (Horowitz pricing). Area: hw/area.py's model,
fitted on synthesized cores (bench/results/area.json): ECP5 LUT4s and
flip-flops, and block RAMs from the memory-shape rule.

    .venv/bin/python bench/dse.py MPQ.mpq W4A4.mpq [--cifar DIR] [--validate 4x4:64 8x8:64]

Writes bench/results/dse.{json,md,png}. The designs swept are the MPQ network
on our accelerator and the Bit Fusion-style baseline (the same network in
uniform 4-bit storage); the W4A4 network's points are reported beside them.
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import RESULTS, save_figure, write_json  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.files import write_atomically  # noqa: E402
from hw.area import estimate_area, fit_area_model, load_area_results  # noqa: E402
from hw.config import get_config  # noqa: E402
from sim.network_sim import run_network_on_rtl  # noqa: E402
from sw.compile.network import compile_network  # noqa: E402
from sw.energy.designs import host_traffic, uniform_storage  # noqa: E402
from sw.energy.model import EnergyModel  # noqa: E402
from sw.energy.summary import measured_fused_pe_factor as fused_pe_factor  # noqa: E402
from sw.energy.summary import network_counters  # noqa: E402
from sw.quantize.export import read_model_file  # noqa: E402

ARRAYS = ((4, 4), (8, 8), (8, 16), (16, 16))
WEIGHT_KB = (32, 64, 128, 256, 1024)
ACT_KB = 256            # the default configuration's activation memory, kept for every array


def point_config(rows, cols, weight_kb):
    base = get_config("default")
    weight_depth = weight_kb * 1024 * 8 // (16 * rows)
    act_depth = ACT_KB * 1024 * 8 // (16 * cols)
    return dataclasses.replace(base, name=f"dse-{rows}x{cols}-w{weight_kb}k", rows=rows,
                               cols=cols, weight_depth=weight_depth, act_depth=act_depth)


def pareto(points, keys):
    """Indices of the points no other point beats or equals on every key."""
    front = []
    for i, p in enumerate(points):
        dominated = any(all(q[k] <= p[k] for k in keys) and any(q[k] < p[k] for k in keys)
                        for j, q in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mpq")
    parser.add_argument("w4a4")
    parser.add_argument("--validate", nargs="*", default=["4x4:64", "8x8:64", "16x16:64"],
                        help="points ROWSxCOLS:WEIGHT_KB to run on the RTL (1 image each)")
    parser.add_argument("--build-dir", default="build/bench/dse")
    args = parser.parse_args()
    factor = fused_pe_factor()
    area_model = fit_area_model(load_area_results())
    mpq = read_model_file(args.mpq)
    networks = {"mpq": (mpq, "fused"), "bitfusion": (uniform_storage(*mpq), "fused"),
                "w4a4": (read_model_file(args.w4a4), "fused")}
    started = time.perf_counter()
    points, infeasible, compiled = [], [], {}
    grid = [(r, c, kb) for r, c in ARRAYS for kb in WEIGHT_KB]
    for rows, cols, kb in tqdm(grid, desc="sweep", unit="point"):
        config = point_config(rows, cols, kb)
        area = estimate_area(config, pe="fused", model=area_model)
        for design, (model, pe) in networks.items():
            try:
                network = compile_network(*model, config)
            except UserError as error:
                infeasible.append({"design": design, "rows": rows, "cols": cols,
                                   "weight_kb": kb, "reason": str(error)})
                continue
            compiled[(design, rows, cols, kb)] = network
            counters, traffic = network_counters(network), host_traffic(network)
            energy = EnergyModel(config, fused_pe_factor=factor, pe=pe).price(counters, traffic)
            points.append({
                "design": design, "rows": rows, "cols": cols, "weight_kb": kb,
                "config": config.name, "phases": len(network.phases),
                "cycles": counters["cycles"], "energy_uj": energy.total() / 1e6,
                "compute_uj": energy.total("compute") / 1e6,
                "on_chip_uj": energy.total("on_chip") / 1e6,
                "external_uj": energy.total("external") / 1e6,
                "ecp5_luts": area["ecp5"]["luts"], "ecp5_ffs": area["ecp5"]["ffs"],
                "ecp5_brams": area["ecp5"]["brams"], "ice40_luts": area["ice40"]["luts"],
                "ice40_brams": area["ice40"]["brams"]})
    sweep_s = time.perf_counter() - started

    # The analytic model against the RTL, counter by counter.
    validation = []
    rng = np.random.default_rng(0)
    for spec in args.validate:
        shape, kb = spec.split(":")
        rows, cols = (int(v) for v in shape.split("x"))
        network = compiled.get(("mpq", rows, cols, int(kb)))
        if network is None:
            validation.append({"point": spec, "skipped": "not feasible or not in the grid"})
            continue
        channels, height, width = network.image_shape
        image = rng.integers(0, 256, size=(1, channels, height, width))
        tick = time.perf_counter()
        (result,) = run_network_on_rtl(network, image, build_dir=pathlib.Path(args.build_dir)
                                       / network.config.name)
        predicted = network.run_golden(image[0])[1]
        errors = {key: abs(result["counters"][key] - predicted[key]) / max(1, predicted[key])
                  for key in predicted}
        validation.append({"point": spec, "rtl_counters": result["counters"],
                           "model_counters": predicted, "max_relative_error": max(errors.values()),
                           "wall_s": time.perf_counter() - tick})
        tqdm.write(f"validated {spec}: max relative counter error {max(errors.values())}")

    keys = ("cycles", "energy_uj", "ecp5_luts", "ecp5_brams")
    mpq_points = [p for p in points if p["design"] == "mpq"]
    for index in pareto(mpq_points, keys):
        mpq_points[index]["pareto"] = True
    figures = {"network": {"mpq": args.mpq, "w4a4": args.w4a4},
               "grid": {"arrays": [f"{r}x{c}" for r, c in ARRAYS], "weight_kb": list(WEIGHT_KB),
                        "act_kb": ACT_KB},
               "pareto_keys": list(keys), "points": points, "infeasible": infeasible,
               "validation": validation,
               "analytic_model_error": max((v["max_relative_error"] for v in validation
                                            if "max_relative_error" in v), default=None),
               "area_model_fit_on": area_model["fit_on"], "sweep_s": sweep_s}
    path = write_json("dse", figures)
    written = json.loads(path.read_text())
    write_atomically(RESULTS / "dse.md", markdown(written))
    plot(written, RESULTS / "dse.png")
    print(f"wrote {path}, dse.md, dse.png: {len(points)} points, "
          f"{sum(1 for p in points if p.get('pareto'))} on the MPQ Pareto front")


def markdown(figures):
    lines = ["# Design-space sweep: VGG-9 (width 0.125) on array x weight-memory sizes", "",
             f"`{figures['command']}` at {figures['revision'][:10]}"
             f"{' (dirty tree)' if figures['worktree_dirty'] else ''}, {figures['date']}.", "",
             "Counts: the golden model (analytic); checked against RTL runs of "
             + ", ".join(v["point"] for v in figures["validation"]) + ": maximum relative "
             f"counter error **{figures['analytic_model_error']}**. Energy: Horowitz pricing at "
             "65 nm (sw/energy). Area: hw/area.py's model, ECP5 cells; block RAMs from the "
             "memory shapes. Pareto front (MPQ design) over " + ", ".join(figures["pareto_keys"])
             + ".", "",
             "| design | array | weight KB | phases | cycles | energy uJ | external uJ | "
             "ECP5 LUT4 | ECP5 DP16KD | iCE40 LUT4 | Pareto |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(figures["points"], key=lambda p: (p["design"], p["rows"] * p["cols"],
                                                      p["weight_kb"])):
        lines.append(f"| {p['design']} | {p['rows']}x{p['cols']} | {p['weight_kb']} | "
                     f"{p['phases']} | {p['cycles']:,} | {p['energy_uj']:.2f} | "
                     f"{p['external_uj']:.2f} | {p['ecp5_luts']:,} | {p['ecp5_brams']} | "
                     f"{p['ice40_luts']:,} | {'**yes**' if p.get('pareto') else ''} |")
    if figures["infeasible"]:
        lines += ["", "Infeasible points (the compiler's reason):", ""]
        lines += [f"- {p['design']} {p['rows']}x{p['cols']}, {p['weight_kb']} KB: {p['reason']}"
                  for p in figures["infeasible"]]
    return "\n".join(lines) + "\n"


def plot(figures, path):
    fig, ax = plt.subplots(figsize=(8.5, 5))
    markers = {"mpq": "o", "bitfusion": "s", "w4a4": "^"}
    points = figures["points"]
    sizes = sorted({p["weight_kb"] for p in points})
    cmap = plt.get_cmap("viridis", len(sizes))
    for design, marker in markers.items():
        chosen = [p for p in points if p["design"] == design]
        ax.scatter([p["cycles"] for p in chosen], [p["energy_uj"] for p in chosen],
                   s=[20 + p["ecp5_luts"] / 400 for p in chosen],
                   c=[cmap(sizes.index(p["weight_kb"])) for p in chosen], marker=marker,
                   edgecolors="k", linewidths=0.4, alpha=0.8, label=design)
    front = sorted((p for p in points if p.get("pareto")), key=lambda p: p["cycles"])
    for p in front:
        ax.annotate(f"{p['rows']}x{p['cols']}/{p['weight_kb']}K", (p["cycles"], p["energy_uj"]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cycles per inference")
    ax.set_ylabel("energy per inference (uJ, 65 nm)")
    ax.set_title("VGG-9 design space: marker size = ECP5 LUT4s, colour = weight memory")
    handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=f"{kb} KB")
               for i, kb in enumerate(sizes)]
    first = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="design",
                      title_fontsize=7)
    ax.add_artist(first)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 0.6), fontsize=7,
              title="weights", title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")
