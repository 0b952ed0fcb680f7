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
from sim.network_sim import first_mismatch, run_network_on_rtl
from sw.compile.network import compile_network
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.reference import IntegerModel
from sw.quantize.resnet import resnet8


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


def _randomize_batch_norms(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.3, generator=generator)


@pytest.fixture(scope="module", params=sorted(CASES))
def pooled_model(request, tmp_path_factory):
    make, shape, precision, group_size, mixed = CASES[request.param]
    torch.manual_seed(5)
    model = make()
    _randomize_batch_norms(model, 6)
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


def reference_outputs(path, images):
    model = IntegerModel.load(str(path))
    logits, trace = model(torch.as_tensor(images), return_codes=True)
    return [[t[i].numpy() for t in trace] + [logits[i].numpy()] for i in range(len(images))]


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
    name, path, images = pooled_model
    header, arrays = read_model_file(str(path))
    network = compile_network(header, arrays, get_config("small"))
    results = run_network_on_rtl(network, images[:1], build_dir=rtl_build, stall=0.3)
    names = [spec.label for spec in network.specs]
    for x, result, expected in zip(images, results, reference_outputs(path, images)):
        assert result["status"]["done"] and not result["status"]["error"]
        assert first_mismatch(result["outputs"], expected, names) is None
        assert result["counters"] == network.run_golden(x)[1]
