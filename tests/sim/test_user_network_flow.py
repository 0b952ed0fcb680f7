"""Torchvision-style ResNets (BasicBlock, Bottleneck) written outside the project
(tests/data/user_models/torchvision_resnet.py) through the whole flow by the
`mpq` command alone: float training on the 8x8 digits, W4A4 retraining from
it, export, compile, and the RTL on Verilator bit-exact against the integer
reference."""

import json
import os

import pytest

from sw.cli import main as mpq
from sw.quantize.export import read_model_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESNET = os.path.join(ROOT, "tests", "data", "user_models", "torchvision_resnet.py")
QUICK = ["--dataset", "digits", "--limit-train", "256", "--limit-test", "64", "--batch-size",
         "32", "--no-progress", "--threads", "2"]


@pytest.mark.cocotb
@pytest.mark.parametrize("name,blocks", [("tiny_resnet", 3), ("tiny_bottleneck_resnet", 3)])
def test_a_torchvision_style_resnet_runs_bit_exact_on_the_rtl(tmp_path, monkeypatch, rtl_build, name,
                                                                blocks):
    # `mpq sim` builds the core under ./build/sim/network: point it at the
    # session's shared build folder, so that other RTL tests' build is reused.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "build" / "sim").mkdir(parents=True)
    (tmp_path / "build" / "sim" / "network").symlink_to(rtl_build, target_is_directory=True)
    model = f"{os.path.relpath(RESNET, tmp_path)}:{name}"   # relative, as a user types it
    assert mpq(["train", "--model", model, "--epochs", "2", "--out", "float", *QUICK]) == 0
    assert mpq(["train", "--model", model, "--epochs", "1", "--precision", "w4a4",
                "--init", "float/checkpoint.pt", "--out", "w4a4", *QUICK]) == 0
    assert mpq(["export", "w4a4/checkpoint.pt", "-o", "model.mpq"]) == 0
    header, _ = read_model_file("model.mpq")
    assert header["metadata"]["model"] == f"{RESNET}:{name}"
    names = [layer["name"] for layer in header["layers"]]
    assert names[0] == f"{name}.conv1" and names[-1] == f"{name}.fc"
    assert sum(len(layer["inputs"]) == 2 for layer in header["layers"]) == blocks
    assert mpq(["compile", "model.mpq", "--config", "small", "-o", "compiled"]) == 0
    if name == "tiny_bottleneck_resnet":
        # The down-sampling block's 1x1 conv1 reads the block input (which the
        # stride-2 projection reads parity-split) in storage order.
        layers = json.loads((tmp_path / "compiled" / "manifest.json").read_text())["layers"]
        passing = [layer["name"] for layer in layers if layer["input_split"]]
        assert passing == [f"{name}.layers.1.0.conv1"]
    assert mpq(["sim", "compiled", "--images", "3", "--jobs", "1"]) == 0
    report = json.loads((tmp_path / "compiled" / "sim_report.json").read_text())
    assert report["bit_exact"] and report["mismatches"] == [] and report["images"] == 3
