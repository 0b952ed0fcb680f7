"""Energy per inference of the MPQ network against uniform-4-bit baselines,
priced from counters measured on the RTL: the paper's 1.29x claim, checked.

For each network (VGG-9 on CIFAR-10, the digits CNN) and each memory
scenario, every design of sw/energy/designs.py is compiled, run on the core's
RTL in Verilator on real test images (outputs checked bit for bit against the
PyTorch integer reference, counters against the golden model), and priced
by sw/energy/model.py: external memory, on-chip memory and compute, per
inference and per layer. Writes bench/results/energy_paper.{json,md} and
energy_paper.png, energy_paper_layers.png.

    .venv/bin/python bench/energy_paper.py \\
        --vgg9 MPQ.mpq W4A4.mpq --cifar DIR \\
        --digits MPQ.mpq W4A4.mpq [--rtl-images 2] [--accuracy-images 2000]

Scenarios: `on_chip` is the `default` configuration (8x8; 512 KB per weight
bank: every network's weights stay on chip); `sized_for_w4` is the same core
with the smallest power-of-two weight memory that holds the network in
uniform 4-bit storage (every design fits; banks are smaller and cheaper to
read); `sized_for_mpq` the smallest that holds the MPQ network: a
uniform-4-bit network that does not fit reloads its weights from DRAM for
every image (the compiler's phases).

The fused PE's energy per cycle is the fixed PE's times the area ratio that
synthesis measured (bench/results/pe_cost.json, `make cost`).
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
from hw.config import AcceleratorConfig, get_config  # noqa: E402
from sim.network_sim import first_mismatch, run_network_on_rtl  # noqa: E402
from sw.compile.network import compile_network  # noqa: E402
from sw.energy.designs import DESIGNS, host_traffic, uniform_storage  # noqa: E402
from sw.energy.model import NODE_NM, EnergyModel  # noqa: E402
from sw.energy.summary import layer_energies, network_counters, sized_for  # noqa: E402
from sw.energy.summary import measured_fused_pe_factor as fused_pe_factor  # noqa: E402
from sw.quantize.data import load_dataset  # noqa: E402
from sw.quantize.export import read_model_file  # noqa: E402
from sw.quantize.reference import IntegerModel  # noqa: E402

PAPER_RATIO = 1.29
PRIMARY = "horowitz45"
# Pricing variants: the primary and the checks of its assumptions.
PRICINGS = {
    "horowitz45": {},
    "horowitz45_dram_low": {"dram": "low"},
    "horowitz45_dram_high": {"dram": "high"},
    "bitfusion45_pe": {"pe_table": "bitfusion45"},
    "eyeriss65": {"pricing": "eyeriss65"},
}
ASSUMPTIONS = [
    f"Energies at {NODE_NM} nm, 1.0 V: 45 nm figures (Horowitz, Bit Fusion) scaled by "
    "(65/45) x (1.0/0.9)^2 = 1.78 (dynamic energy C V^2, capacitance proportional to feature "
    "size). The scaling multiplies every on-chip event alike, so it cancels in the ratios "
    "except against DRAM, which is not scaled (set by the DRAM and its interface).",
    "Dynamic energy only: leakage, the clock tree and the controller are not priced; idle PEs "
    "(cycles with no step) cost nothing (clock-gated).",
    "A w x a multiply costs a square multiply of sqrt(w a) bits on Horowitz's 8 -> 32-bit "
    "slope; an add follows his 8 -> 32-bit add slope.",
    "A fixed-PE cycle is one 4x4 multiply and one acc_width-bit add. A fused-PE cycle costs the "
    "same in every mode (all four bricks switch) times the PE area ratio measured by synthesis "
    "(bench/results/pe_cost.json); Bit Fusion's 0.118 / 0.082 pJ per cycle is the check.",
    "SRAM: energy per 64 bits at the bank's size, log-log between Horowitz's 8 KB, 32 KB and "
    "1 MB points and extended beyond them with the end slopes; an access of b bits costs b/64 "
    "of that; writes cost as reads; act_writes are 4-bit slot writes.",
    "DRAM: 1.3-2.6 nJ per 64 bits (Horowitz), the midpoint primary, both ends reported.",
    "Eyeriss pricing: every on-chip SRAM access at the global-buffer level (6x a 16-bit MAC "
    "per 16 bits), the OAB at the register-file level (1x), operand moves between PEs 2x per "
    "active PE cycle, DRAM 200x; one 16-bit MAC priced by the Horowitz rules.",
    "The fixed 4-bit array runs the same program as the Bit Fusion-style design (all W4A4), so "
    "its counts are that run's; only the PE price differs.",
]


def measure(network, images, expected, build_dir):
    """RTL runs of `images`: bit-exact against `expected` (per image, per
    layer), counters equal to the golden model's; returns the counters."""
    names = [spec.label for spec in network.specs]
    results = run_network_on_rtl(network, images, build_dir=build_dir, stall=0.1)
    counters = None
    for x, result, want in zip(images, results, expected):
        problem = first_mismatch(result["outputs"], want, names)
        if problem or not result["status"]["done"] or result["status"]["error"]:
            raise RuntimeError(f"RTL run not bit-exact: {problem or result['status']}")
        golden = network.run_golden(x)[1]
        if result["counters"] != golden:
            raise RuntimeError(f"RTL counters differ from the golden model's: "
                               f"{result['counters']} vs {golden}")
        if counters is not None and result["counters"] != counters:
            raise RuntimeError("counters differ between images: the model assumes they do not")
        counters = result["counters"]
    return counters, [r["run_s"] for r in results]


def accuracy(model_path, data, count):
    """Integer-model accuracy on the first `count` test images."""
    return IntegerModel.load(str(model_path)).accuracy(data.test_x[:count], data.test_y[:count],
                                                       batch_size=250, progress=True)


def price(counters, traffic, config, pe, factor, pricing=PRIMARY):
    return EnergyModel(config, fused_pe_factor=factor, pe=pe, **PRICINGS[pricing]).price(
        counters, traffic)


def summary(report):
    figures = report.as_dict()
    figures.pop("events")
    return figures


def run_network(name, paths, data, args, factor, progress):
    """Every design and scenario of one network."""
    models = {"mpq": read_model_file(paths[0]), "w4a4": read_model_file(paths[1])}
    widened = uniform_storage(*models["mpq"])
    sources = {"mpq": models["mpq"], "w4a4": models["w4a4"], "uniform4": widened}
    images = data.test_x[:args.rtl_images].numpy()
    references = {}
    for key, path in (("mpq", paths[0]), ("w4a4", paths[1])):
        logits, trace = IntegerModel.load(str(path))(data.test_x[:args.rtl_images],
                                                     return_codes=True)
        references[key] = [[t[i].numpy() for t in trace] + [logits[i].numpy()]
                           for i in range(len(images))]
    count = min(args.accuracy_images, len(data.test_y))
    accuracies = {"mpq": accuracy(paths[0], data, count), "w4a4": accuracy(paths[1], data, count)}
    base = get_config("default")
    scenarios = {"on_chip": base, "sized_for_w4": sized_for(*widened, base),
                 "sized_for_mpq": sized_for(*models["mpq"], base)}
    result = {"models": {key: {"path": str(path), "metadata": read_model_file(path)[0].get("metadata")}
                         for key, path in zip(("mpq", "w4a4"), paths)},
              "accuracy": {"test_images": count, **accuracies,
                           "bitfusion": accuracies["mpq"], "fixed4": accuracies["mpq"]},
              "scenarios": {}}
    for scenario, config in scenarios.items():
        runs = {}
        for source in ("mpq", "w4a4", "uniform4"):
            network = compile_network(*sources[source], config)
            reference = references["w4a4" if source == "w4a4" else "mpq"]
            progress(f"{name} {scenario}: {source} on the RTL ({config.name}, "
                     f"{len(network.phases)} phase(s), {len(images)} images)")
            build = pathlib.Path(args.build_dir) / config.name
            counters, run_s = measure(network, images, reference, build)
            runs[source] = (network, counters, host_traffic(network), run_s)
        designs = {}
        for design in DESIGNS:
            source = "uniform4" if design.storage == "uniform4" else design.network
            network, counters, traffic, run_s = runs[source]
            energies = {pricing: summary(price(counters, traffic, config, design.pe, factor, pricing))
                        for pricing in PRICINGS}
            primary = price(counters, traffic, config, design.pe, factor)
            layers = layer_energies(network, EnergyModel(config, fused_pe_factor=factor,
                                                         pe=design.pe, **PRICINGS[PRIMARY]))
            designs[design.name] = {
                "title": design.title, "network": design.network, "storage": design.storage,
                "pe": design.pe, "phases": len(network.phases), "cycles": counters["cycles"],
                "counters": counters, "traffic": traffic,
                "rtl": {"images": len(images), "bit_exact": True, "counters_equal_golden": True,
                        "sim_s_per_image": float(np.mean(run_s))},
                "energy": energies, "events": primary.as_dict()["events"], "layers": layers}
        ratios = {pricing: {d.name: designs[d.name]["energy"][pricing]["total_pj"]
                            / designs["mpq"]["energy"][pricing]["total_pj"] for d in DESIGNS}
                  for pricing in PRICINGS}
        def middle(name):   # the layers MPQ quantizes: all but the 8-bit first and last
            return sum(layer["total_pj"] for layer in designs[name]["layers"][1:-1])
        middle_ratios = {d.name: middle(d.name) / middle("mpq") for d in DESIGNS}
        first_share = {d.name: designs[d.name]["layers"][0]["total_pj"]
                       / designs[d.name]["energy"][PRIMARY]["total_pj"] for d in DESIGNS}
        result["scenarios"][scenario] = {
            "config": dataclasses.asdict(config), "designs": designs, "ratios_vs_mpq": ratios,
            # The headline figure: the whole network, primary pricing.
            "bitfusion_over_mpq": ratios[PRIMARY]["bitfusion"],
            "middle_layers_ratios_vs_mpq": middle_ratios, "first_layer_share": first_share,
            "difference_vs_bitfusion": event_differences(designs["bitfusion"], designs["mpq"])}
    return result


def variant_table(paths, w4a4_path, data, count, factor, scenarios):
    """MPQ model files side by side: accuracy, compression, and the energy
    ratio of the uniform-4-bit (Bit Fusion-style) design over each, with the
    golden model's counts (the headline run checks them against the RTL)."""
    from sw.quantize import mpq
    count = min(count, len(data.test_y))
    rows = []
    for path in paths:
        header, arrays = read_model_file(path)
        compression, storage, _ = mpq.compression_vs_uniform_w4(header, arrays)
        row = {"model": str(path), "mpq": (header.get("metadata") or {}).get("mpq"),
               "accuracy": accuracy(path, data, count), "compression_vs_uniform_w4": compression,
               "hardware_bits_per_weight": storage["hardware_average_bits"]}
        rows.append(price_variant(row, scenarios, factor))
    return {"w4a4_accuracy": accuracy(w4a4_path, data, count), "test_images": count,
            "rows": rows}


def price_variant(row, scenarios, factor):
    """A variant row's cycles and energy ratios (golden-model counts)."""
    header, arrays = read_model_file(row["model"])
    for scenario in ("on_chip", "sized_for_w4"):
        config = AcceleratorConfig(**scenarios[scenario]["config"])
        ours = compile_network(header, arrays, config)
        wide = compile_network(*uniform_storage(header, arrays), config)
        counts = {name: network_counters(net) for name, net in (("mpq", ours), ("bitfusion", wide))}
        energy = {name: price(counts[name], host_traffic(net), config, "fused", factor)
                  for name, net in (("mpq", ours), ("bitfusion", wide))}
        row[scenario] = {"cycles": counts["mpq"]["cycles"],
                         "energy_uj": energy["mpq"].total() / 1e6,
                         "bitfusion_over_mpq": energy["bitfusion"].total()
                         / energy["mpq"].total()}
    return row


def design_areas(networks):
    """Area of every design of every scenario's configuration: LUT4s and
    flip-flops from hw/area.py's model fitted on the synthesized cores
    (bench/results/area.json), block RAMs from the memory shapes. The
    uniform-4-bit designs have the same memories (their weights widened);
    the fixed design replaces the fused array by the fixed one."""
    from hw.area import estimate_area, fit_area_model, load_area_results
    try:
        results = load_area_results()
    except FileNotFoundError as error:   # `--rerender` attaches it once it exists
        return {"missing": str(error)}
    model = fit_area_model(results)
    areas = {"source": "hw/area.py estimate_area, fitted on " + ", ".join(model["fit_on"])
             + f" (bench/results/area.json, {results.get('revision', '?')[:10]})",
             "configs": {}}
    for result in networks.values():
        for body in result["scenarios"].values():
            config = AcceleratorConfig(**body["config"])
            areas["configs"][config.name] = {
                pe: estimate_area(config, pe=pe, model=model) for pe in ("fused", "fixed")}
    return areas


def event_differences(baseline, design):
    """Primary-pricing events by how much of the energy gap they make."""
    def by_name(events):
        return {e["name"]: e["energy_pj"] for e in events}
    base, ours = by_name(baseline["events"]), by_name(design["events"])
    gap = sum(base.values()) - sum(ours.values())
    rows = [{"event": name, "baseline_pj": base.get(name, 0.0), "design_pj": ours.get(name, 0.0),
             "saved_pj": base.get(name, 0.0) - ours.get(name, 0.0)}
            for name in sorted(set(base) | set(ours))]
    rows = [r for r in rows if abs(r["saved_pj"]) > 0]
    for row in rows:
        row["share_of_gap"] = row["saved_pj"] / gap if gap else 0.0
    return sorted(rows, key=lambda r: -abs(r["saved_pj"]))


def markdown(figures):
    lines = ["# Energy per inference: MPQ against uniform 4-bit (paper: 1.29x)", "",
             f"`{figures['command']}` at {figures['revision'][:10]}"
             f"{' (dirty tree)' if figures['worktree_dirty'] else ''}, {figures['date']}.", "",
             "Counts: the core's counters measured in RTL simulation (Verilator) on real test "
             "images, bit-exact against the PyTorch integer reference and equal to the golden "
             "model's; prices: sw/energy/tables (Horowitz ISSCC 2014 primary). Energies in "
             f"uJ per inference at {NODE_NM} nm. Ratio = design energy / MPQ design energy.", ""]
    for network, result in figures["networks"].items():
        accuracy = result["accuracy"]
        for scenario, body in result["scenarios"].items():
            config = body["config"]
            lines += [f"## {network}, `{scenario}` ({config['rows']}x{config['cols']}, "
                      f"weight memory {config['rows']} x {config['weight_depth']} x 16 bits = "
                      f"{config['rows'] * config['weight_depth'] * 2 // 1024} KB)", "",
                      "| design | accuracy | phases | cycles | compute | on-chip memory | "
                      "external memory | total | ratio | ratio, DRAM low / high | ratio, "
                      "Bit Fusion PE | ratio, Eyeriss |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            ratios = body["ratios_vs_mpq"]
            for name, design in body["designs"].items():
                energy = design["energy"][PRIMARY]
                lines.append(
                    f"| {design['title']} | {accuracy[name]:.2%} | {design['phases']} | "
                    f"{design['cycles']:,} | {energy['compute_pj'] / 1e6:.3f} | "
                    f"{energy['on_chip_memory_pj'] / 1e6:.3f} | "
                    f"{energy['external_memory_pj'] / 1e6:.3f} | {energy['total_pj'] / 1e6:.3f} | "
                    f"**{ratios[PRIMARY][name]:.3f}** | {ratios['horowitz45_dram_low'][name]:.3f} / "
                    f"{ratios['horowitz45_dram_high'][name]:.3f} | "
                    f"{ratios['bitfusion45_pe'][name]:.3f} | {ratios['eyeriss65'][name]:.3f} |")
            area = (figures.get("area") or {}).get("configs", {}).get(config["name"])
            if area:
                lines += ["", f"Area of this configuration ({figures['area']['source']}):", "",
                          "| PE array | ECP5 LUT4 | ECP5 FF | ECP5 DP16KD | iCE40 LUT4 | "
                          "iCE40 FF | iCE40 RAM40 |", "|---|---|---|---|---|---|---|"]
                for pe, label in (("fused", "fused (MPQ, W4A4, Bit Fusion-style)"),
                                  ("fixed", "fixed 4-bit")):
                    e, i = area[pe]["ecp5"], area[pe]["ice40"]
                    lines.append(f"| {label} | {e['luts']:,} | {e['ffs']:,} | {e['brams']:,} | "
                                 f"{i['luts']:,} | {i['ffs']:,} | {i['brams']:,} |")
            middle, share = body["middle_layers_ratios_vs_mpq"], body["first_layer_share"]
            lines += ["", "On the layers MPQ quantizes (all but the 8-bit first and last; compute "
                      "and on-chip memory), the ratios are: " + ", ".join(
                          f"{name} {value:.3f}x" for name, value in middle.items() if name != "mpq")
                      + f". The 8-bit first layer alone is {share['mpq']:.0%} of the MPQ design's "
                      f"energy and {share['bitfusion']:.0%} of the Bit Fusion-style design's."]
            lines += ["", "Where the Bit Fusion-style design spends more than the MPQ design "
                      "(primary pricing, largest first):", "",
                      "| event | Bit Fusion-style (uJ) | MPQ (uJ) | saved (uJ) | share of the gap |",
                      "|---|---|---|---|---|"]
            for row in body["difference_vs_bitfusion"][:6]:
                lines.append(f"| {row['event']} | {row['baseline_pj'] / 1e6:.3f} | "
                             f"{row['design_pj'] / 1e6:.3f} | {row['saved_pj'] / 1e6:.3f} | "
                             f"{row['share_of_gap']:.1%} |")
            lines.append("")
    for network, result in figures["networks"].items():
        variants = result.get("variants")
        if not variants:
            continue
        lines += [f"## {network}: MPQ variants (same float checkpoint and training budget)", "",
                  f"Uniform W4A4 accuracy {variants['w4a4_accuracy']:.2%} "
                  f"({variants['test_images']} test images). Counts from the golden model.", "",
                  "| MPQ model | accuracy | compression vs W4 | hardware bits/weight | cycles "
                  "(on_chip) | Bit Fusion-style / MPQ, on_chip | ..., sized_for_w4 |",
                  "|---|---|---|---|---|---|---|"]
        for row in variants["rows"]:
            mpq_settings = row["mpq"] or {}
            label = (f"{mpq_settings.get('granularity', '?')}, budget "
                     f"{mpq_settings.get('budget', 'global')}, f{mpq_settings.get('fraction')}")
            lines.append(f"| {label} | {row['accuracy']:.2%} | {row['compression_vs_uniform_w4']:.3f}x"
                         f" | {row['hardware_bits_per_weight']:.3f} | {row['on_chip']['cycles']:,} | "
                         f"{row['on_chip']['bitfusion_over_mpq']:.3f}x | "
                         f"{row['sized_for_w4']['bitfusion_over_mpq']:.3f}x |")
        lines.append("")
    lines += ["## Assumptions", ""] + [f"- {a}" for a in figures["assumptions"]] + [""]
    return "\n".join(lines)


def plot(figures, path, layers_path):
    networks = figures["networks"]
    panels = [(n, s) for n in networks for s in networks[n]["scenarios"]]
    columns = max(len(networks[n]["scenarios"]) for n in networks)
    fig, axes = plt.subplots(len(networks), columns, figsize=(4.2 * columns, 3.8 * len(networks)),
                             squeeze=False)
    axes = [[ax for row in axes for ax in row]]
    parts = (("external_memory_pj", "external memory", "tab:red"),
             ("on_chip_memory_pj", "on-chip memory", "tab:blue"),
             ("compute_pj", "compute", "tab:green"))
    for ax, (network, scenario) in zip(axes[0], panels):
        designs = networks[network]["scenarios"][scenario]["designs"]
        names = list(designs)
        bottom = np.zeros(len(names))
        for key, label, color in parts:
            values = np.array([designs[n]["energy"][PRIMARY][key] / 1e6 for n in names])
            ax.bar(names, values, bottom=bottom, label=label, color=color)
            bottom += values
        ratios = networks[network]["scenarios"][scenario]["ratios_vs_mpq"][PRIMARY]
        for i, name in enumerate(names):
            ax.text(i, bottom[i], f"{ratios[name]:.2f}x", ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{network}, {scenario}", fontsize=9)
        ax.set_ylabel("uJ per inference")
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Energy per inference (RTL counts x Horowitz prices, {NODE_NM} nm); "
                 f"paper: {PAPER_RATIO}x", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)

    first = next(iter(networks))
    designs = networks[first]["scenarios"]["on_chip"]["designs"]
    fig, ax = plt.subplots(figsize=(8, 4))
    names = [layer["name"] for layer in designs["mpq"]["layers"]]
    width = 0.8 / len(designs)
    for i, (design, body) in enumerate(designs.items()):
        ax.bar(np.arange(len(names)) + i * width, [layer["total_pj"] / 1e6 for layer in body["layers"]],
               width, label=design)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_xlabel("layer")
    ax.set_ylabel("uJ (compute + on-chip memory)")
    ax.set_title(f"{first}, on_chip: energy per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, layers_path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vgg9", nargs=2, metavar=("MPQ", "W4A4"), help="VGG-9 model files")
    parser.add_argument("--cifar", help="CIFAR-10 in the official python layout")
    parser.add_argument("--digits", nargs=2, metavar=("MPQ", "W4A4"), help="digits CNN model files")
    parser.add_argument("--vgg9-variants", nargs="*", default=[], metavar="MPQ",
                        help="other VGG-9 MPQ model files, priced beside the headline one "
                             "(golden-model counts, on_chip and sized_for_w4)")
    parser.add_argument("--rtl-images", type=int, default=2)
    parser.add_argument("--accuracy-images", type=int, default=2000)
    parser.add_argument("--build-dir", default="build/bench/energy")
    parser.add_argument("--rerender", action="store_true",
                        help="re-read energy_paper.json, attach the current area results and "
                             "rewrite the Markdown and plots (no simulation)")
    args = parser.parse_args()
    if args.rerender:
        path = RESULTS / "energy_paper.json"
        figures = json.loads(path.read_text())
        figures["area"] = design_areas(figures["networks"])
        for result in figures["networks"].values():
            for row in (result.get("variants") or {}).get("rows", []):
                price_variant(row, result["scenarios"], figures["fused_pe_factor"])
        write_atomically(path, json.dumps(figures, indent=2) + "\n")
        write_atomically(RESULTS / "energy_paper.md", markdown(figures))
        plot(figures, RESULTS / "energy_paper.png", RESULTS / "energy_paper_layers.png")
        print(f"re-rendered {path}; area: {figures['area'].get('source') or figures['area']}")
        return
    if not args.vgg9 and not args.digits:
        parser.error("give --vgg9 and/or --digits model files")
    if args.vgg9 and not args.cifar:
        parser.error("--vgg9 needs --cifar DIR (the official python layout)")
    factor = fused_pe_factor()
    started = time.perf_counter()
    networks = {}
    jobs = ([("vgg9", args.vgg9, lambda: load_dataset("cifar10", args.cifar))] if args.vgg9 else []) \
        + ([("digits", args.digits, lambda: load_dataset("digits"))] if args.digits else [])
    with tqdm(total=len(jobs), desc="networks", unit="net") as bar:
        for name, paths, loader in jobs:
            networks[name] = run_network(name, paths, loader(), args, factor, bar.write)
            bar.update()
    figures = {"paper_ratio": PAPER_RATIO, "fused_pe_factor": factor,
               "fused_pe_factor_source": "bench/results/pe_cost.json area_ratio_lut",
               "networks": networks, "assumptions": ASSUMPTIONS,
               "wall_s": time.perf_counter() - started}
    figures["area"] = design_areas(networks)
    if args.vgg9 and args.vgg9_variants:
        networks["vgg9"]["variants"] = variant_table(
            [args.vgg9[0]] + args.vgg9_variants, args.vgg9[1],
            load_dataset("cifar10", args.cifar), args.accuracy_images, factor,
            networks["vgg9"]["scenarios"])
    path = write_json("energy_paper", figures)
    written = json.loads(path.read_text())
    write_atomically(RESULTS / "energy_paper.md", markdown(written))
    plot(written, RESULTS / "energy_paper.png", RESULTS / "energy_paper_layers.png")
    for name, result in networks.items():
        for scenario, body in result["scenarios"].items():
            ratios = body["ratios_vs_mpq"][PRIMARY]
            print(f"{name} {scenario}: " + ", ".join(f"{d} {r:.3f}x" for d, r in ratios.items()))
    print(f"wrote {path} and energy_paper.md / .png")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        sys.exit(f"error: {error}")
