"""A small residual network from sw.quantize through the whole flow: a stem,
one torchvision-style BasicBlock (stride 1 with an identity shortcut or a
1x1 projection with batch norm and no ReLU, whose codes are signed; or
stride 2, its first convolution and projection reading the block's input
parity-split) and a
flatten + Linear classifier, uniform or with the MPQ extra bit (2-bit
coarse groups and 3-bit fine ones mixed within each layer of the block),
exported (model file version 2), compiled
(`compile_network` follows the graph: each layer reads the region of the
layer its `inputs` name, the block's second convolution adds its shortcut
from the producer's region), and run by the golden model and the RTL, every
layer bit-exact against the PyTorch integer reference (sw/quantize/reference.py)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from common.errors import UserError
from hw.config import get_config
from sim.network_sim import first_mismatch, run_network_on_rtl
from sw.compile.lower import compile_layer
from sw.compile.network import compile_network, layer_specs
from sw.quantize import mpq
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.resnet import BasicBlock
from tests.sim.conftest import assert_bit_exact_on_rtl, randomize_batch_norms, reference_outputs

SHAPE = (3, 6, 6)


class ResidualNet(nn.Module):
    """Stem, one BasicBlock (or two: a second identity block), flatten +
    Linear (no global pooling)."""

    def __init__(self, channels, width, stride=1, blocks=1):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        downsample = None
        if width != channels or stride != 1:
            downsample = nn.Sequential(nn.Conv2d(channels, width, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(width))
        self.block = BasicBlock(channels, width, stride, downsample)
        self.block2 = BasicBlock(width, width) if blocks == 2 else None
        side = (SHAPE[1] - 1) // stride + 1
        self.fc = nn.Linear(width * side * side, 5)

    def forward(self, x):
        x = self.block(F.relu(self.stem_bn(self.stem(x))))
        if self.block2 is not None:
            x = self.block2(x)
        return self.fc(torch.flatten(x, 1))


CASES = {"identity": (8, 8, 1, "w4a4"), "projection": (5, 7, 1, "w3a2"),
         "stride2": (6, 9, 2, "w2a3"), "mpq": (6, 20, 2, "w3a4")}
# The "mpq" case as bench/mpq_paper.py retrains: per-weight quantizers, the
# middle layers (the block's convolutions and projection) on the coarse 2-bit
# grid, the extra bit for whole compiler groups (here a random 40%: which
# groups does not matter to the flow, that both kinds share a layer does).
EXTRA_BIT = mpq.MPQConfig(base_bits=2, granularity="hardware", criterion="random", fraction=0.4)


def write_residual_model(model, precision, path, extra_bit=False):
    """Quantize `model` (batch norms made non-trivial; `extra_bit`: per-weight
    quantizers with the MPQ extra bit, EXTRA_BIT), calibrate it on random
    images and write its model file; returns (3 of those images, the
    quantized network)."""
    randomize_batch_norms(model, 4)
    network = quantize_network(model, parse_precision(precision, group_size=1 if extra_bit else 16),
                               SHAPE)
    images = torch.randint(0, 256, (8, *SHAPE), dtype=torch.uint8)
    calibrate(network, images)
    if extra_bit:
        mpq.prepare(network, EXTRA_BIT)
        assert mpq.assign_extra_bit(mpq.middle_layers(network), None, EXTRA_BIT) > 0
    network.eval()
    write_model_file(network, str(path))
    return images[:3].numpy(), network


@pytest.fixture(scope="module", params=sorted(CASES))
def residual_model(request, tmp_path_factory):
    channels, width, stride, precision = CASES[request.param]
    torch.manual_seed(3)
    model = ResidualNet(channels, width, stride)
    path = tmp_path_factory.mktemp(request.param) / "model.mpq"
    images, network = write_residual_model(model, precision, path, extra_bit=request.param == "mpq")
    return request.param, path, images, network


def test_the_graph_becomes_residual_layers(residual_model):
    kind, path, _, _ = residual_model
    header, arrays = read_model_file(str(path))
    specs = layer_specs(header, arrays)
    residual = [spec for spec in specs if spec.residual]
    assert len(residual) == 1 and not residual[0].pool
    assert any(spec.act_signed for spec in specs) == (kind != "identity")
    assert residual[0].shortcut_signed == (kind != "identity")
    # At stride 2 the stem's map is read parity-split by conv1 and the projection.
    assert specs[0].split_output == (CASES[kind][2] == 2)


def test_fake_quant_equals_the_integer_reference(residual_model):
    _, path, images, network = residual_model
    with torch.no_grad():
        _, codes, logits = network(torch.as_tensor(images).float(), return_codes=True)
    reference = reference_outputs(path, images)
    for index, expected in enumerate(reference):
        for fake, exact in zip(list(codes) + [logits], expected):
            assert torch.equal(fake[index], torch.as_tensor(exact))


def test_the_extra_bit_mixes_grids_within_the_block(residual_model):
    """Every layer of the block holds coarse (2-bit, shift 1) and fine
    (3-bit) compiler groups, the residual layer's chunks included: the array
    switches PE modes inside the layer whose drain adds the shortcut."""
    kind, path, _, _ = residual_model
    if kind != "mpq":
        pytest.skip("uniform precision")
    header, arrays = read_model_file(str(path))
    specs = layer_specs(header, arrays)
    for spec in specs[1:-1]:
        pairs = {(int(p), int(e)) for p, e in zip(spec.precision.flat, spec.shift.flat)}
        assert pairs == {(2, 1), (3, 0)}, f"{spec.name}: {sorted(pairs)}"
    assert any(spec.residual for spec in specs[1:-1])


def test_golden_model_equals_the_integer_reference(residual_model):
    kind, path, images, _ = residual_model
    header, arrays = read_model_file(str(path))
    network = compile_network(header, arrays, get_config("small"))
    assert all(network.checked) and not network.manifest["activation_words"]["reused"]
    names = [spec.label for spec in network.specs]
    block = [i for i, spec in enumerate(network.specs) if spec.residual][0]
    for x, expected in zip(images, reference_outputs(path, images)):
        outputs, counters = network.run_golden(x)
        assert first_mismatch(outputs, expected, names) is None
        assert counters["shortcut_reads"] > 0
        assert outputs[block].max() > 0, "a dead block would make this test vacuous"


def test_the_residual_add_costs_no_cycles(residual_model):
    """The block's residual layer against the same layer without its
    shortcut: the same cycles (the shortcut is read during the drain), only
    shortcut_reads more."""
    _, path, _, _ = residual_model
    header, arrays = read_model_file(str(path))
    config = get_config("small")
    spec = [spec for spec in layer_specs(header, arrays) if spec.residual][0]
    plain = dataclasses.replace(spec, residual_multiplier=None)
    with_add = compile_layer(spec, config).expected_counters
    without = compile_layer(plain, config).expected_counters
    assert with_add["cycles"] == without["cycles"]
    assert with_add["shortcut_reads"] > 0 == without["shortcut_reads"]


@pytest.mark.cocotb
def test_network_on_verilator_is_bit_exact(residual_model, rtl_build):
    _, path, images, _ = residual_model
    assert_bit_exact_on_rtl(path, images[:2], rtl_build)


# Two identity blocks need 432 activation words per bank each map in its own
# region (the 8-bit image's two nibble maps 192, five 8x6x6 maps of 48); at
# 256 the second block's maps reuse the first's, overwriting block.conv1.
REUSE_DEPTH = 256


@pytest.fixture(scope="module")
def two_block_model(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("two-blocks") / "model.mpq"
    images, _ = write_residual_model(ResidualNet(8, 8, blocks=2), "w4a4", path)
    return path, images


def reuse_network(path, **memories):
    header, arrays = read_model_file(str(path))
    config = dataclasses.replace(get_config("small"), name="small-acts256", act_depth=REUSE_DEPTH,
                                 **memories)
    return compile_network(header, arrays, config)


# One phase, and two (the classifier's weights in a phase of their own: the
# activation memory is carried into it as it is).
@pytest.mark.parametrize("weight_depth,phases", [(4096, 1), (512, 2)])
def test_reused_activation_memory_keeps_the_logits_exact(two_block_model, weight_depth, phases):
    path, images = two_block_model
    network = reuse_network(path, weight_depth=weight_depth)
    assert len(network.phases) == phases
    words = network.manifest["activation_words"]
    assert words["reused"] and words["keep_all"] > REUSE_DEPTH >= words["used"]
    overwritten = [spec.name for spec, checked in zip(network.specs, network.checked)
                   if not checked]
    assert overwritten == ["block.conv1"]
    assert [layer["checked"] for layer in network.manifest["layers"]] == network.checked
    names = [spec.label for spec in network.specs]
    for x, expected in zip(images, reference_outputs(path, images)):
        outputs, _ = network.run_golden(x)
        assert [out is not None for out in outputs] == network.checked
        assert first_mismatch(outputs, expected, names) is None
        assert outputs[-1].any()


def test_too_little_activation_memory_names_the_peak(two_block_model):
    path, _ = two_block_model
    header, arrays = read_model_file(str(path))
    config = dataclasses.replace(get_config("small"), act_depth=128)
    with pytest.raises(UserError, match=r"need 240 words per bank at their peak, while the input "
                                        r"image, layers\[0\] \('stem'\) are live.*\(act_depth\)"):
        compile_network(header, arrays, config)


@pytest.mark.cocotb
def test_reused_activation_memory_on_verilator_is_bit_exact(two_block_model, rtl_build):
    path, images = two_block_model
    network = reuse_network(path)
    assert not all(network.checked)
    results = run_network_on_rtl(network, images[:2], build_dir=rtl_build, stall=0.3)
    names = [spec.label for spec in network.specs]
    for x, result, expected in zip(images, results, reference_outputs(path, images)):
        assert result["status"]["done"] and not result["status"]["error"]
        assert [out is not None for out in result["outputs"]] == network.checked
        assert first_mismatch(result["outputs"], expected, names) is None
        assert result["counters"] == network.run_golden(x)[1]
