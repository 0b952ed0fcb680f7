"""`mpq report`: gathers bench results, prices a compiled network, names
what is missing, and writes nothing when there is nothing to report."""

import json

import numpy as np

from sw.cli import main as mpq
from sw.compile.artifacts import write_compiled
from tests.sim.conftest import make_model_file


def test_report_gathers_results_and_names_the_missing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "energy_paper.md").write_text("# Energy\n\n## vgg9\n\nratio 1.23\n")
    (results / "energy_paper.json").write_text(json.dumps({"command": "x", "revision": "abc"}))
    (results / "energy_paper.png").write_bytes(b"\x89PNG\r\n")
    (results / "pe_cost.json").write_text(json.dumps({
        "command": "make cost", "revision": "abc", "date": "today", "area_ratio_lut": 1.5,
        "area_ratio_generic_cells": 1.4, "acc_width": 24}))
    out = tmp_path / "report"
    assert mpq(["report", "-o", str(out), "--results", str(results)]) == 0
    text = (out / "report.md").read_text()
    assert "### vgg9" in text and "ratio 1.23" in text
    assert "1.500x iCE40 LUTs" in text
    assert (out / "energy_paper.png").exists()
    # Every section without a result is listed with the command that makes it.
    assert "## Not measured yet" in text and "bench/dse.py" in text and "bench/area.py" in text


def test_report_prices_a_compiled_network(tmp_path):
    model = make_model_file(tmp_path / "mixed.mpq", precision="w4a4", mixed=True)
    compiled = tmp_path / "compiled"
    write_compiled(str(model), "small", compiled, np.zeros((1, 1, 8, 8), np.uint8))
    out = tmp_path / "report"
    assert mpq(["report", "-o", str(out), "--results", str(tmp_path / "none"),
                "--compiled", str(compiled)]) == 0
    summary = json.loads((out / "network_energy.json").read_text())
    assert summary["per_inference_uj"] > 0
    assert summary["baseline_over_this"]["bitfusion_style"] > 1.0
    assert "weights.read" in (out / "report.md").read_text()


def test_nothing_to_report_is_an_error_with_no_output(tmp_path, capsys):
    out = tmp_path / "report"
    assert mpq(["report", "-o", str(out), "--results", str(tmp_path / "empty")]) == 2
    assert "run the benches first" in capsys.readouterr().err
    assert not out.exists()
