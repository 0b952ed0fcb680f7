"""Tap packing of a small-channel first layer: the packed layer on the image's
patches computes the original layer's outputs, in the golden model (and, as
`compile_network` packs by default, in every network the RTL tests run)."""

import numpy as np
import pytest
import torch
from torch import nn

from hw.config import CONFIGS
from sw.compile import compile_layer, random_layer_spec, reference_layer, run_golden
from sw.compile.network import compile_network
from sw.compile.tap_packing import TapPacking, chunks_per_tile, pack_taps
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.reference import IntegerModel


@pytest.mark.parametrize("seed", range(40))
def test_packed_first_layer_gives_the_same_outputs(seed):
    rng = np.random.default_rng(seed)
    config = CONFIGS["small"] if seed % 2 else CONFIGS["default"]
    spec = random_layer_spec(rng, kind="conv", in_channels=int(rng.choice([1, 2, 3, 5])),
                             kernel=int(rng.choice([2, 3, 5])), act_bits_in=8,
                             max_channels=12, name=f"first{seed}")
    packed, packing = pack_taps(spec)
    assert packing is not None and packed.kernel == (1, 1) and packed.padding == 0
    assert packed.in_channels == spec.in_channels * spec.kernel[0] * spec.kernel[1]
    x = rng.integers(0, 256, size=spec.input_shape)
    expected = reference_layer(spec, x)
    assert np.array_equal(reference_layer(packed, packing.apply(x)), expected)
    run = run_golden(compile_layer(packed, config), packing.apply(x))
    assert np.array_equal(run.output, expected)
    plain = run_golden(compile_layer(spec, config), x)
    assert run.counters["cycles"] < plain.counters["cycles"]


def test_patches_are_the_convolution_windows():
    packing = TapPacking(channels=2, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
                         output_hw=(3, 3))
    x = np.arange(2 * 5 * 5).reshape(2, 5, 5) + 1
    patches = packing.apply(x)
    assert patches.shape == (18, 3, 3)
    # output pixel (1, 2) reads rows 1..3, columns 3..5 (column 5 is padding)
    window = np.pad(x, ((0, 0), (1, 1), (1, 1)))[:, 2:5, 4:7]
    assert patches[:, 1, 2].tolist() == window.transpose(1, 2, 0).reshape(-1).tolist()


def test_layers_that_already_fill_their_groups_stay_as_they_are():
    rng = np.random.default_rng(0)
    spec = random_layer_spec(rng, kind="conv", in_channels=16, kernel=3, act_bits_in=8)
    assert pack_taps(spec) == (spec, None)
    spec = random_layer_spec(rng, kind="conv", in_channels=3, kernel=1, act_bits_in=8)
    assert pack_taps(spec) == (spec, None)
    assert chunks_per_tile(27, (1, 1)) == 2 and chunks_per_tile(3, (3, 3)) == 9


@pytest.mark.parametrize("precision", ["w4a4,first=w8,last=w8", "w2a2", "w3a4"])
def test_network_with_a_packed_first_layer_matches_the_integer_reference(precision, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    network = quantize_network(model, parse_precision(precision), (3, 8, 8))
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    calibrate(network, images)
    path = tmp_path / "model.mpq"
    write_model_file(network, str(path))
    header, arrays = read_model_file(str(path))
    logits, trace = IntegerModel.load(str(path))(images, return_codes=True)
    cycles = {}
    for packed in (False, True):
        compiled = compile_network(header, arrays, CONFIGS["small"], pack_first_layer=packed)
        assert (compiled.manifest["input_packing"] is not None) == packed
        for index in range(len(images)):
            outputs, counters = compiled.run_golden(images[index].numpy())
            for output, codes in zip(outputs[:-1], trace):
                assert np.array_equal(output, codes[index].numpy())
            assert np.array_equal(outputs[-1].reshape(-1), logits[index].numpy())
        cycles[packed] = counters["cycles"]
    assert cycles[True] < cycles[False]
