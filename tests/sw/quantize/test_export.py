import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from sw.errors import UserError
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import read_model_file, write_model_file
from sw.quantize.reference import IntegerModel


@pytest.fixture
def model_file(make_cnn, synthetic_dataset, tmp_path):
    torch.manual_seed(0)
    network = quantize_network(make_cnn(), parse_precision("w4a4,first=w8"), synthetic_dataset.input_shape)
    calibrate(network, synthetic_dataset.train_x[:64])
    path = tmp_path / "model.mpq"
    write_model_file(network.eval(), str(path), {"note": "test"})
    return str(path), network


def test_round_trip(model_file, synthetic_dataset):
    path, network = model_file
    header, arrays = read_model_file(path)
    assert header["format"] == "mpq-model" and header["version"] == 1
    assert header["input"] == {"shape": [3, 8, 8], "bits": 8, "signed": False}
    assert [layer["kind"] for layer in header["layers"]] == ["conv2d", "conv2d", "linear", "linear"]
    assert header["layers"][1]["pool"] == {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    assert arrays[0]["weight_bits"].max() == 8 and arrays[1]["weight_bits"].max() == 4
    assert arrays[0]["weight"].dtype == np.int8 and "requant_multiplier" not in arrays[-1]
    assert header["metadata"]["note"] == "test"
    images = synthetic_dataset.test_x
    with torch.no_grad():
        _, _, expected = network(images.float(), return_codes=True)
    assert torch.equal(IntegerModel.load(path)(images), expected)


def _rewrite(path, header=None, arrays=None, drop=None):
    """Rewrite a model file with a changed header or arrays, skipping checks."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if header is not None:
        members["header.json"] = json.dumps(header).encode()
    for name, value in (arrays or {}).items():
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, value)
        members[name] = buffer.getvalue()
    if drop:
        del members[drop]
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _header(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("header.json"))


def _expect(path, *fragments):
    with pytest.raises(UserError) as error:
        IntegerModel.load(path)
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)


def test_wrong_version(model_file):
    path, _ = model_file
    header = _header(path)
    header["version"] = 2
    _rewrite(path, header)
    _expect(path, "`version`", "2")


def test_missing_header_field(model_file):
    path, _ = model_file
    header = _header(path)
    del header["layers"][1]["requant_shift"]
    _rewrite(path, header)
    _expect(path, "`layers[1].requant_shift`", "missing")


def test_missing_array(model_file):
    path, _ = model_file
    _rewrite(path, drop="layers/2/requant_multiplier.npy")
    _expect(path, "`layers[2].requant_multiplier`", "missing")


def test_wrong_dtype(model_file):
    path, _ = model_file
    _, arrays = read_model_file(path)
    _rewrite(path, arrays={"layers/1/bias.npy": arrays[1]["bias"].astype(np.float32)})
    _expect(path, "`layers[1].bias`", "dtype float32")


def test_wrong_shape_and_out_of_range_weight(model_file):
    path, _ = model_file
    _, arrays = read_model_file(path)
    weight = arrays[1]["weight"].copy()
    weight[0, 0, 0, 0] = 9          # a 4-bit weight holds -8..7
    _rewrite(path, arrays={"layers/1/weight.npy": weight})
    _expect(path, "`layers[1].weight`", "weight_bits range")
    _rewrite(path, arrays={"layers/1/weight.npy": weight[:, :3]})
    _expect(path, "`layers[1].weight`", "shape")


def test_inconsistent_chain(model_file):
    path, _ = model_file
    header = _header(path)
    header["layers"][2]["input_bits"] = 2
    _rewrite(path, header)
    _expect(path, "`layers[2].input_bits`")


def test_truncated_and_garbage_files(model_file, tmp_path):
    path, _ = model_file
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    _expect(path, "truncated")
    other = tmp_path / "garbage.mpq"
    other.write_bytes(b"not a zip")
    _expect(str(other), "not a readable")
    _expect(str(tmp_path / "absent.mpq"), "no model file")


def test_failed_export_leaves_no_file(make_cnn, synthetic_dataset, tmp_path):
    network = quantize_network(make_cnn(), parse_precision("w4a4"), synthetic_dataset.input_shape)
    with torch.no_grad():
        network.layers[1].bn.weight[0] = float("nan")
    path = tmp_path / "model.mpq"
    with pytest.raises(UserError):
        write_model_file(network, str(path))
    assert os.listdir(tmp_path) == []
