"""The serial path end to end: the host program's link code (sw/fpga/)
drives the simulated board top (core, frame bridge, UART; Verilator under
cocotb) bit by bit over the UART lines, with a shortened divisor. Random
compiled layers and a small compiled network come back bit-exact, with the
cycle count (the one counter `ice40` builds); damaged frames (a flipped bit, a frame cut short, a corrupted
reply) are refused or detected and the link recovers."""

import numpy as np
import pytest
import torch
from torch import nn

from hw.config import get_config
from sim.board_sim import run_on_simulated_board
from sw.compile import compile_layer, random_input, random_layer_spec
from sw.compile.artifacts import write_compiled
from sw.fpga.cases import case_from_layer, read_cases
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import write_model_file
from sw.quantize.models import Normalize

pytestmark = pytest.mark.cocotb

CONFIG = "ice40"


def tiny_network_dir(directory, images=2):
    """A two-layer network (8-bit input conv with pooling, then a linear
    layer) compiled by `mpq compile`'s code for CONFIG."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (32, 1, 6, 6), generator=generator).to(torch.uint8)
    model = nn.Sequential(Normalize((0.4,), (0.25,)),
                          nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 4))
    network = quantize_network(model, parse_precision("w4a4,first=w8"), (1, 6, 6))
    calibrate(network, x)
    model_path = directory / "tiny.mpq"
    write_model_file(network.eval(), str(model_path))
    write_compiled(model_path, CONFIG, directory / "compiled", x[:images].numpy())
    return directory / "compiled"


def test_layers_and_network_over_the_uart(tmp_path):
    config = get_config(CONFIG)
    rng = np.random.default_rng(5)
    cases = []
    strides = {} if config.stride2 else {"stride": 1, "split_output": False}
    for index in range(3):
        spec = random_layer_spec(rng, name=f"layer{index}", max_channels=6, max_size=5,
                                 **strides)
        cases.append(case_from_layer(compile_layer(spec, config), random_input(rng, spec)))
    config_name, network_cases = read_cases(tiny_network_dir(tmp_path))
    assert config_name == CONFIG and len(network_cases) == 2
    cases += network_cases

    outcome = run_on_simulated_board(
        cases, config, build_dir=tmp_path / "sim",
        # Request 3 gets a flipped bit, request 6 is cut short, and the
        # reply to the 2nd request that reads words gets a flipped bit.
        damage=["flip@3", "cut@6", "reply@2"])
    results, stats = outcome["results"], outcome["stats"]
    assert [r["name"] for r in results] == [c["name"] for c in cases]
    for result in results:
        assert result["bit_exact"], f"{result['name']}: {result['mismatches']} {result['status']}"
        assert result["counters_match"], f"{result['name']}: {result['wrong_counters']}"
    # Each damage cost one retry: the bridge refused the flipped frame
    # (BAD_CRC) and the cut one (TIMEOUT), the host dropped the bad reply.
    assert stats["refused"] == {"BAD_CRC": 1, "TIMEOUT": 1, "NO_REPLY": 1}, stats
    assert stats["retries"] == 3
