"""Networks that end in global average pooling, from sw.quantize through the
whole flow: convolutions, `AdaptiveAvgPool2d(1)` + flatten (the classifier
or a hidden linear layer reads the global sum: `global_pool_input`), the
logits; exported, compiled (the pooled layer runs as the H x W convolution
whose weights are stored once and read by one ROUND per position and weight
shift) and run by the golden model and the RTL, every layer bit-exact
against the PyTorch integer reference (sw/quantize/reference.py). Also
ResNet-8 at a quarter width (sw/quantize/resnet.py: residual blocks,
stride-2 projections, global pooling) on 16x16 images."""

import pytest
import torch
from torch import nn

from hw.config import get_config
from sim.network_sim import first_mismatch
from sw.compile.network import compile_network
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.resnet import resnet8
from tests.sim.conftest import assert_bit_exact_on_rtl, randomize_batch_norms, reference_outputs


class PoolNet(nn.Module):
    """A stem, an optional stride-2 convolution, global average pooling,
    an optional hidden linear layer, the classifier."""

    def __init__(self, channels, hidden, stride2, classes=5):
        super().__init__()
        layers = [nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                  nn.ReLU()]
        if stride2:
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        head = [nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, classes)] if hidden \
            else [nn.Linear(channels, classes)]
        self.head = nn.Sequential(*head)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


# name: (model, input shape, precision, group size, mixed groups)
CASES = {
    "last8_odd_map": (lambda: PoolNet(20, None, False), (3, 7, 7), "w4a4,first=w8,last=w8", 16,
                      False),
    "hidden_w2a2": (lambda: PoolNet(13, 12, False), (3, 5, 9), "w2a2", 16, False),
    "hidden_last8_stride2": (lambda: PoolNet(17, 9, True), (3, 6, 6), "w3a4,last=w8", 16, False),
    "mixed_groups": (lambda: PoolNet(24, 7, True), (3, 9, 5), "w4a3", 4, True),
    "resnet8": (lambda: resnet8(width=0.25), (3, 16, 16), "w4a4,first=w8,last=w8", 16, False),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def pooled_model(request, tmp_path_factory):
    make, shape, precision, group_size, mixed = CASES[request.param]
    torch.manual_seed(5)
    model = make()
    randomize_batch_norms(model, 6)
    network = quantize_network(model, parse_precision(precision, group_size=group_size), shape)
    if mixed:  # MPQ-style groups: coarse 2-bit (shift 1), fine 3-bit, some 4-bit
        generator = torch.Generator().manual_seed(7)
        for layer in network.layers:
            quantizer = layer.weight_quantizer
            choice = torch.randint(0, 3, quantizer.group_bits.shape, generator=generator)
            quantizer.group_bits.copy_(torch.tensor([2, 3, 4])[choice])
            quantizer.group_shift.copy_((choice == 0).long())
    images = torch.randint(0, 256, (8, *shape), dtype=torch.uint8)
    calibrate(network, images)
    network.eval()
    path = tmp_path_factory.mktemp(request.param) / "model.mpq"
    write_model_file(network, str(path))
    return request.param, path, images[:3].numpy()


def test_the_classifier_pools_globally(pooled_model):
    name, path, _ = pooled_model
    header, arrays = read_model_file(str(path))
    network = compile_network(header, arrays, get_config("default"))
    pooled = [spec for spec in network.specs if spec.global_pool]
    assert len(pooled) == 1 and pooled[0].input_shape[1:] != (1, 1)
    assert pooled[0].raw == (name in ("last8_odd_map", "resnet8"))
    if name in ("last8_odd_map", "hidden_last8_stride2", "resnet8"):
        assert (network.specs[-1].precision == 8).all()
    if name == "resnet8":
        assert sum(spec.residual for spec in network.specs) == 3


@pytest.mark.parametrize("config", ["small", "default"])
def test_golden_model_equals_the_integer_reference(pooled_model, config):
    name, path, images = pooled_model
    header, arrays = read_model_file(str(path))
    network = compile_network(header, arrays, get_config(config))
    names = [spec.label for spec in network.specs]
    pooled = [i for i, spec in enumerate(network.specs) if spec.global_pool][0]
    for x, expected in zip(images, reference_outputs(path, images)):
        outputs, _ = network.run_golden(x)
        assert first_mismatch(outputs, expected, names) is None
        assert outputs[pooled - 1].max() > 0, "a dead map would make this test vacuous"


@pytest.mark.cocotb
def test_network_on_verilator_is_bit_exact(pooled_model, rtl_build):
    _, path, images = pooled_model
    assert_bit_exact_on_rtl(path, images[:1], rtl_build)
