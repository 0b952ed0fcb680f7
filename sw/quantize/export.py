"""The integer model file (format `mpq-model`, version 2; docs/model_format.md).

One zip archive: `header.json` (format, version, input, group definition and
per-layer fields, each layer naming its inputs) and one `.npy` array per layer
field, `layers/<i>/<field>.npy`. Version 1 files (chains, no `inputs`) still
load: `layer_sources` reads both.
Arrays are read with `allow_pickle=False`; every field is checked on loading
and a bad file raises `UserError` naming the field.
"""

import io
import json
import math
import os
import re
import subprocess
import zipfile
import zlib

import numpy as np
import torch

from common import fixedpoint
from common.errors import UserError
from common.files import writing_file
from sw.quantize import groups
from sw.quantize.config import ACT_BITS, INPUT_BITS, WEIGHT_BITS

FORMAT = "mpq-model"
VERSION = 2
VERSIONS = (1, 2)          # what this reader takes
IMAGE_NAME = "input"       # what `inputs` calls the image
IMAGE = -1                 # ... and `layer_sources`
HEADER = "header.json"
MAX_WEIGHT_SHIFT = 7  # q << e must fit the 8-bit weight path
# Bounds that keep every size in int64 (far above any real network): a group
# longer than a layer's channels is one group per channel anyway.
MAX_GROUP_SIZE = 1 << 20
MAX_EXTENT = 1 << 16      # the input's height and width, and any padded map's

# Array fields: name -> (dtype, needed in the last layer, needed in hidden layers)
ARRAYS = {
    "weight": (np.int8, True, True),
    "weight_bits": (np.uint8, True, True),
    "weight_shift": (np.uint8, True, True),
    "bias": (np.int32, True, True),
    "requant_multiplier": (np.int16, False, True),
    "residual_multiplier": (np.int16, False, False),   # a layer with a residual input only
}


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def network_integers(network):
    """`(header, arrays)` of a QuantNetwork (put in eval mode)."""
    network.eval()
    layers, arrays = [], []
    steps = {IMAGE: torch.ones(())}
    names = {IMAGE: IMAGE_NAME}
    for index, (layer, (source, residual)) in enumerate(zip(network.layers, network.sources)):
        if layer.name == IMAGE_NAME or layer.name in names.values():
            raise UserError(f"cannot export: two layers (or a layer and the image) are named "
                            f"{layer.name!r}; rename the module")
        fields, layer_arrays, step = layer.cpu().export(
            steps[source], steps[residual] if residual is not None else None)
        fields["inputs"] = [names[source]] + ([names[residual]] if residual is not None else [])
        steps[index], names[index] = step, layer.name
        layers.append(fields)
        arrays.append({key: value.cpu().numpy().astype(ARRAYS[key][0])
                       for key, value in layer_arrays.items()})
    header = {
        "format": FORMAT,
        "version": VERSION,
        "input": {"shape": list(network.input_shape), "bits": INPUT_BITS, "signed": False},
        "group_size": network.layers[0].weight_quantizer.group_size,
        "group_axis": "input_channel",
        "logits": "accumulator_plus_bias",
        "num_classes": layers[-1]["out_channels"],
        "layers": layers,
    }
    return header, arrays


def layer_sources(header):
    """`(input, residual)` per layer of a validated header: the index of the
    layer whose output it reads (`IMAGE` for the image) and of the layer it
    adds before its clamp (or None). Version 1 files are chains."""
    if header["version"] == 1:
        return [(index - 1 if index else IMAGE, None) for index in range(len(header["layers"]))]
    index_of = {IMAGE_NAME: IMAGE}
    sources = []
    for index, layer in enumerate(header["layers"]):
        inputs = [index_of[name] for name in layer["inputs"]]
        sources.append((inputs[0], inputs[1] if len(inputs) > 1 else None))
        index_of[layer["name"]] = index
    return sources


def write_model_file(network, path, metadata=None):
    """Export a QuantNetwork to `path`, atomically."""
    try:
        header, arrays = network_integers(network)
    except ValueError as error:  # e.g. a multiplier out of range
        raise UserError(f"cannot export: {error}") from None
    header["metadata"] = dict(metadata or {}, git_revision=git_revision())
    validate(header, arrays, path)
    with writing_file(path) as temporary:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(HEADER, json.dumps(header, indent=1))
            for index, layer_arrays in enumerate(arrays):
                for key, value in layer_arrays.items():
                    buffer = io.BytesIO()
                    np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
                    archive.writestr(f"layers/{index}/{key}.npy", buffer.getvalue())
    return header


def read_model_file(path):
    """`(header, arrays)` from a model file, checked field by field.

    Anything wrong with the file (not a zip, truncated, damaged compressed
    data, a hostile `.npy` header, a bad field) raises `UserError` naming the
    file and the field."""
    _check_is_file(path)
    try:
        archive = zipfile.ZipFile(path)
    except OSError as error:
        raise UserError(f"{path}: cannot read the file ({error.strerror or _show(error)})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
            NotImplementedError) as error:   # ValueError: e.g. a member name that is not UTF-8
        raise UserError(f"{path}: not a readable {FORMAT} file (truncated or corrupted: "
                        f"{_show(error)})") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        if HEADER not in members:
            raise UserError(f"{path}: field `header.json` is missing (not an {FORMAT} file?)")
        text = _read_member(archive, members[HEADER], path, "header.json", MAX_HEADER_BYTES)
        try:
            header = json.loads(text)
        except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, nesting
            raise UserError(f"{path}: field `header.json` is not valid JSON: {_show(error)}") from None
        _check_header_top(header, path)
        arrays = []
        for index in range(len(header["layers"])):
            is_last = index == len(header["layers"]) - 1
            layer_arrays = {}
            for key, (dtype, in_last, in_hidden) in ARRAYS.items():
                field = f"layers[{index}].{key}"
                member = f"layers/{index}/{key}.npy"
                if member not in members:
                    if in_last if is_last else in_hidden:
                        raise UserError(f"{path}: field `{field}` is missing")
                    continue
                data = _read_member(archive, members[member], path, field, MAX_ARRAY_BYTES)
                layer_arrays[key] = _parse_npy(data, path, field, dtype)
            arrays.append(layer_arrays)
    validate(header, arrays, path)
    return header, arrays


MAX_HEADER_BYTES = 16 << 20        # header.json
MAX_ARRAY_BYTES = 1 << 30          # one .npy member
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_ZIP_UNSUPPORTED_FLAGS = 0x1 | 0x20 | 0x40   # encrypted, compressed patch data, strong encryption


def _check_is_file(path):
    if os.path.isdir(path):
        try:
            inside = sorted(name for name in os.listdir(path) if name.endswith(".mpq"))
        except OSError:
            inside = []
        if "model.mpq" in inside:        # what `mpq compile` writes into its output directory
            inside = ["model.mpq"]
        inside = [os.path.join(path, name) for name in inside]
        hint = (f"; give the model file inside it: {inside[0]}" if len(inside) == 1
                else f"; give one of the model files inside it: {', '.join(inside[:5])}" if inside
                else "; give a model file (.mpq, from `mpq export`)")
        raise UserError(f"{path} is a directory, not a model file{hint}")
    if not os.path.isfile(path):
        raise UserError(f"no model file at {path}")


def _read_member(archive, info, path, field, limit):
    """The bytes of one zip member, after checking what zipfile would trip on."""
    if info.flag_bits & _ZIP_UNSUPPORTED_FLAGS:
        _fail(path, field, "is encrypted in the zip archive; a model file is never encrypted: "
                           "use the file `mpq export` wrote")
    if info.compress_type not in _ZIP_METHODS:
        _fail(path, field, f"uses zip compression method {info.compress_type}; model files use "
                           "deflate (or none): use the file `mpq export` wrote")
    if info.file_size > limit:
        _fail(path, field, f"is {info.file_size} bytes, more than the {limit} this reader takes "
                           "(corrupted?)")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as error:
        # damaged compressed data, a bad CRC, a local header that disagrees with the
        # directory; NotImplementedError: flags only the local header carries.
        _fail(path, field, f"cannot be read: the file is truncated or corrupted ({_show(error)}); "
                           "export or copy it again")


def _npy_dtypes():
    """Every spelling of the plain numeric dtypes an `.npy` header may give."""
    known = {}
    for order in "<>|=":
        for kind in "biuf":
            for size in "1248":
                try:
                    dtype = np.dtype(order + kind + size)
                except TypeError:           # e.g. b2, f1: not a dtype
                    continue
                known[order + kind + size] = dtype
    return known


_NPY_DTYPES = _npy_dtypes()
_NPY_MAGIC = b"\x93NUMPY"
_NPY_LENGTH_BYTES = {1: 2, 2: 4, 3: 4}      # npy format major version -> header length field
_NPY_HEADER = re.compile(r"\{\s*'descr'\s*:\s*'(?P<descr>[^']*)'\s*,\s*'fortran_order'\s*:\s*"
                         r"(?P<fortran>True|False)\s*,\s*'shape'\s*:\s*\((?P<shape>[0-9,\s]*)\)"
                         r"\s*,?\s*\}\s*")
_NPY_MAX_DIMS = 16
_NPY_MAX_HEADER = 1 << 16                   # numpy itself refuses more than 10000 characters


def _parse_npy(data, path, field, expected):
    """One `.npy` array, parsed and checked here (no pickle, no eval): the
    header must be numpy's, the dtype a plain number, the data exactly as
    long as the shape needs."""
    def bad(message):
        _fail(path, field, f"is not a valid .npy array: {message}; export the model again")

    if data[:6] != _NPY_MAGIC or len(data) < 8:
        bad("no .npy magic")
    major = data[6]
    if major not in _NPY_LENGTH_BYTES:
        bad(f"unknown .npy version {major}.{data[7]}")
    start = 8 + _NPY_LENGTH_BYTES[major]
    end = start + int.from_bytes(data[8:start], "little")
    if len(data) < start or end > len(data):
        bad("the header is longer than the member")
    if end - start > _NPY_MAX_HEADER:
        bad(f"a header of {end - start} bytes")
    match = _NPY_HEADER.fullmatch(data[start:end].decode("latin-1"))
    if match is None:
        bad(f"unreadable header {_show(data[start:end])}")
    descr = match["descr"]
    if descr not in _NPY_DTYPES:
        _fail(path, field, f"has dtype {_show(descr)} (not a plain number type), expected "
                           f"{np.dtype(expected)}")
    dtype = _NPY_DTYPES[descr]
    dims = [part.strip() for part in match["shape"].split(",")]
    if dims and not dims[-1]:
        dims.pop()                          # (4,): the trailing comma of a 1-tuple
    if not all(d.isdigit() and len(d) <= 20 for d in dims) or len(dims) > _NPY_MAX_DIMS:
        bad(f"bad shape ({_show(match['shape'])})")
    shape = tuple(int(d) for d in dims)
    size = len(data) - end
    if any(d > size for d in shape) or math.prod(shape) * dtype.itemsize != size:
        bad(f"its shape {_show(shape)} of {dtype} does not match its {size} bytes of data")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=end)
    return array.reshape(shape, order="F" if match["fortran"] == "True" else "C").copy()


def _dims(shape):
    return "x".join(str(d) for d in shape)


def _show(value, limit=80):
    """A short repr for messages (a hostile field can be huge)."""
    text = str(value) if isinstance(value, BaseException) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- validation -------------------------------------------------------------------------------
def _fail(path, field, message):
    raise UserError(f"{path}: field `{field}` {message}")


def _check_header_top(header, path):
    if not isinstance(header, dict):
        _fail(path, "header.json", "must be a JSON object")
    if "format" not in header:
        _fail(path, "format", f"is missing (not an {FORMAT} file?)")
    if header["format"] != FORMAT:
        _fail(path, "format", f"is {_show(header['format'])}, expected {FORMAT!r}")
    if "version" not in header:
        _fail(path, "version", "is missing")
    version = header["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        _fail(path, "version", f"must be an integer ({VERSION}), got {_show(version)}")
    if version not in VERSIONS:
        _fail(path, "version", f"is {_show(version)}; this mpq reads versions "
                               f"{', '.join(map(str, VERSIONS))}: export the model again with "
                               "this mpq")
    if "layers" not in header:
        _fail(path, "layers", "is missing")
    if not isinstance(header["layers"], list) or not header["layers"]:
        _fail(path, "layers", f"must be a non-empty list, got {_show(header['layers'])}")


def _int_field(path, record, key, where, low=None, high=None, allowed=None, nullable=False):
    """`record[key]`, an integer (`where` is the record's field path; None at the top)."""
    field = f"{where}.{key}" if where else key
    if key not in record:
        _fail(path, field, "is missing")
    value = record[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, field, f"must be an integer, got {_show(value)}")
    if allowed is not None and value not in allowed:
        _fail(path, field, f"must be one of {list(allowed)}, got {_show(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (f"in [{low}, {high}]" if low is not None and high is not None
                  else f">= {low}" if low is not None else f"<= {high}")
        _fail(path, field, f"must be {bounds}, got {_show(value)}")
    return value


def _pair_field(path, record, key, where, low):
    if key not in record:
        _fail(path, f"{where}.{key}", "is missing")
    value = record[key]
    if (not isinstance(value, list) or len(value) != 2 or
            any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value)):
        _fail(path, f"{where}.{key}", f"must be two integers >= {low}, got {_show(value)}")
    return value


def _check_array(path, arrays, key, where, shape):
    field = f"{where}.{key}"
    if key not in arrays:
        _fail(path, field, "is missing")
    value = arrays[key]
    dtype = ARRAYS[key][0]
    if value.dtype != np.dtype(dtype):
        _fail(path, field, f"has dtype {value.dtype}, expected {np.dtype(dtype)}")
    if tuple(value.shape) != tuple(shape):
        _fail(path, field, f"has shape {tuple(value.shape)}, expected {tuple(shape)}")
    return value


class _Tensor:
    """A tensor of the model as validation tracks it."""

    def __init__(self, shape, bits, signed, label, trail):
        self.shape, self.bits, self.signed, self.label, self.trail = shape, bits, signed, label, trail


def _inputs_field(path, layer, where, tensors):
    field = f"{where}.inputs"
    if "inputs" not in layer:
        _fail(path, field, "is missing")
    inputs = layer["inputs"]
    if (not isinstance(inputs, list) or not 1 <= len(inputs) <= 2
            or not all(isinstance(name, str) for name in inputs)):
        _fail(path, field, f"must be a list of one or two names (the input, then the residual "
                           f"shortcut), got {_show(inputs)}")
    for name in inputs:
        if name not in tensors:
            _fail(path, field, f"names {_show(name)}, which is neither the model input "
                               f"({IMAGE_NAME!r}) nor an earlier layer")
    if len(inputs) == 2 and inputs[1] == IMAGE_NAME:
        _fail(path, field, "names the model input as a residual shortcut; a shortcut is a layer's "
                           "output")
    return inputs


def _bool_field(path, record, key, where, default):
    value = record.get(key, default)
    if not isinstance(value, bool):
        _fail(path, f"{where}.{key}", f"must be true or false, got {_show(value)}")
    return value


def _check_layer(path, layer, layer_arrays, where, inputs, group_size, is_last):
    """Check one layer against its input tensors; returns its output `_Tensor`."""
    source = inputs[0]
    kind = layer["kind"]
    if kind not in ("conv2d", "linear"):
        _fail(path, f"{where}.kind", f"must be 'conv2d' or 'linear', got {_show(kind)}")
    current, trail = list(source.shape), list(source.trail)
    flatten = _bool_field(path, layer, "flatten_input", where, False)
    global_pool = _bool_field(path, layer, "global_pool_input", where, False)
    if source.signed:
        _fail(path, f"{where}.inputs", f"reads {source.label}, whose codes are signed; a layer "
                                       "takes unsigned activations (signed codes are only a "
                                       "residual shortcut)")
    if flatten and global_pool:
        _fail(path, f"{where}.global_pool_input", "and flatten_input cannot both be true")
    if global_pool:
        if kind != "linear" or len(current) != 3:
            _fail(path, f"{where}.global_pool_input", "is true for a linear layer on a (C, H, W) "
                                                      "map only")
        current = [current[0]]
        trail.append(f"pooled {_dims(current)}")
    if flatten:
        current = [math.prod(current)]
        trail.append(f"flattened {_dims(current)}")
    in_channels = _int_field(path, layer, "in_channels", where, low=1)
    out_channels = _int_field(path, layer, "out_channels", where, low=1)
    input_bits = _int_field(path, layer, "input_bits", where, allowed=sorted({INPUT_BITS, *ACT_BITS}))
    if input_bits != source.bits:
        _fail(path, f"{where}.input_bits", f"is {input_bits} but its input ({source.label}) has "
                                           f"{source.bits} bits")
    if current[0] != in_channels:
        _fail(path, f"{where}.in_channels", f"is {in_channels} but its input ({source.label}) has "
                                            f"{current[0]} "
                                            f"{'features' if len(current) == 1 else 'channels'}"
                                            f"; shapes: {' -> '.join(trail)}")
    convolution = None
    if kind == "conv2d":
        if len(current) != 3:
            _fail(path, f"{where}.kind", f"is conv2d but its input ({source.label}) is flat")
        kernel = _pair_field(path, layer, "kernel_size", where, 1)
        stride = _pair_field(path, layer, "stride", where, 1)
        padding = _pair_field(path, layer, "padding", where, 0)
        padded = [current[1 + i] + 2 * padding[i] for i in range(2)]
        if max(padded) > MAX_EXTENT:
            _fail(path, f"{where}.padding", f"is {padding}: the padded input {_dims(padded)} "
                                            f"is larger than {MAX_EXTENT} a side")
        for key, value in (("kernel_size", kernel), ("stride", stride)):
            if any(value[i] > padded[i] for i in range(2)):
                _fail(path, f"{where}.{key}", f"is {value}, larger than the padded input "
                                              f"{_dims(padded)} ({source.label}, padding "
                                              f"{padding}); shapes: {' -> '.join(trail)}")
        size = [(padded[i] - kernel[i]) // stride[i] + 1 for i in range(2)]
        convolution = f"kernel {kernel}, stride {stride}, padding {padding}"
        weight_shape = (out_channels, in_channels, kernel[0], kernel[1])
        current = [out_channels] + size
    else:
        if len(current) != 1:
            _fail(path, f"{where}.flatten_input", "must be true: a linear layer takes a flat input")
        weight_shape = (out_channels, in_channels)
        current = [out_channels]
    trail.append(f"{where} {_dims(current)}")
    _check_weights(path, layer_arrays, where, weight_shape, group_size)
    _check_array(path, layer_arrays, "bias", where, (out_channels,))
    for key in ("weight_step", "output_step"):
        if key not in layer:
            _fail(path, f"{where}.{key}", "is missing")
        step = layer[key]
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step):
            _fail(path, f"{where}.{key}", f"must be a finite number, got {_show(step)}")
    label = f"the output of {where}"
    if is_last:
        for key in ("act_bits", "requant_shift", "pool", "act_signed", "residual_shift"):
            if layer.get(key) is not None or (key in ("act_bits", "requant_shift", "pool")
                                              and key not in layer):
                _fail(path, f"{where}.{key}", "must be null in the last layer (it returns logits)")
        for key in ("requant_multiplier", "residual_multiplier"):
            if key in layer_arrays:
                _fail(path, f"{where}.{key}", "must be absent in the last layer")
        if len(inputs) > 1:
            _fail(path, f"{where}.inputs", "has a residual shortcut in the last layer (it returns "
                                           "logits)")
        return _Tensor(current, None, False, label, trail)
    act_bits = _int_field(path, layer, "act_bits", where, allowed=ACT_BITS)
    shift = _int_field(path, layer, "requant_shift", where, low=0, high=fixedpoint.SHIFT_MAX)
    _check_array(path, layer_arrays, "requant_multiplier", where, (out_channels,))
    signed = _bool_field(path, layer, "act_signed", where, False)
    _check_residual(path, layer, layer_arrays, where, inputs, current, shift)
    current, trail = _check_pool(path, layer, where, kind, current, trail, convolution, signed)
    return _Tensor(current, act_bits, signed, label, trail)


def _check_weights(path, layer_arrays, where, weight_shape, group_size):
    weight = _check_array(path, layer_arrays, "weight", where, weight_shape)
    group_dims = groups.group_shape(weight_shape, group_size)
    bits = _check_array(path, layer_arrays, "weight_bits", where, group_dims)
    shift = _check_array(path, layer_arrays, "weight_shift", where, group_dims)
    if not np.isin(bits, WEIGHT_BITS).all():
        _fail(path, f"{where}.weight_bits", f"must hold values in {WEIGHT_BITS}")
    if (shift > MAX_WEIGHT_SHIFT).any():
        _fail(path, f"{where}.weight_shift", f"must hold values in [0, {MAX_WEIGHT_SHIFT}]")
    per_weight = groups.expand_to_weights(torch.from_numpy(bits.astype(np.int64)), weight_shape,
                                          group_size).numpy()
    low, high = -(1 << (per_weight - 1)), (1 << (per_weight - 1)) - 1
    if ((weight < low) | (weight > high)).any():
        _fail(path, f"{where}.weight", "holds a value outside its group's weight_bits range")


def _check_residual(path, layer, layer_arrays, where, inputs, current, shift):
    """The residual shortcut: same shape as the convolution's output, its
    multiplier and shift (absent without one)."""
    if len(inputs) == 1:
        if layer.get("residual_shift") is not None:
            _fail(path, f"{where}.residual_shift", "must be null without a residual input")
        if "residual_multiplier" in layer_arrays:
            _fail(path, f"{where}.residual_multiplier", "must be absent without a residual input")
        return
    shortcut = inputs[1]
    if shortcut.shape != current:
        _fail(path, f"{where}.inputs", f"adds {shortcut.label} of shape {_dims(shortcut.shape)} "
                                       f"to an output of shape {_dims(current)}; a residual add "
                                       "needs equal shapes")
    _int_field(path, layer, "residual_shift", where, low=0, high=shift)
    _check_array(path, layer_arrays, "residual_multiplier", where, (current[0],))


def _check_pool(path, layer, where, kind, current, trail, convolution, signed):
    pool = layer.get("pool", "missing")
    if pool == "missing":
        _fail(path, f"{where}.pool", "is missing")
    if pool is None:
        return current, trail
    if kind != "conv2d" or not isinstance(pool, dict) or signed:
        _fail(path, f"{where}.pool", "must be null or an object (conv2d layers with unsigned "
                                     "outputs only)")
    kernel = _pair_field(path, pool, "kernel_size", f"{where}.pool", 1)
    stride = _pair_field(path, pool, "stride", f"{where}.pool", 1)
    padding = _pair_field(path, pool, "padding", f"{where}.pool", 0)
    if any(2 * padding[i] > kernel[i] for i in range(2)):
        _fail(path, f"{where}.pool.padding", f"is {padding}, must be at most half the "
                                             f"kernel {kernel}")
    padded = [current[1 + i] + 2 * padding[i] for i in range(2)]
    for key, value in (("kernel_size", kernel), ("stride", stride)):
        if any(value[i] > padded[i] for i in range(2)):
            _fail(path, f"{where}.pool.{key}", f"is {value}, larger than its padded input "
                                               f"{_dims(padded)} (the output of {where}'s "
                                               f"convolution: {convolution}); shapes: "
                                               f"{' -> '.join(trail)}")
    current = [current[0]] + [(padded[i] - kernel[i]) // stride[i] + 1 for i in range(2)]
    return current, trail + [f"pooled {_dims(current)}"]


def validate(header, arrays, path="model"):
    """Check every field of a model (header dict and per-layer arrays)."""
    _check_header_top(header, path)
    source = header.get("input")
    if not isinstance(source, dict):
        _fail(path, "input", "must be an object")
    shape = source.get("shape")
    if "shape" not in source:
        _fail(path, "input.shape", "is missing")
    if (not isinstance(shape, list) or len(shape) != 3 or
            any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
        _fail(path, "input.shape", f"must be [C, H, W] positive integers, got {_show(shape)}")
    if max(shape[1:]) > MAX_EXTENT:
        _fail(path, "input.shape", f"is {shape}: images larger than {MAX_EXTENT} pixels a side "
                                   "are not supported")
    _int_field(path, source, "bits", "input", allowed=(INPUT_BITS,))
    if source.get("signed") is not False:
        _fail(path, "input.signed", "must be false (raw unsigned pixels)")
    group_size = _int_field(path, header, "group_size", None, low=1, high=MAX_GROUP_SIZE)
    if header.get("group_axis") != "input_channel":
        _fail(path, "group_axis", f"must be 'input_channel', got {_show(header.get('group_axis'))}")
    if header.get("logits") != "accumulator_plus_bias":
        _fail(path, "logits", f"must be 'accumulator_plus_bias', got {_show(header.get('logits'))}")
    layers = header["layers"]
    if len(arrays) != len(layers):
        _fail(path, "layers", f"has {len(layers)} entries but {len(arrays)} sets of arrays")
    # Every tensor so far: name -> its shape, bits, signedness, and how to name it.
    tensors = {IMAGE_NAME: _Tensor(list(shape), INPUT_BITS, False, "the model input",
                                   [f"input {_dims(shape)}"])}
    previous = IMAGE_NAME
    for index, (layer, layer_arrays) in enumerate(zip(layers, arrays)):
        where = f"layers[{index}]"
        if not isinstance(layer, dict):
            _fail(path, where, "must be an object")
        for key in ("name", "kind", "flatten_input"):
            if key not in layer:
                _fail(path, f"{where}.{key}", "is missing")
        name = layer["name"]
        if not isinstance(name, str):
            _fail(path, f"{where}.name", f"must be a string, got {_show(name)}")
        if header["version"] == 1:
            inputs, name = [previous], f"{where}"   # names need not be unique in version 1
        else:
            if name in tensors:
                _fail(path, f"{where}.name", f"is {_show(name)}, which names an earlier layer or "
                                             "the model input; names must be unique")
            inputs = _inputs_field(path, layer, where, tensors)
        output = _check_layer(path, layer, layer_arrays, where, [tensors[n] for n in inputs],
                              group_size, is_last=index == len(layers) - 1)
        tensors[name] = output
        previous = name
    current = output.shape
    if "num_classes" in header:
        num_classes = _int_field(path, header, "num_classes", None, low=1)
        if num_classes != current[0]:
            _fail(path, "num_classes", f"is {num_classes} but the last layer has {current[0]} outputs")
