"""Model files the network tests make themselves: the digits CNN at a quarter
width, quantized and calibrated on the embedded digits (no training, so a
model takes a second), uniform or with mixed per-group precisions; and two
small chains with stride-2 convolutions (the down-sampling of residual
networks) on the same digits."""

import pytest
import torch
from torch import nn

from hw.config import get_config
from sim.network_sim import first_mismatch, run_network_on_rtl
from sw.compile.network import compile_network
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.data import load_digits
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.models import Normalize, build_model
from sw.quantize.reference import IntegerModel


def make_model_file(path, precision="w4a4,first=w8,last=w8", mixed=False, seed=0, group_size=16,
                    body=None):
    """`body`: a function of nothing giving the float layers after
    `Normalize` (default: the digits CNN at a quarter width)."""
    torch.manual_seed(seed)
    data = load_digits()
    model = (build_model("digits-cnn", 0.25, data) if body is None
             else nn.Sequential(Normalize(data.mean, data.std), *body()))
    network = quantize_network(model, parse_precision(precision, group_size=group_size),
                               data.input_shape)
    if mixed:  # MPQ-style groups: coarse 2-bit (shift 1), fine 3-bit, some 4-bit
        generator = torch.Generator().manual_seed(seed + 1)
        for layer in network.layers[1:-1]:
            quantizer = layer.weight_quantizer
            choice = torch.randint(0, 3, quantizer.group_bits.shape, generator=generator)
            quantizer.group_bits.copy_(torch.tensor([2, 3, 4])[choice])
            quantizer.group_shift.copy_((choice == 0).long())
    calibrate(network, data.train_x[:128])
    write_model_file(network.eval(), str(path), {"dataset": "digits", "model": "digits-cnn"})
    return path


@pytest.fixture(scope="session")
def digits_models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("models")
    return {"uniform": make_model_file(directory / "uniform.mpq"),
            "mixed": make_model_file(directory / "mixed.mpq", precision="w4a4", mixed=True)}


@pytest.fixture(scope="session")
def per_weight_model(tmp_path_factory):
    return make_model_file(tmp_path_factory.mktemp("models") / "per_weight.mpq",
                           precision="w4a4,first=w8,last=w8", mixed=True, group_size=1)


def conv(cin, cout, kernel, stride, padding, pool=False):
    block = [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout),
             nn.ReLU()]
    return block + ([nn.MaxPool2d(2)] if pool else [])


def stride2_first():
    """8x8 -> 3x3 (stride 2, no padding: the 8-bit image read parity-split,
    an odd map) -> 2x2 (3x3 stride 2) -> 2x2 (stride 1, written split) ->
    1x1 (1x1 stride 2 projection) -> logits."""
    return (conv(1, 8, 3, 2, 0) + conv(8, 20, 3, 2, 1) + conv(20, 16, 3, 1, 1)
            + conv(16, 24, 1, 2, 0) + [nn.Flatten(), nn.Linear(24, 10)])


def stride2_middle():
    """8x8 (two tiles a row on 4 columns, written split) -> 4x4 (3x3 stride
    2) -> 4x4 pooled to 2x2 (written split) -> 1x1 (1x1 stride 2) -> logits."""
    return (conv(1, 12, 3, 1, 1) + conv(12, 16, 3, 2, 1) + conv(16, 20, 3, 1, 1, pool=True)
            + conv(20, 24, 1, 2, 0) + [nn.Flatten(), nn.Linear(24, 10)])


@pytest.fixture(scope="session")
def strided_models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("strided")
    return {"first": make_model_file(directory / "first.mpq", body=stride2_first),
            "middle": make_model_file(directory / "middle.mpq", precision="w4a2", mixed=True,
                                      body=stride2_middle)}


def randomize_batch_norms(model, seed):
    """Non-trivial batch norms (running statistics, scale and shift drawn from
    `seed`), so that folding them into the integer layers is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.3, generator=generator)


def reference_outputs(path, images):
    """Per image: every layer's output codes and the logits of the PyTorch
    integer reference on the model file at `path`."""
    model = IntegerModel.load(str(path))
    logits, trace = model(torch.as_tensor(images), return_codes=True)
    return [[t[i].numpy() for t in trace] + [logits[i].numpy()] for i in range(len(images))]


def assert_bit_exact_on_rtl(path, images, rtl_build, config="small"):
    """Compile the model file at `path` for `config`, run `images` on the
    Verilator core (with stalls) and compare every layer with the integer
    reference and every counter with the golden model."""
    header, arrays = read_model_file(str(path))
    network = compile_network(header, arrays, get_config(config))
    results = run_network_on_rtl(network, images, build_dir=rtl_build, stall=0.3)
    names = [spec.label for spec in network.specs]
    for x, result, expected in zip(images, results, reference_outputs(path, images)):
        assert result["status"]["done"] and not result["status"]["error"]
        assert first_mismatch(result["outputs"], expected, names) is None
        assert result["counters"] == network.run_golden(x)[1]
