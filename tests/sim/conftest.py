"""Model files the network tests make themselves: the digits CNN at a quarter
width, quantized and calibrated on the embedded digits (no training, so a
model takes a second), uniform or with mixed per-group precisions."""

import pytest
import torch

from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.data import load_digits
from sw.quantize.export import write_model_file
from sw.quantize.models import build_model


def make_model_file(path, precision="w4a4,first=w8,last=w8", mixed=False, seed=0, group_size=16):
    torch.manual_seed(seed)
    data = load_digits()
    network = quantize_network(build_model("digits-cnn", 0.25, data),
                               parse_precision(precision, group_size=group_size), data.input_shape)
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
