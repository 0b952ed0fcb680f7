import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch

from common.errors import UserError
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
    assert header["format"] == "mpq-model" and header["version"] == 2
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
    header["version"] = 3
    _rewrite(path, header)
    _expect(path, "`version`", "3", "reads versions 1, 2")


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


def test_an_interrupted_export_keeps_the_old_file_and_no_temporary(model_file, monkeypatch):
    path, network = model_file
    before = open(path, "rb").read()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "writestr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_model_file(network, path)
    assert open(path, "rb").read() == before
    assert os.listdir(os.path.dirname(path)) == ["model.mpq"]


# -- hostile containers: every failure of the zip/npy/json layer is a UserError naming the field --
def _read_error(path, *fragments):
    with pytest.raises(UserError) as error:
        read_model_file(str(path))
    for fragment in fragments:
        assert fragment in str(error.value), str(error.value)
    return str(error.value)


def _member_offsets(data, name):
    """(local header, data start, central directory entry) offsets of one member."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    local = info.header_offset
    start = local + 30 + int.from_bytes(data[local + 26:local + 28], "little") + \
        int.from_bytes(data[local + 28:local + 30], "little")
    central = data.index(b"PK\x01\x02")                 # the first central directory entry...
    while data[central + 46:central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)  # ...to this member's
    return local, start, central, info.compress_size


def test_damaged_compressed_data_is_a_user_error(model_file):
    """A damaged deflate stream raised zlib.error (a traceback)."""
    path, _ = model_file
    data = bytearray(open(path, "rb").read())
    _, start, _, size = _member_offsets(bytes(data), "layers/1/weight.npy")
    data[start:start + size] = bytes(size)           # zeros: not a valid deflate stream
    open(path, "wb").write(data)
    _read_error(path, "`layers[1].weight`", "truncated or corrupted")


def _patch(path, name, where, offset, value):
    data = bytearray(open(path, "rb").read())
    local, _, central, _ = _member_offsets(bytes(data), name)
    for base in ((local, central) if where == "both" else (central,)):
        field = base + offset + (2 if base == central else 0)     # central entries are 2 bytes longer
        data[field:field + 2] = value.to_bytes(2, "little")
    open(path, "wb").write(data)


def test_encrypted_member_and_unknown_compression(model_file):
    """zipfile raised RuntimeError (password) and NotImplementedError (method)."""
    path, _ = model_file
    original = open(path, "rb").read()
    _patch(path, "layers/0/bias.npy", "both", 6, 0x1)            # general purpose flag: encrypted
    _read_error(path, "`layers[0].bias`", "encrypted")
    open(path, "wb").write(original)
    _patch(path, "layers/0/bias.npy", "both", 8, 99)             # compression method 99 (AES)
    _read_error(path, "`layers[0].bias`", "compression method 99")


def test_member_name_that_is_not_utf8(model_file):
    """A member flagged UTF-8 whose name is not raised UnicodeDecodeError."""
    path, _ = model_file
    data = bytearray(open(path, "rb").read())
    _, _, central, _ = _member_offsets(bytes(data), "layers/0/bias.npy")
    data[central + 9] |= 0x08                                     # flag bit 11: UTF-8 name
    data[central + 46] = 0xFF
    open(path, "wb").write(data)
    _read_error(path, "not a readable mpq-model file")


def _npy_bytes(header_text, body=b""):
    text = header_text.encode("latin-1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


@pytest.mark.parametrize("header_text, fragment", [
    ("{'descr': '|i1', 'fortran_order': False, 'shape': (4611686018427387904,), }", "does not match"),
    ("{'descr': '|i1', 'fortran_order': False, 'shape': (0, 1000000000000000000), }", "does not match"),
    ("{'descr': '|i1', 'fortran_order': False, 'shape': (0, 10000000000000000000000), }", "bad shape"),
    ("{'descr': '|i1'", "unreadable header"),                          # TokenError inside numpy
    ("{[]: 1}", "unreadable header"),                                  # TypeError inside numpy
    ("{'descr': '<i99999999999', 'fortran_order': False, 'shape': (8,), }", "has dtype"),
    ("{'descr': '|O', 'fortran_order': False, 'shape': (8,), }", "has dtype"),
])
def test_absurd_npy_headers(model_file, header_text, fragment):
    """numpy's reader raised OverflowError, MemoryError, TokenError, TypeError..."""
    path, _ = model_file
    _rewrite(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["layers/0/weight.npy"] = _npy_bytes(header_text, bytes(108))
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    _read_error(path, "`layers[0].weight`", fragment)


def test_hostile_json(model_file):
    """Deep nesting raised RecursionError; a 5000-digit number ValueError."""
    path, _ = model_file
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for text in (b"[" * 100_000 + b"]" * 100_000,
                 members["header.json"].replace(b'"version": 2', b'"version": 2' + b"0" * 5000),
                 b"\xff\xfe\x00 not utf-8"):
        with zipfile.ZipFile(path, "w") as archive:
            for name, data in dict(members, **{"header.json": text}).items():
                archive.writestr(name, data)
        _read_error(path, "`header.json` is not valid JSON")


def test_fortran_order_arrays_still_read(model_file):
    path, _ = model_file
    _, arrays = read_model_file(path)
    _rewrite(path, arrays={"layers/1/weight.npy": np.asfortranarray(arrays[1]["weight"])})
    assert np.array_equal(read_model_file(path)[1][1]["weight"], arrays[1]["weight"])


# -- messages that said the wrong thing -----------------------------------------------------------
def test_string_version_says_it_must_be_the_integer(model_file):
    path, _ = model_file
    header = _header(path)
    header["version"] = "2"
    _rewrite(path, header)
    message = _read_error(path, "`version` must be an integer (2), got '2'")
    assert "reads version" not in message
    header["version"] = 2.0                  # == 2 in Python, but not the integer the format says
    _rewrite(path, header)
    _read_error(path, "`version` must be an integer (2), got 2.0")


def test_missing_format_says_missing(model_file):
    path, _ = model_file
    header = _header(path)
    del header["format"]
    _rewrite(path, header)
    message = _read_error(path, "`format` is missing")
    assert "None" not in message


def test_open_ranges_say_one_bound(model_file):
    path, _ = model_file
    header = _header(path)
    header["layers"][0]["in_channels"] = 0
    _rewrite(path, header)
    message = _read_error(path, "`layers[0].in_channels` must be >= 1, got 0")
    assert "None" not in message


def test_a_bad_stride_is_blamed_on_the_stride(model_file):
    """Layer 0's stride used to be reported as `layers[1].pool.kernel_size`."""
    path, _ = model_file
    header = _header(path)
    header["layers"][0]["stride"] = [20, 20]         # the padded input is 10x10
    _rewrite(path, header)
    _read_error(path, "`layers[0].stride` is [20, 20], larger than the padded input 10x10",
                "the model input")
    # A stride that fits but leaves a 1x1 map: the pool that cannot run says who made its input.
    header["layers"][0]["stride"] = [9, 9]
    _rewrite(path, header)
    _read_error(path, "`layers[1].pool.kernel_size`", "input 3x8x8 -> layers[0] 8x1x1 -> layers[1] 16x1x1")


def test_shape_mismatch_names_the_producing_layer(model_file):
    path, _ = model_file
    header = _header(path)
    header["layers"][2]["in_channels"] = 100
    _rewrite(path, header)
    _read_error(path, "`layers[2].in_channels` is 100 but its input (the output of layers[1]) has "
                      "256 features", "pooled 16x4x4 -> flattened 256")


def test_a_directory_is_not_a_model_file(model_file, tmp_path):
    path, _ = model_file
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    _read_error(compiled, f"{compiled} is a directory", "give a model file")
    (compiled / "model.mpq").write_bytes(open(path, "rb").read())   # as `mpq compile` leaves it
    (compiled / "other.mpq").write_bytes(b"")
    _read_error(compiled, f"{compiled} is a directory", f"give the model file inside it: "
                                                        f"{compiled / 'model.mpq'}")


def test_a_model_file_is_not_a_checkpoint(model_file, tmp_path):
    """`mpq export model.mpq` showed torch's 'file in archive is not in a subdirectory'."""
    from sw.quantize.train import load_checkpoint
    path, _ = model_file
    with pytest.raises(UserError) as error:
        load_checkpoint(path)
    assert "is an mpq model file (from mpq export), not a training checkpoint" in str(error.value)
    assert "checkpoint.pt" in str(error.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as error:
        load_checkpoint(str(garbage))
    assert "cannot read checkpoint" in str(error.value)
    assert "invalid load key" not in str(error.value)               # torch's own text
