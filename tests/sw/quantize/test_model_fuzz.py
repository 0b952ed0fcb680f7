"""Seeded fuzzing of the model file reader (sw/quantize/export.py).

One small valid model file is damaged in many ways: truncated, bit-flipped,
header fields deleted or retyped, arrays of the wrong dtype, shape or range,
members missing, compressed data damaged, hostile `.npy` headers and zip
flags. Every case must either read as a valid model or raise `UserError`
(nothing else, no traceback). A file that reads is then run through the
integer reference and, for a random subset, the compiler: they too may fail
only with `UserError`, and a failed compile leaves no output directory.

    MPQ_FUZZ_CASES=20000 MPQ_FUZZ_SEED=7 pytest tests/sw/quantize/test_model_fuzz.py

Each case draws from its own generator, seeded by (seed, case number), so a
failure report "case N" is reproducible alone.
"""

import io
import json
import math
import os
import shutil
import struct
import time
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from common.errors import UserError
from sw.compile.artifacts import write_compiled
from sw.quantize.config import parse_precision
from sw.quantize.convert import calibrate, quantize_network
from sw.quantize.export import read_model_file, validate, write_model_file
from sw.quantize.models import Normalize
from sw.quantize.reference import IntegerModel

CASES = int(os.environ.get("MPQ_FUZZ_CASES", "2000"))
SEED = int(os.environ.get("MPQ_FUZZ_SEED", "0"))
COMPILE_FRACTION = 0.5       # of the cases that read: also compiled


# -- the valid model every case starts from ------------------------------------------------
class Model:
    """A valid model file: its bytes, its zip members, its parsed header."""

    def __init__(self, raw):
        self.raw = raw
        self.members = unzip(raw)
        self.header = json.loads(self.members["header.json"])
        self.arrays = sorted(name for name in self.members if name.endswith(".npy"))


@pytest.fixture
def model(tmp_path, make_images):
    """conv 3->4 (3x3, pad 1) -> conv 4->8 + 2x2 max-pool -> flatten -> linear 32->4,
    on 3x4x4 images; the first layer 8-bit, the others 4-bit."""
    torch.manual_seed(0)
    network = nn.Sequential(
        Normalize((0.4, 0.4, 0.4), (0.25, 0.25, 0.25)),
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 4))
    network = quantize_network(network, parse_precision("w4a4,first=w8"), (3, 4, 4))
    images, _ = make_images(32, size=4)
    calibrate(network, images)
    path = tmp_path / "model.mpq"
    write_model_file(network.eval(), str(path))
    return Model(path.read_bytes())


# -- zip and npy helpers ----------------------------------------------------------------------
def unzip(raw):
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(members, method=zipfile.ZIP_DEFLATED):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=True)
    return buffer.getvalue()


def load_npy(data):
    return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)


def with_member(model, name, data):
    members = dict(model.members)
    members[name] = data
    return rezip(members)


def with_header(model, header):
    return with_member(model, "header.json", json.dumps(header).encode())


def local_header(raw, name):
    """Offset of `name`'s local file header and of its data."""
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        offset = archive.getinfo(name).header_offset
    name_length, extra_length = struct.unpack("<HH", raw[offset + 26:offset + 30])
    return offset, offset + 30 + name_length + extra_length


def central_entry(raw, name):
    """Offset of `name`'s central directory entry."""
    encoded = name.encode()
    start = raw.find(b"PK\x01\x02")
    while start >= 0:
        name_length = struct.unpack("<H", raw[start + 28:start + 30])[0]
        if raw[start + 46:start + 46 + name_length] == encoded:
            return start
        start = raw.find(b"PK\x01\x02", start + 4)
    raise AssertionError(f"no central directory entry for {name}")


def patch(raw, offset, fmt, value):
    data = bytearray(raw)
    struct.pack_into(fmt, data, offset, value)
    return bytes(data)


def pick(rng, items):
    return items[int(rng.integers(len(items)))]


# -- (a), (b): the raw bytes ------------------------------------------------------------------
def truncate(rng, model):
    return model.raw[:int(rng.integers(0, len(model.raw)))]


def flip_bits(rng, model):
    data = bytearray(model.raw)
    for _ in range(int(rng.integers(1, 9))):
        position = int(rng.integers(len(data) * 8))
        data[position // 8] ^= 1 << (position % 8)
    return bytes(data)


def overwrite_bytes(rng, model):
    data = bytearray(model.raw)
    length = int(rng.integers(1, 17))
    start = int(rng.integers(0, len(data) - length))
    fill = pick(rng, ["random", 0x00, 0xFF])
    data[start:start + length] = (rng.integers(0, 256, length, dtype=np.uint8).tobytes()
                                  if fill == "random" else bytes([fill]) * length)
    return bytes(data)


def insert_garbage(rng, model):
    at = int(rng.integers(0, len(model.raw) + 1))
    garbage = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    return model.raw[:at] + garbage + model.raw[at:]


# -- (c): header.json -------------------------------------------------------------------------
def header_paths(value, prefix=()):
    """Every path into the header: dict keys and list indices."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from header_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from header_paths(item, prefix + (index,))


POOL = {"kernel_size": [2, 2], "stride": [2, 2], "padding": [0, 0]}
HOSTILE_VALUES = [None, True, False, 0, 1, -1, 2, 3, 4, 8, 16, 47, 48, 255, 2 ** 31, 2 ** 63,
                  10 ** 30, -10 ** 30, 0.5, 1.0, float("nan"), float("inf"), "", "1", "x",
                  "conv2d", "linear", [], [0], [1, 1], [2, 2], [0, 0], [3, 3], [1, 2, 3],
                  [2 ** 40, 2 ** 40], [-1, 1], ["1", "1"], [1.0, 1.0], {}, POOL,
                  {"kernel_size": [9, 9], "stride": [1, 1], "padding": [0, 0]}]


def nearby_values(old):
    """Values close to the original, likelier to get past the first checks."""
    if isinstance(old, bool):
        return [not old]
    if isinstance(old, int):
        return [old - 2, old - 1, old + 1, old + 2, 2 * old, old // 2, str(old), float(old)]
    if isinstance(old, list) and old and all(isinstance(v, int) for v in old):
        return [[v + 1 for v in old], [v - 1 for v in old], old[:1], old + old[:1], old[::-1],
                [old[0] + 1] + old[1:], [str(v) for v in old]]
    if isinstance(old, str):
        return [old + "x", old.upper(), [old]]
    return []


def mutate_header_field(rng, model):
    header = json.loads(model.members["header.json"])
    path = pick(rng, list(header_paths(header)))
    if not path:
        return with_header(model, pick(rng, HOSTILE_VALUES))
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    old = parent[path[-1]]
    choice = rng.random()
    if choice < 0.2:
        del parent[path[-1]]
    elif choice < 0.6 and nearby_values(old):
        parent[path[-1]] = pick(rng, nearby_values(old))
    else:
        parent[path[-1]] = pick(rng, HOSTILE_VALUES)
    return with_header(model, header)


def hostile_header_text(rng, model):
    valid = model.members["header.json"]
    texts = [
        b"", b"{", b"null", b"[]", b"0", b'"mpq-model"', b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,                               # RecursionError
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
        b"\xef\xbb\xbf" + valid,                                       # a UTF-8 byte order mark
        valid.decode().encode("utf-16"),                               # reads: JSON allows it
        valid.replace(b'"version": 2', b'"version": 2' + b"0" * 5000),  # too many digits for int()
        valid.replace(b'"version": 2', b'"version": 1e999'),
        valid.replace(b'"bits": 8', b'"bits": NaN'),
        valid[:int(rng.integers(len(valid)))],
    ]
    if rng.random() < 0.5:
        data = bytearray(valid)
        data[int(rng.integers(len(data)))] = int(rng.integers(0, 256))
        return with_member(model, "header.json", bytes(data))
    return with_member(model, "header.json", pick(rng, texts))


# -- (d): the arrays --------------------------------------------------------------------------
def array_wrong_dtype(rng, model):
    name = pick(rng, model.arrays)
    dtype = pick(rng, [np.float32, np.float64, np.int64, np.int32, np.int16, np.int8, np.uint8,
                       np.uint16, np.bool_, ">i2", ">i4", "<U3", np.complex64, object])
    return with_member(model, name, npy(load_npy(model.members[name]).astype(dtype)))


def array_wrong_shape(rng, model):
    name = pick(rng, model.arrays)
    array = load_npy(model.members[name])
    shapes = [lambda a: a.reshape(-1), lambda a: a[None], lambda a: a[..., :-1],
              lambda a: np.concatenate([a, a]), lambda a: a.T, lambda a: a.reshape(a.shape[::-1]),
              lambda a: np.zeros((0,), a.dtype), lambda a: np.asarray(a[(0,) * a.ndim]),
              lambda a: np.asfortranarray(a)]                            # the last one is valid
    return with_member(model, name, npy(pick(rng, shapes)(array)))


def array_out_of_range(rng, model):
    name = pick(rng, model.arrays)
    array = load_npy(model.members[name]).copy()
    info = np.iinfo(array.dtype)
    flat = array.reshape(-1)
    for _ in range(int(rng.integers(1, 4))):
        index = int(rng.integers(flat.size))
        flat[index] = pick(rng, [info.min, info.max, 0, max(info.min, -1), 1, 5, 8, 9,
                                 int(rng.integers(info.min, info.max, endpoint=True))])
    return with_member(model, name, npy(array))


def drop_member(rng, model):
    members = dict(model.members)
    del members[pick(rng, sorted(members))]
    return rezip(members)


def extra_member(rng, model):
    """An array the last layer must not have, or an unknown file (ignored)."""
    last = len(model.header["layers"]) - 1
    name = pick(rng, [f"layers/{last}/requant_multiplier.npy", "notes.txt",
                      f"layers/{last + 1}/weight.npy"])
    return with_member(model, name, npy(np.ones(4, np.int16)))


def damage_deflate(rng, model):
    """A member whose deflate stream (or checksum) is damaged."""
    name = pick(rng, sorted(model.members))
    raw = rezip(model.members)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        size = archive.getinfo(name).compress_size
    _, start = local_header(raw, name)
    data = bytearray(raw)
    for _ in range(int(rng.integers(1, 5))):
        data[start + int(rng.integers(size))] ^= int(rng.integers(1, 256))
    return bytes(data)


def npy_blob(header, body=b"", version=(1, 0), declared=None):
    text = header.encode("latin-1")
    length_format = "<H" if version[0] == 1 else "<I"
    length = len(text) if declared is None else declared
    return b"\x93NUMPY" + bytes(version) + struct.pack(length_format, length) + text + body


def absurd_npy_header(rng, model):
    name = pick(rng, model.arrays)
    array = load_npy(model.members[name])
    body = array.tobytes()
    descr = array.dtype.str

    def header(descr=descr, fortran="False", shape=repr(array.shape)):
        return f"{{'descr': {descr!r}, 'fortran_order': {fortran}, 'shape': {shape}, }}\n"
    blobs = [
        npy_blob(header(shape="(4611686018427387904,)"), body),            # 2**62
        npy_blob(header(shape=f"({10 ** 30},)"), body),
        npy_blob(header(shape="(2147483648, 2147483648)"), body),
        npy_blob(header(shape="(0, 1000000000000000000000)")),
        npy_blob(header(shape="(-1,)"), body),
        npy_blob(header(shape="(" + "9" * 5000 + ",)"), body),               # int() refuses it
        npy_blob(header(shape="(1 2,)"), body),
        npy_blob(header(shape="()"), body[:array.dtype.itemsize]),
        npy_blob(header(shape="(" + "1, " * 40 + ")"), body[:array.dtype.itemsize]),
        npy_blob(header(descr="<i8"), body),
        npy_blob(header(descr="|O"), body),
        npy_blob(header(descr="<U99999999999"), body),
        npy_blob(header(descr="<i3"), body),
        npy_blob(header(fortran="'maybe'"), body),
        npy_blob(header(fortran="True"), body),                           # valid: Fortran order
        npy_blob("{'descr': '<i1'", body),                                # tokenize.TokenError in numpy
        npy_blob("{[]: 1}", body),
        npy_blob("(" * 300 + ")" * 300, body),
        npy_blob(header(), body, declared=60_000),
        npy_blob(header(), body, version=(2, 0), declared=2 ** 32 - 1),
        npy_blob(header(), body, version=(9, 9)),
        npy_blob(header(), body[:-1]),
        npy_blob(header(), body + b"\x00"),
        b"\x93NUMPY",
        rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes(),
    ]
    return with_member(model, name, pick(rng, blobs))


def zip_member_flags(rng, model):
    """Flags and fields of a member's zip headers that zipfile trips on:
    encryption, unknown compression methods, a huge declared size, a name
    flagged UTF-8 that is not."""
    name = pick(rng, sorted(model.members))
    raw = rezip(model.members, zipfile.ZIP_STORED)
    local, _ = local_header(raw, name)
    central = central_entry(raw, name)
    flags = struct.unpack("<H", raw[central + 8:central + 10])[0]
    choice = pick(rng, ["encrypted", "local flag 5", "local flag 6", "method", "size", "utf-8"])
    if choice == "encrypted":
        raw = patch(raw, central + 8, "<H", flags | 0x1)
        return patch(raw, local + 6, "<H", flags | 0x1)
    if choice.startswith("local flag"):
        return patch(raw, local + 6, "<H", flags | (1 << int(choice[-1])))
    if choice == "method":
        method = pick(rng, [1, 6, 12, 14, 93, 98, 99, 0xFFFF])
        raw = patch(raw, central + 10, "<H", method)
        return patch(raw, local + 8, "<H", method)
    if choice == "size":
        return patch(raw, central + 24, "<I", pick(rng, [2 ** 31, 2 ** 32 - 1, 0, 1]))
    raw = patch(raw, central + 8, "<H", flags | 0x800)
    return patch(raw, central + 46, "B", 0xFF)


MUTATIONS = [truncate, flip_bits, overwrite_bytes, insert_garbage,
             mutate_header_field, mutate_header_field, mutate_header_field, hostile_header_text,
             array_wrong_dtype, array_wrong_shape, array_out_of_range, array_out_of_range,
             drop_member, extra_member, damage_deflate, absurd_npy_header, zip_member_flags]


# -- the run ----------------------------------------------------------------------------------
def check_reads(path, header, arrays):
    """A file that reads is a valid model."""
    validate(header, arrays, str(path))
    assert len(arrays) == len(header["layers"])


def check_reference(path, header, rng):
    shape = tuple(header["input"]["shape"])
    if math.prod(shape) > 1 << 16:
        return
    images = torch.from_numpy(rng.integers(0, 256, (1,) + shape, dtype=np.uint8))
    logits = IntegerModel.load(str(path))(images)
    assert logits.shape[0] == 1
    return images, logits


def check_compile(path, out, images, logits):
    """The compiler fails only with UserError and then leaves nothing behind;
    when it compiles, its golden model gives the reference's logits."""
    try:
        network = write_compiled(str(path), "small", out, images.numpy())
    except UserError:
        assert not out.exists(), "a failed compile left its output directory"
        assert os.listdir(out.parent) == [], f"a failed compile left {os.listdir(out.parent)}"
        return "compile rejected"
    golden = np.load(out / "golden.npz")[f"layer{len(network.layers) - 1}"]
    assert np.array_equal(golden.reshape(1, -1), logits.numpy().reshape(1, -1))
    shutil.rmtree(out)
    return "compiled"


def test_damaged_model_files_give_user_errors(model, tmp_path):
    path = tmp_path / "case.mpq"
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    counts, failures = {}, []
    started = time.perf_counter()
    for case in range(CASES):
        rng = np.random.default_rng([SEED, case])
        mutation = MUTATIONS[case % len(MUTATIONS)]
        path.write_bytes(mutation(rng, model))
        stage = "read"
        try:
            try:
                header, arrays = read_model_file(str(path))
            except UserError as error:
                message = str(error)
                assert str(path) in message and len(message) < 1000, message
                outcome = "read rejected"
            else:
                check_reads(path, header, arrays)
                stage, outcome = "reference", "read"
                result = check_reference(path, header, rng)
                if result is not None and rng.random() < COMPILE_FRACTION:
                    stage = "compile"
                    outcome = check_compile(path, outputs / f"out{case}", *result)
        except UserError:
            outcome = f"{stage} rejected"
        except Exception as error:  # noqa: BLE001 - every other exception is the failure
            failures.append(f"case {case} ({mutation.__name__}, {stage}): {type(error).__name__}: "
                            f"{str(error)[:300]}")
            continue
        counts[outcome] = counts.get(outcome, 0) + 1
    elapsed = time.perf_counter() - started
    print(f"\n{CASES} cases (seed {SEED}) in {elapsed:.1f} s: {counts}")
    assert not failures, (f"{len(failures)} of {CASES} cases (MPQ_FUZZ_SEED={SEED}) raised "
                          "something other than UserError:\n" + "\n".join(failures[:30]))
    # The run is only worth something if many cases get past the reader.
    assert counts.get("read rejected", 0) > CASES // 3
    assert sum(v for k, v in counts.items() if k != "read rejected") > CASES // 20
    if CASES >= 1000:
        assert counts.get("compiled", 0) >= 10 and counts.get("compile rejected", 0) >= 10
