"""The whole-network flow: compile a model file, run it on the RTL, every
layer bit-exact against the PyTorch integer reference; determinism; bad
input gives clear errors and no half-written output."""

import hashlib

import numpy as np
import pytest
import torch

from common.errors import UserError
from hw.config import AcceleratorConfig, get_config
from sim.network_sim import first_mismatch, run_network_on_rtl
from sw.cli import main as mpq
from sw.compile.artifacts import read_compiled, write_compiled
from sw.compile.network import compile_network, layer_specs
from sw.quantize.data import load_digits
from sw.quantize.export import read_model_file
from sw.quantize.reference import IntegerModel
from tests.sim.conftest import make_model_file


def reference_outputs(model_path, images):
    model = IntegerModel.load(str(model_path))
    logits, trace = model(torch.as_tensor(np.asarray(images)), return_codes=True)
    return [[t[i].numpy() for t in trace] + [logits[i].numpy()] for i in range(len(images))]


@pytest.mark.parametrize("kind", ["uniform", "mixed"])
def test_golden_model_equals_the_integer_reference(digits_models, kind):
    header, arrays = read_model_file(digits_models[kind])
    network = compile_network(header, arrays, get_config("small"))
    images = load_digits().test_x[:4].numpy()
    for x, expected in zip(images, reference_outputs(digits_models[kind], images)):
        outputs, _ = network.run_golden(x)
        assert first_mismatch(outputs, expected, [s.label for s in network.specs]) is None


@pytest.mark.cocotb
@pytest.mark.parametrize("kind", ["uniform", "mixed"])
def test_network_on_verilator_is_bit_exact(digits_models, kind, rtl_build):
    header, arrays = read_model_file(digits_models[kind])
    network = compile_network(header, arrays, get_config("small"))
    images = load_digits().test_x[:3].numpy()
    results = run_network_on_rtl(network, images, build_dir=rtl_build, stall=0.3)
    names = [spec.name for spec in network.specs]
    for x, result, expected in zip(images, results, reference_outputs(digits_models[kind], images)):
        assert result["status"]["done"] and not result["status"]["error"]
        assert first_mismatch(result["outputs"], expected, names) is None
        assert result["counters"] == network.run_golden(x)[1]


@pytest.mark.parametrize("kind", ["first", "middle"])
def test_stride2_networks_golden_model_equals_the_integer_reference(strided_models, kind):
    """Stride-2 convolutions (3x3 padding 1 and 0, 1x1 projections), first
    and inside the chain: each stride-2 layer's input map is parity-split."""
    header, arrays = read_model_file(strided_models[kind])
    # Unpacked, a stride-2 first layer reads the host's parity-split image;
    # tap-packed (the default), it runs at stride 1 on the image's patches.
    network = compile_network(header, arrays, get_config("small"), pack_first_layer=False)
    strides = [spec.stride for spec in network.specs]
    assert strides == ([2, 2, 1, 2, 1] if kind == "first" else [1, 2, 1, 2, 1])
    assert [spec.split_output for spec in network.specs] == [s == 2 for s in strides[1:]] + [False]
    assert network.layers[0].registers["STRIDE2"] == (kind == "first")
    packed = compile_network(header, arrays, get_config("small"))
    assert packed.specs[0].stride == 1 and not packed.layers[0].registers["STRIDE2"]
    images = load_digits().test_x[:4].numpy()
    for x, expected in zip(images, reference_outputs(strided_models[kind], images)):
        for compiled in (network, packed):
            outputs, _ = compiled.run_golden(x)
            assert first_mismatch(outputs, expected, [s.label for s in compiled.specs]) is None


@pytest.mark.cocotb
@pytest.mark.parametrize("kind", ["first", "middle"])
def test_stride2_networks_on_verilator_are_bit_exact(strided_models, kind, rtl_build):
    header, arrays = read_model_file(strided_models[kind])
    network = compile_network(header, arrays, get_config("small"), pack_first_layer=False)
    images = load_digits().test_x[:2].numpy()
    results = run_network_on_rtl(network, images, build_dir=rtl_build, stall=0.3)
    names = [spec.name for spec in network.specs]
    for x, result, expected in zip(images, results, reference_outputs(strided_models[kind], images)):
        assert result["status"]["done"] and not result["status"]["error"]
        assert first_mismatch(result["outputs"], expected, names) is None
        assert result["counters"] == network.run_golden(x)[1]


def test_a_network_whose_weights_do_not_fit_runs_in_phases(digits_models):
    header, arrays = read_model_file(digits_models["uniform"])
    tight = AcceleratorConfig("tight", rows=4, cols=4, weight_depth=256, chunk_depth=2048,
                              program_depth=2048)
    network = compile_network(header, arrays, tight)
    assert len(network.phases) > 1
    assert network.manifest["external_bytes_per_inference"] > 0
    x = load_digits().test_x[0].numpy()
    outputs, _ = network.run_golden(x)
    assert first_mismatch(outputs, reference_outputs(digits_models["uniform"], [x])[0],
                          [s.label for s in network.specs]) is None


def test_compile_is_deterministic(digits_models, tmp_path):
    def digest(directory):
        return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(directory.rglob("*")) if p.is_file()}
    for name in ("a", "b"):
        assert mpq(["compile", str(digits_models["mixed"]), "--config", "small",
                    "-o", str(tmp_path / name)]) == 0
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    network, manifest, golden = read_compiled(tmp_path / "a")
    assert golden["inputs"].shape[0] == manifest["golden_images"] == 4


def test_compile_says_what_the_activations_take(tmp_path, capsys):
    """The summary line names the activation memory the maps take and their
    slots: 3-bit activations in 3-bit slots on a core with packed slots."""
    model = make_model_file(tmp_path / "w2a3.mpq", precision="w2a3")
    assert mpq(["compile", str(model), "--config", "small", "-o", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out
    assert "activations " in line and "of 4,096 words per bank in 3-bit slots" in line, line


def test_unsupported_layers_are_named(digits_models):
    header, arrays = read_model_file(digits_models["uniform"])
    header["layers"][1]["stride"] = [2, 1]
    with pytest.raises(UserError, match=r"layers\[1\] \('.*'\): .*strides both axes alike"):
        layer_specs(header, arrays)
    header["layers"][1]["stride"] = [3, 3]
    with pytest.raises(UserError, match=r"layers\[1\] \('.*'\): stride 3 .*limit: stride 1 or 2"):
        layer_specs(header, arrays)
    header["layers"][1]["stride"] = [1, 1]
    header["layers"][1]["pool"] = {"kernel_size": [3, 3], "stride": [3, 3], "padding": [0, 0]}
    with pytest.raises(UserError, match=r"layers\[1\] \('.*'\): .*pools 2x2"):
        layer_specs(header, arrays)


def test_a_shift_the_hardware_cannot_fold_is_rejected(digits_models):
    header, arrays = read_model_file(digits_models["uniform"])
    arrays[1]["weight_shift"][0, 0, 0, 0] = 1      # p = 4 with e = 1: 5 bits
    with pytest.raises(UserError, match=r"layers\[1\] \('.*'\): "):
        compile_network(header, arrays, get_config("small"))


def test_too_large_a_network_fails_cleanly_with_no_output(digits_models, tmp_path, capsys):
    tiny = AcceleratorConfig("tiny-acts", rows=4, cols=4, act_depth=32)
    header, arrays = read_model_file(digits_models["uniform"])
    with pytest.raises(UserError, match="act_depth"):
        compile_network(header, arrays, tiny)
    # Through the command: non-zero exit, a message, and nothing written.
    with pytest.raises(SystemExit) as stop:  # argparse lists the configurations
        mpq(["compile", str(digits_models["uniform"]), "--config", "no-such-config",
             "-o", str(tmp_path / "out")])
    assert stop.value.code == 2
    assert "invalid choice: 'no-such-config'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_corrupt_or_missing_files_are_named(digits_models, tmp_path):
    directory = tmp_path / "compiled"
    write_compiled(digits_models["uniform"], "small", directory, np.zeros((1, 1, 8, 8), np.uint8))
    manifest_path = directory / "manifest.json"
    manifest = manifest_path.read_text()
    manifest_path.write_text(manifest.replace('"config": "small"', '"config": "smol"'))
    with pytest.raises(UserError, match=r"manifest.json: `config`: no configuration named 'smol'"):
        read_compiled(directory)
    manifest_path.write_text(manifest)
    weights = sorted(directory.glob("phase0/weights_bank*.bin"))[0]
    weights.write_bytes(weights.read_bytes()[:-2] + b"\x00\x01")
    with pytest.raises(UserError, match=f"{weights.name} does not match manifest.json"):
        read_compiled(directory)
    weights.unlink()
    with pytest.raises(UserError, match=f"{weights.name} is missing"):
        read_compiled(directory)
    with pytest.raises(UserError, match="no manifest.json"):
        read_compiled(tmp_path / "nothing-here")
    assert mpq(["sim", str(tmp_path / "nothing-here")]) == 2


@pytest.mark.cocotb
def test_a_simulation_that_times_out_is_an_error(digits_models, rtl_build):
    from sim.core_sim import run_cases
    from sim.network_sim import network_cases
    header, arrays = read_model_file(digits_models["uniform"])
    network = compile_network(header, arrays, get_config("small"))
    cases = network_cases(network, load_digits().test_x[:1].numpy())
    cases[0]["timeout_cycles"] = 100
    with pytest.raises(UserError, match="timed out"):
        run_cases(cases, network.config, build_dir=rtl_build)


def test_per_weight_groups_are_regrouped_for_the_hardware(per_weight_model):
    """A model whose groups are single weights (per-weight mixed precision)
    compiles to hardware groups of 16 and stays exact."""
    header, arrays = read_model_file(per_weight_model)
    assert header["group_size"] == 1
    network = compile_network(header, arrays, get_config("small"))
    images = load_digits().test_x[:2].numpy()
    for x, expected in zip(images, reference_outputs(per_weight_model, images)):
        outputs, _ = network.run_golden(x)
        assert first_mismatch(outputs, expected, [s.label for s in network.specs]) is None
