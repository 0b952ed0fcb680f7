"""The MPQ protocol's report (`bench/mpq_paper.py --report`): finished rows
aggregated over seeds, each placed against the line through the uniform
points at the same hardware bits, the issue's targets stated per setting,
and the markdown table and plots beside the JSON. Reads row records only:
no training, no model files.
"""

import json
import statistics

import numpy as np

from bench.common import provenance, save_figure
from common.files import write_atomically


def _energy_mean(group):
    """Per scenario, the mean over seeds of the Bit Fusion-style design's
    energy over the row's; None unless every seed's row was priced."""
    energies = [r.get("energy") for r in group]
    if not all(e and "error" not in e for e in energies):
        return None
    return {scenario: statistics.mean(e[scenario]["bitfusion_over_mpq"] for e in energies)
            for scenario in energies[0]}


def method_of(variant):
    """The curve a variant belongs to: uniform, <kind>-<criterion> for a
    variant with a budget (`mpq-switching-25`: `mpq-switching`), with its
    ablations (`chunkwise-switching-10+early`: `chunkwise-switching+early`),
    or itself."""
    if variant.startswith("uniform"):
        return "uniform"
    base, plus, changes = variant.partition("+")
    method, _, budget = base.rpartition("-")
    return method + plus + changes if budget.isdigit() else variant


def summarise(rows):
    """Per (model, width, quantizer, variant): mean and spread over seeds,
    and the distance to the line through the uniform points at equal bits."""
    groups = {}
    for row in rows:
        key = (row["model"], row["width"], row["quantizer"], row["variant"])
        groups.setdefault(key, []).append(row)
    summary = []
    for (model, width, quantizer, variant), group in groups.items():
        group.sort(key=lambda r: r["seed"])
        accuracy = [r["integer_accuracy"] for r in group]
        first = group[0]
        layers = [{"name": p["name"], "weights": p["weights"],
                   "hardware_mean_bits": statistics.mean(r["per_layer"][i]["hardware_mean_bits"] for r in group)}
                  for i, p in enumerate(first["per_layer"])]
        summary.append({
            "model": model, "width": width, "quantizer": quantizer, "variant": variant,
            "method": method_of(variant), "criterion": first["criterion"],
            "granularity": first["granularity"], "budget_percent": first["budget_percent"],
            "seeds": [r["seed"] for r in group], "train_images": first["train_images"],
            "test_images": first["test_images"], "qat_epochs": first["qat_epochs"],
            "float_epochs": first["float_epochs"], "float_accuracy": first.get("float_accuracy"),
            "integer_accuracy": accuracy, "integer_accuracy_mean": statistics.mean(accuracy),
            "integer_accuracy_spread": max(accuracy) - min(accuracy),
            "integer_accuracy_min": min(accuracy), "integer_accuracy_max": max(accuracy),
            "hardware_bits_per_weight": statistics.mean(r["hardware_bits_per_weight"] for r in group),
            "average_weight_bits": statistics.mean(r["average_weight_bits"] for r in group),
            "compression_vs_uniform_w4": statistics.mean(r["compression_vs_uniform_w4"] for r in group),
            "upgraded_weights": statistics.mean(r["upgraded_weights"] for r in group),
            "oscillating_weight_share": _mean_or_none(r["oscillating_weights"] / r["middle_weights"]
                                                      for r in group if r["oscillating_weights"] is not None),
            "upgraded_units_that_oscillated": _scored_share(group) if first["criterion"] == "switching" else None,
            "integer_accuracy_bn_reestimated": [r["integer_accuracy_bn_reestimated"] for r in group
                                                if "integer_accuracy_bn_reestimated" in r],
            "bn_reestimation_gain": [r["integer_accuracy_bn_reestimated"] - r["integer_accuracy"] for r in group
                                     if "integer_accuracy_bn_reestimated" in r],
            "seconds_per_epoch": statistics.mean(s for r in group for s in r["seconds_per_epoch"]),
            "bitfusion_over_mpq": _energy_mean(group),
            "per_layer": layers})
    for entry in summary:
        uniform = sorted(((s["hardware_bits_per_weight"], s["integer_accuracy_mean"], s["integer_accuracy_spread"])
                          for s in summary if _same_setting(s, entry) and s["method"] == "uniform"))
        entry["vs_uniform_line"] = entry["uniform_line_at_same_bits"] = None
        entry["beyond_spread"] = None
        if len(uniform) >= 2:
            bits, accuracy, spread = zip(*uniform)
            x = entry["hardware_bits_per_weight"]
            line = float(np.interp(x, bits, accuracy))
            entry["uniform_line_at_same_bits"] = line
            entry["vs_uniform_line"] = entry["integer_accuracy_mean"] - line
            # the spread to beat: this row's and that of the uniform points around it
            near = [s for b, _, s in uniform if b <= x][-1:] + [s for b, _, s in uniform if b >= x][:1]
            bound = max([entry["integer_accuracy_spread"], *near])
            entry["beyond_spread"] = len(entry["seeds"]) >= 2 and abs(entry["vs_uniform_line"]) > bound
    order = {method: i for i, method in enumerate(METHOD_ORDER)}
    summary.sort(key=lambda s: (s["model"], s["width"], s["quantizer"], order.get(s["method"], len(order)),
                                s["method"], s["hardware_bits_per_weight"]))
    return summary


METHOD_ORDER = ("uniform", "mpq-switching", "mpq-random", "mpq-fisher", "layerwise-fisher",
                "chunkwise-switching", "chunkwise-random")


def _ratios(energy):
    return "" if energy is None else f"{energy['on_chip']:.3f}x, {energy['sized_for_w4']:.3f}x"


def _bn_reestimated(entry):
    """Mean accuracy after batch-norm re-estimation, with the seeds it covers
    where fewer than the row's (rows finished before it existed lack it)."""
    values = entry["integer_accuracy_bn_reestimated"]
    if not values:
        return ""
    covered = "" if len(values) == len(entry["seeds"]) else f" ({len(values)} of {len(entry['seeds'])} seeds)"
    return f"{100 * statistics.mean(values):.2f}{covered}"


def _mean_or_none(values):
    values = list(values)
    return statistics.mean(values) if values else None


def _scored_share(group):
    units = sum(a.get("units", 0) for r in group for a in r["assignments"])
    scored = sum(a.get("scored_units", 0) for r in group for a in r["assignments"])
    return scored / units if units else None


def _same_setting(a, b):
    return (a["model"], a["width"], a["quantizer"]) == (b["model"], b["width"], b["quantizer"])


def _headroom(title, w2, w4):
    """What the setting leaves mixed precision to win: uniform W4 over W2.
    A gap within the seed spread cannot put any method between them beyond
    the spread."""
    gap = w4["integer_accuracy_mean"] - w2["integer_accuracy_mean"]
    spread = max(w2["integer_accuracy_spread"], w4["integer_accuracy_spread"])
    seeds = min(len(w2["seeds"]), len(w4["seeds"]))
    verdict = ("undecided: fewer than 2 seeds" if seeds < 2 else
               "within the seed spread: this setting cannot separate the methods" if abs(gap) <= spread
               else "beyond the seed spread")
    return (f"* {title}: headroom, uniform W4 over W2: {100 * gap:+.2f} points (spreads "
            f"{100 * w2['integer_accuracy_spread']:.2f} and {100 * w4['integer_accuracy_spread']:.2f}; "
            f"seeds {len(w2['seeds'])} and {len(w4['seeds'])}): **{verdict}**")


def _against(what, a, b, name_a, name_b):
    """One line: `a`'s mean accuracy against `b`'s, judged by the larger seed spread."""
    difference = a["integer_accuracy_mean"] - b["integer_accuracy_mean"]
    bound = max(a["integer_accuracy_spread"], b["integer_accuracy_spread"])
    verdict = ("undecided: fewer than 2 seeds" if min(len(a["seeds"]), len(b["seeds"])) < 2
               else f"{name_a} better" if difference > bound else f"{name_b} better" if -difference > bound
               else "no difference beyond the seed spread")
    return (f"* {what}: {100 * difference:+.2f} points (spreads {100 * a['integer_accuracy_spread']:.2f} and "
            f"{100 * b['integer_accuracy_spread']:.2f}; seeds {len(a['seeds'])} and {len(b['seeds'])}): "
            f"**{verdict}**")


def targets(summary, overheads):
    """The issue's targets, stated per setting from the summary."""
    lines = []
    for setting in sorted({(s["model"], s["width"], s["quantizer"]) for s in summary}):
        entries = [s for s in summary if (s["model"], s["width"], s["quantizer"]) == setting]
        by_variant = {s["variant"]: s for s in entries}
        title = f"{setting[0]} width {setting[1]:g}, {setting[2]}"
        w4 = by_variant.get("uniform-w4")
        mpq_entries = [s for s in entries if s["budget_percent"] is not None]
        w2 = by_variant.get("uniform-w2")
        if w4 and w2:
            lines.append(_headroom(title, w2, w4))
        if w4:
            candidates = [s for s in mpq_entries if s["compression_vs_uniform_w4"] >= 1.7]
            hits = [s for s in candidates if s["integer_accuracy_mean"] >= w4["integer_accuracy_min"]]
            best = max(candidates, key=lambda s: s["integer_accuracy_mean"], default=None)
            lines.append(f"* {title}: MPQ at >= 1.7x vs W4A4 within W4A4's seed range "
                         f"({100 * w4['integer_accuracy_min']:.2f}-{100 * w4['integer_accuracy_max']:.2f}%): "
                         + ("**met** by " + ", ".join(f"{s['variant']} ({100 * s['integer_accuracy_mean']:.2f}%, "
                                                      f"{s['compression_vs_uniform_w4']:.2f}x)" for s in hits)
                            if hits else "not met" + (f"; best at >= 1.7x: {best['variant']} "
                                                      f"{100 * best['integer_accuracy_mean']:.2f}% at "
                                                      f"{best['compression_vs_uniform_w4']:.2f}x" if best else "")))
        # every method's sweep (per group, per chunk, ...); the switching one
        # first, since the controls compare against it
        methods = sorted({s["method"] for s in mpq_entries if s["budget_percent"] is not None},
                         key=lambda m: (m != "mpq-switching", m))
        for method in methods:
            curve = sorted((s for s in entries if s["method"] == method and s["vs_uniform_line"] is not None),
                           key=lambda s: s["budget_percent"])
            if not curve:
                continue
            # 0% spends no extra bit: it is the reference, not a budget
            above = [s for s in curve if s["budget_percent"] > 0 and s["vs_uniform_line"] > 0 and s["beyond_spread"]]
            lines.append(f"* {title}: {method} above the uniform line by more than the seed spread at "
                         f"{len(above)} budget(s) ({', '.join(s['variant'] for s in above) or 'none'}; target >= 2): "
                         + ("**met**" if len(above) >= 2 else "not met") + "; vs line per budget: "
                         + ", ".join(f"{s['budget_percent']}% {100 * s['vs_uniform_line']:+.2f}"
                                     f"{'' if len(s['seeds']) >= 2 else ' (1 seed)'}" for s in curve)
                         + (" (0%: the MPQ setup without any extra bit: fine-grid step initialisation, learning-"
                            "rate rule; its distance to the line is not the extra bit's)" if
                            curve[0]["budget_percent"] == 0 else ""))
        # the criterion against its random control, per unit and budget
        sweeps = sorted((s for s in entries if s["method"].endswith("-switching") and s["budget_percent"]),
                        key=lambda s: (s["method"], s["budget_percent"]))
        for s in sweeps:
            unit = s["method"].removesuffix("-switching")
            control = by_variant.get(f"{unit}-random-{s['budget_percent']}")
            if control:
                lines.append(_against(f"{title}: {s['method']} against {control['method']} at "
                                      f"{s['budget_percent']}%", s, control, "switching", "random"))
        # each ablation (item 5) against the variant it changes
        for s in sorted((s for s in entries if "+" in s["variant"]), key=lambda s: s["variant"]):
            base = by_variant.get(s["variant"].partition("+")[0])
            if base:
                lines.append(_against(f"{title}: ablation {s['variant']} against {base['variant']}",
                                      s, base, "the ablation", "without it"))
        gains = [g for s in entries for g in s["bn_reestimation_gain"]]
        if gains:
            lines.append(f"* {title}: batch-norm re-estimation after retraining (item 5), accuracy change over "
                         f"{len(gains)} row(s): mean {100 * statistics.mean(gains):+.2f} points, "
                         f"{100 * min(gains):+.2f} to {100 * max(gains):+.2f}")
    # item 4: the paper-era quantizer against LSQ, variant by variant
    lsq = {(s["model"], s["width"], s["variant"]): s for s in summary if s["quantizer"] == "lsq"}
    for s in sorted((s for s in summary if s["quantizer"] == "stats"),
                    key=lambda s: (s["model"], s["width"], s["variant"])):
        other = lsq.get((s["model"], s["width"], s["variant"]))
        if other:
            lines.append(_against(f"{s['model']} width {s['width']:g}: {s['variant']}, paper-era quantizer "
                                  f"(stats) against LSQ", s, other, "stats", "LSQ"))
    for folder, overhead in sorted(overheads.items()):
        percent = overhead["overhead_percent"]
        # measured before the assignments were timed apart: per step, with them in a short run
        what = ("per QAT epoch (tracking per step, and the row's assignments spread over its epochs)"
                if "assignment_seconds" in overhead else "per QAT step")
        lines.append(f"* {folder}: tracking overhead {what}: " + ", ".join(
            f"{k} {v:+.1f}%" for k, v in percent.items()) + " (target under 10%: "
            + ("**met**" if max(percent.values()) < 10 else "not met") + ")")
    return lines


def write_report(rows, protocols, overheads, stem):
    summary = summarise(rows)
    figures = {"summary": summary, "protocols": protocols, "overhead": overheads,
               "targets": targets(summary, overheads),
               "rows": [{k: v for k, v in r.items() if k not in ("switch_histogram",)} for r in rows],
               "row_commands": sorted({r["command"] for r in rows}),
               "row_revisions": sorted({r["revision"] for r in rows}),
               "notes": ("Integer accuracy only: each row's exported model file run by the integer reference "
                         "on the test split. Every row of a setting starts from the same float checkpoint; "
                         "a seed changes the calibration sample, the data order and augmentation, and the "
                         "random criterion's draw. Spread: max - min over seeds. vs_uniform_line: mean "
                         "accuracy minus the line through the uniform W2/W3/W4 means at the same hardware "
                         "bits per weight.")}
    write_atomically(stem + ".json", json.dumps({**provenance(), **figures}, indent=1) + "\n")
    write_markdown(figures, stem + ".md")
    plot(summary, rows, stem)
    return figures


def write_markdown(figures, path):
    summary = figures["summary"]
    lines = ["# MPQ paper experiment: the protocol (measured)", "",
             "Integer accuracy: each row's exported model file run by the integer reference (int64) on "
             "the whole test split. Bits per weight: every bit the hardware stores for the weights "
             "(hardware groups of 16 lanes at the group's precision, a 3-bit tag per group, per-channel "
             "16-bit requant multipliers and the per-layer shift) over the weight count; first and last "
             "layers 8-bit, activations 4-bit in every row. Spread: max - min over seeds. `vs line`: "
             "accuracy minus the line through the uniform W2/W3/W4 points at the same bits; `*` where it "
             "exceeds the seed spread. Made by `bench/mpq_paper.py` (docs/mpq.md: the protocol, the "
             "criteria, how to run a slice and resume).", "",
             f"Rows made by: {'; '.join(f'`{c}`' for c in figures['row_commands'])}", "",
             "## Against the targets", "", *figures["targets"], ""]
    for setting in sorted({(s["model"], s["width"], s["quantizer"]) for s in summary}):
        entries = [s for s in summary if (s["model"], s["width"], s["quantizer"]) == setting]
        first = entries[0]
        lines += [f"## {setting[0]}, width {setting[1]:g}, quantizer {setting[2]}", "",
                  f"{first['train_images']} training images, {first['test_images']} test images, "
                  f"{first['float_epochs']} float epochs"
                  + (f" (float accuracy {100 * first['float_accuracy']:.2f}%)" if first["float_accuracy"] else "")
                  + f", {first['qat_epochs']} QAT epochs per row.", "",
                  "| variant | seeds | integer acc. % | spread | bits/weight (hw) | vs W4 | vs line | "
                  "BN re-estimated | upgraded units that oscillated | oscillating weights | s/epoch | "
                  "Bit Fusion-style energy / this, on chip, sized for W4 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s in entries:
            line = s["vs_uniform_line"]
            scored = s["upgraded_units_that_oscillated"]
            oscillating = s["oscillating_weight_share"]
            lines.append(
                f"| {s['variant']} | {len(s['seeds'])} | {100 * s['integer_accuracy_mean']:.2f} | "
                f"{100 * s['integer_accuracy_spread']:.2f} | {s['hardware_bits_per_weight']:.3f} | "
                f"{s['compression_vs_uniform_w4']:.3f}x | "
                f"{'' if line is None else f'{100 * line:+.2f}'}{'*' if s['beyond_spread'] else ''} | "
                f"{_bn_reestimated(s)} | "
                f"{'' if scored is None else f'{100 * scored:.0f}%'} | "
                f"{'' if oscillating is None else f'{100 * oscillating:.2f}%'} | {s['seconds_per_epoch']:.0f} | "
                f"{_ratios(s['bitfusion_over_mpq'])} |")
        layered = [s for s in entries if s["variant"] == "uniform-w2" or s["budget_percent"] is not None]
        if layered:
            names = [p["name"] for p in layered[0]["per_layer"]]
            lines += ["", "Mean hardware-group precision per layer (bits):", "",
                      "| variant | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
            for s in layered:
                lines.append(f"| {s['variant']} | " + " | ".join(f"{p['hardware_mean_bits']:.2f}"
                                                                  for p in s["per_layer"]) + " |")
        lines.append("")
    lines += ["`upgraded units that oscillated` (switching): the share of the upgraded units in which "
              "some weight oscillated; the rest of the budget went by switch count (drift), then at random. "
              "`oscillating weights`: middle-layer weights that oscillated at least once over retraining "
              "(the tracker runs in every MPQ row, whatever the criterion). "
              "`BN re-estimated`: integer accuracy of the same retrained network after its batch-norm "
              "running statistics are recomputed over `bn_reestimate_images` training images (5,120 by "
              "default; Nagel et al. 2022; `sw.quantize.convert.reestimate_batch_norm`), no retraining. "
              "`Bit Fusion-style energy / this`: the energy per inference of the same network in uniform "
              "4-bit storage on the same fused-PE core over the row's own, on the default 8x8 core with "
              "every weight on chip and with a weight memory sized for 4-bit weights (issue 15's "
              "scenarios, sw/energy/summary.py, golden-model counts; bench/energy_paper.py measures the "
              "same on the RTL), mean over seeds.", ""]
    write_atomically(path, "\n".join(lines) + "\n")


def plot(summary, rows, stem):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = sorted({(s["model"], s["width"], s["quantizer"]) for s in summary})
    if not settings:
        return
    styles = {"uniform": ("k", "o", "--"), "mpq-switching": ("C0", "o", "-"), "mpq-random": ("C1", "s", ":"),
              "mpq-fisher": ("C2", "^", "-."), "layerwise-fisher": ("C3", "D", ":"),
              "chunkwise-switching": ("C4", "v", "-"), "chunkwise-random": ("C5", "P", ":")}
    figure, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 4.8), squeeze=False)
    for axis, setting in zip(axes[0], settings):
        entries = [s for s in summary if (s["model"], s["width"], s["quantizer"]) == setting]
        for index, method in enumerate(sorted({s["method"] for s in entries})):
            points = sorted((s for s in entries if s["method"] == method), key=lambda s: s["hardware_bits_per_weight"])
            color, marker, line = styles.get(method, (f"C{4 + index % 6}", "v", ""))
            x = [s["hardware_bits_per_weight"] for s in points]
            y = np.array([100 * s["integer_accuracy_mean"] for s in points])
            low = y - np.array([100 * s["integer_accuracy_min"] for s in points])
            high = np.array([100 * s["integer_accuracy_max"] for s in points]) - y
            axis.errorbar(x, y, yerr=[low, high], color=color, marker=marker, linestyle=line, capsize=3,
                          label=method)
            for s in points:
                if s["budget_percent"] is not None:
                    axis.annotate(f"{s['budget_percent']}%", (s["hardware_bits_per_weight"],
                                                              100 * s["integer_accuracy_mean"]),
                                  fontsize=6, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel("hardware bits per weight (weights + tags + scales)")
        axis.set_ylabel("integer test accuracy (%), bars: min-max over seeds")
        axis.set_title(f"{setting[0]} width {setting[1]:g}, {setting[2]}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, f"{stem}_pareto.png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(1, len(settings), figsize=(6.5 * len(settings), 3.6), squeeze=False)
    for axis, setting in zip(axes[0], settings):
        entries = [s for s in summary if (s["model"], s["width"], s["quantizer"]) == setting
                   and (s["variant"] == "uniform-w2" or s["budget_percent"] is not None)]
        width = 0.8 / max(1, len(entries))
        for i, s in enumerate(entries):
            axis.bar(np.arange(len(s["per_layer"])) + i * width, [p["hardware_mean_bits"] for p in s["per_layer"]],
                     width=width, label=s["variant"])
        if entries:
            axis.set_xticks(np.arange(len(entries[0]["per_layer"])) + 0.4 - width / 2)
            axis.set_xticklabels([p["name"] for p in entries[0]["per_layer"]], fontsize=7)
        axis.set_xlabel("layer")
        axis.set_ylabel("mean hardware-group precision (bits)")
        axis.set_title(f"{setting[0]} width {setting[1]:g}, {setting[2]}")
        axis.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, f"{stem}_layers.png", dpi=120)
    plt.close(figure)

    histograms = [r for r in rows if "switch_histogram" in r and r["variant"].endswith("-25")]
    if histograms:
        figure, axes = plt.subplots(1, len(histograms), figsize=(5.5 * len(histograms), 3.5), squeeze=False)
        for axis, row in zip(axes[0], histograms):
            h = row["switch_histogram"]
            for name in ("oscillations", "drifts"):
                counts = np.array(h[name])
                axis.bar(np.arange(len(counts)) + (0.2 if name == "drifts" else -0.2), counts, width=0.4,
                         label=name, log=True)
            axis.set_xlabel(f"switches per weight over retraining (clipped at {h['clipped_at']})")
            axis.set_ylabel("weights")
            axis.set_title(row["id"], fontsize=8)
            axis.legend()
        figure.tight_layout()
        save_figure(figure, f"{stem}_switches.png", dpi=120)
        plt.close(figure)
