"""`mpq report [--compiled DIR] -o DIR`: the measured energy, area, design
space, performance and FPGA figures in one Markdown report with its plots.

It gathers what the benches wrote (bench/results/*.json, .md, .png; each
names the command and revision that made it) and, with `--compiled`, prices
a compiled network of your own (`mpq compile`) with the energy model. A
result that is missing is listed with the command that makes it.
"""

import json
import pathlib
import shutil

from common.arguments import add_force
from common.errors import UserError

RESULTS = pathlib.Path(__file__).resolve().parents[2] / "bench" / "results"
# (title, result name, command that makes it), in report order.
SECTIONS = (
    ("Energy against uniform 4-bit designs (the paper's 1.29x)", "energy_paper",
     ".venv/bin/python bench/energy_paper.py --vgg9 MPQ W4A4 --cifar DIR --digits MPQ W4A4"),
    ("Design-space sweep", "dse", ".venv/bin/python bench/dse.py MPQ.mpq W4A4.mpq"),
    ("Area by synthesis", "area", ".venv/bin/python bench/area.py"),
    ("Mixed-precision retraining", "mpq_paper", ".venv/bin/python bench/mpq_paper.py"),
)
SUMMARIES = (
    ("PE cost", "pe_cost", "make cost"),
    ("Core performance", "core_perf", ".venv/bin/python bench/core_perf.py"),
    ("FPGA builds", "fpga_builds", ".venv/bin/python bench/fpga_builds.py --collect"),
)


def _provenance(figures):
    return (f"`{figures.get('command', '?')}` at {str(figures.get('revision', '?'))[:10]}, "
            f"{figures.get('date', '?')}")


def _demote(markdown):
    """A result's own Markdown under a section: its headings one level down,
    its first title dropped."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join("#" + line if line.startswith("#") else line for line in lines)


def _summary(name, figures):
    if name == "pe_cost":
        return (f"Fused PE / fixed 4-bit PE: {figures['area_ratio_lut']:.3f}x iCE40 LUTs, "
                f"{figures['area_ratio_generic_cells']:.3f}x generic cells at "
                f"{figures['acc_width']}-bit accumulators.")
    if name == "core_perf":
        rows = figures.get("runs") or figures.get("rows") or []
        lines = ["| run | cycles | utilisation |", "|---|---|---|"]
        for row in rows[:24]:
            cycles = row.get("rtl_cycles", row.get("cycles")) if isinstance(row, dict) else None
            if cycles is not None:
                label = " ".join(str(row.get(k)) for k in ("precision", "layer") if k in row)
                util = row.get("utilization")
                lines.append(f"| {label or '-'} | {cycles:,} | "
                             f"{'' if util is None else f'{util:.1%}'} |")
        return "\n".join(lines) if len(lines) > 2 else "See bench/results/core_perf.json."
    if name == "fpga_builds":
        lines = ["| board | device | LUTs | FFs | block RAMs | fmax MHz | clock MHz | timing met | "
                 "bitstream |", "|---|---|---|---|---|---|---|---|---|"]
        for board, row in figures.get("boards", {}).items():
            brams = (row.get("block_rams") or {}).get("used")
            lines.append(f"| {board} | {row.get('device')} | {row.get('luts')} | {row.get('ffs')} "
                         f"| {brams} | {row.get('fmax_mhz')} | {row.get('clock_mhz')} | "
                         f"{row.get('timing_met')} | {'yes' if row.get('built') else 'no'} |")
        return "\n".join(lines)
    return ""


def _network_section(directory):
    from sw.compile.artifacts import read_compiled
    from sw.energy.designs import host_traffic
    from sw.energy.model import EnergyModel
    from sw.energy.summary import energy_summary, measured_fused_pe_factor, network_counters
    from sw.quantize.export import read_model_file

    network, manifest, _ = read_compiled(directory)
    header, arrays = read_model_file(pathlib.Path(directory) / "model.mpq")
    summary = energy_summary(header, arrays, network)
    report = EnergyModel(network.config, fused_pe_factor=measured_fused_pe_factor()).price(
        network_counters(network), host_traffic(network))
    lines = [f"## Your network: `{directory}` on `{manifest['config']}`", "",
             f"Energy per inference: **{summary['per_inference_uj']:.3f} uJ** ({summary['pricing']};"
             " counts from the golden model, which the RTL tests hold equal to the RTL's). "
             "Uniform 4-bit storage of the same network: "
             f"{summary['baseline_over_this']['bitfusion_style']:.2f}x on fused PEs, "
             f"{summary['baseline_over_this']['fixed_4bit_array']:.2f}x on a fixed 4-bit array.",
             "", "| event | count | pJ each | uJ | source |", "|---|---|---|---|---|"]
    for event in sorted(report.events, key=lambda e: -e.energy_pj):
        if event.count:
            lines.append(f"| {event.name} | {event.count:,} | {event.unit_pj:.4g} | "
                         f"{event.energy_pj / 1e6:.4f} | {event.source} |")
    return "\n".join(lines), summary


def write_report(out_dir, results=RESULTS, compiled=None, force=False):
    from common.files import replacing_directory

    results = pathlib.Path(results)
    parts = ["# mpq report: energy, area, design space, performance", ""]
    missing, found = [], 0
    inputs = [results] + ([compiled] if compiled else [])
    with replacing_directory(out_dir, "report", inputs=inputs, force=force) as staging:
        for title, name, command in SECTIONS:
            markdown = results / f"{name}.md"
            if not markdown.exists():
                missing.append((title, command))
                continue
            found += 1
            # The result's Markdown names its own command and revision.
            parts += [f"## {title}", "", _demote(markdown.read_text()), ""]
            for png in sorted(results.glob(f"{name}*.png")):
                shutil.copy(png, staging / png.name)
                parts += [f"![{png.stem}]({png.name})", ""]
        for title, name, command in SUMMARIES:
            path = results / f"{name}.json"
            if not path.exists():
                missing.append((title, command))
                continue
            found += 1
            figures = json.loads(path.read_text())
            parts += [f"## {title}", "", f"From {_provenance(figures)}.", "",
                      _summary(name, figures), ""]
        if compiled:
            section, summary = _network_section(compiled)
            parts += [section, ""]
            (staging / "network_energy.json").write_text(json.dumps(summary, indent=1) + "\n")
        if not found and not compiled:
            raise UserError(f"no results in {results}: run the benches first "
                            "(e.g. `make cost`, bench/energy_paper.py), or pass --compiled DIR")
        if missing:
            parts += ["## Not measured yet", ""] + [f"- {title}: `{command}`"
                                                     for title, command in missing] + [""]
        (staging / "report.md").write_text("\n".join(parts))
    return pathlib.Path(out_dir) / "report.md", missing


def run_report(args):
    path, missing = write_report(args.output, args.results, args.compiled, args.force)
    print(f"wrote {path}" + (f" ({len(missing)} result(s) not measured yet: listed at its end)"
                             if missing else ""))
    return 0


def register(subparsers):
    parser = subparsers.add_parser("report", help="energy, area, design-space and performance "
                                                  "figures in one Markdown report")
    parser.add_argument("-o", "--output", default="build/report",
                        help="output directory, replaced as a whole (default %(default)s)")
    parser.add_argument("--results", default=str(RESULTS),
                        help="bench results directory (default bench/results)")
    parser.add_argument("--compiled", help="also price this compiled network (`mpq compile` output)")
    add_force(parser)
    parser.set_defaults(run=run_report)
