"""The integer model file (format `mpq-model`, version 1; docs/model_format.md).

One zip archive: `header.json` (format, version, input, group definition and
per-layer fields) and one `.npy` array per layer field, `layers/<i>/<field>.npy`.
Arrays are read with `allow_pickle=False`; every field is checked on loading
and a bad file raises `UserError` naming the field.
"""

import io
import json
import os
import subprocess
import zipfile

import numpy as np
import torch

from sw import fixedpoint
from sw.errors import UserError
from sw.quantize import groups
from sw.quantize.config import ACT_BITS, INPUT_BITS, WEIGHT_BITS

FORMAT = "mpq-model"
VERSION = 1
HEADER = "header.json"
MAX_WEIGHT_SHIFT = 7  # q << e must fit the 8-bit weight path

# Array fields: name -> (dtype, needed in the last layer, needed in hidden layers)
ARRAYS = {
    "weight": (np.int8, True, True),
    "weight_bits": (np.uint8, True, True),
    "weight_shift": (np.uint8, True, True),
    "bias": (np.int32, True, True),
    "requant_multiplier": (np.int16, False, True),
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
    step = torch.ones(())
    for layer in network.layers:
        fields, layer_arrays, step = layer.cpu().export(step)
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


def write_model_file(network, path, metadata=None):
    """Export a QuantNetwork to `path`, atomically."""
    try:
        header, arrays = network_integers(network)
    except ValueError as error:  # e.g. a multiplier out of range
        raise UserError(f"cannot export: {error}") from None
    header["metadata"] = dict(metadata or {}, git_revision=git_revision())
    validate(header, arrays, path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(HEADER, json.dumps(header, indent=1))
        for index, layer_arrays in enumerate(arrays):
            for key, value in layer_arrays.items():
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
                archive.writestr(f"layers/{index}/{key}.npy", buffer.getvalue())
    os.replace(temporary, path)
    return header


def read_model_file(path):
    """`(header, arrays)` from a model file, checked field by field."""
    if not os.path.isfile(path):
        raise UserError(f"no model file at {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if HEADER not in names:
                raise UserError(f"{path}: field `header.json` is missing (not an {FORMAT} file?)")
            try:
                header = json.loads(archive.read(HEADER))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise UserError(f"{path}: field `header.json` is not valid JSON: {error}") from None
            _check_header_top(header, path)
            arrays = []
            for index, layer in enumerate(header["layers"]):
                layer_arrays = {}
                for key, (_, in_last, in_hidden) in ARRAYS.items():
                    member = f"layers/{index}/{key}.npy"
                    if member not in names:
                        is_last = index == len(header["layers"]) - 1
                        if (in_last if is_last else in_hidden):
                            raise UserError(f"{path}: field `layers[{index}].{key}` is missing")
                        continue
                    try:
                        layer_arrays[key] = np.lib.format.read_array(
                            io.BytesIO(archive.read(member)), allow_pickle=False)
                    except (ValueError, OSError, EOFError) as error:
                        raise UserError(f"{path}: field `layers[{index}].{key}` cannot be read: "
                                        f"{error}") from None
                arrays.append(layer_arrays)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as error:
        raise UserError(f"{path}: not a readable {FORMAT} file (truncated or corrupted: {error})") from None
    validate(header, arrays, path)
    return header, arrays


# -- validation -------------------------------------------------------------------------------
def _fail(path, field, message):
    raise UserError(f"{path}: field `{field}` {message}")


def _check_header_top(header, path):
    if not isinstance(header, dict):
        _fail(path, "header.json", "must be a JSON object")
    if header.get("format") != FORMAT:
        _fail(path, "format", f"is {header.get('format')!r}, expected {FORMAT!r}")
    if "version" not in header:
        _fail(path, "version", "is missing")
    if header["version"] != VERSION:
        _fail(path, "version", f"is {header['version']!r}; this mpq reads version {VERSION}")
    if not isinstance(header.get("layers"), list) or not header["layers"]:
        _fail(path, "layers", "must be a non-empty list")


def _int_field(path, record, key, where, low=None, high=None, allowed=None, nullable=False):
    if key not in record:
        _fail(path, f"{where}.{key}", "is missing")
    value = record[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, f"{where}.{key}", f"must be an integer, got {value!r}")
    if allowed is not None and value not in allowed:
        _fail(path, f"{where}.{key}", f"must be one of {list(allowed)}, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(path, f"{where}.{key}", f"must be in [{low}, {high}], got {value}")
    return value


def _pair_field(path, record, key, where, low):
    value = record.get(key)
    if key not in record:
        _fail(path, f"{where}.{key}", "is missing")
    if (not isinstance(value, list) or len(value) != 2 or
            any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in value)):
        _fail(path, f"{where}.{key}", f"must be two integers >= {low}, got {value!r}")
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


def validate(header, arrays, path="model"):
    """Check every field of a model (header dict and per-layer arrays)."""
    _check_header_top(header, path)
    source = header.get("input")
    if not isinstance(source, dict):
        _fail(path, "input", "must be an object")
    shape = source.get("shape")
    if (not isinstance(shape, list) or len(shape) != 3 or
            any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
        _fail(path, "input.shape", f"must be [C, H, W] positive integers, got {shape!r}")
    _int_field(path, source, "bits", "input", allowed=(INPUT_BITS,))
    if source.get("signed") is not False:
        _fail(path, "input.signed", "must be false (raw unsigned pixels)")
    group_size = _int_field(path, header, "group_size", "header", low=1)
    if header.get("group_axis") != "input_channel":
        _fail(path, "group_axis", f"must be 'input_channel', got {header.get('group_axis')!r}")
    if header.get("logits") != "accumulator_plus_bias":
        _fail(path, "logits", f"must be 'accumulator_plus_bias', got {header.get('logits')!r}")
    layers = header["layers"]
    if len(arrays) != len(layers):
        _fail(path, "layers", f"has {len(layers)} entries but {len(arrays)} sets of arrays")
    current = list(shape)            # (C, H, W) or (F,)
    bits_in = INPUT_BITS
    for index, (layer, layer_arrays) in enumerate(zip(layers, arrays)):
        where = f"layers[{index}]"
        is_last = index == len(layers) - 1
        if not isinstance(layer, dict):
            _fail(path, where, "must be an object")
        if not isinstance(layer.get("name"), str):
            _fail(path, f"{where}.name", "must be a string")
        kind = layer.get("kind")
        if kind not in ("conv2d", "linear"):
            _fail(path, f"{where}.kind", f"must be 'conv2d' or 'linear', got {kind!r}")
        if not isinstance(layer.get("flatten_input"), bool):
            _fail(path, f"{where}.flatten_input", "must be true or false")
        if layer["flatten_input"]:
            current = [int(np.prod(current))]
        in_channels = _int_field(path, layer, "in_channels", where, low=1)
        out_channels = _int_field(path, layer, "out_channels", where, low=1)
        input_bits = _int_field(path, layer, "input_bits", where, allowed=(INPUT_BITS,) + ACT_BITS)
        if input_bits != bits_in:
            _fail(path, f"{where}.input_bits", f"is {input_bits} but the previous output has {bits_in} bits")
        if current[0] != in_channels:
            _fail(path, f"{where}.in_channels", f"is {in_channels} but its input has {current[0]} channels")
        if kind == "conv2d":
            if len(current) != 3:
                _fail(path, f"{where}.kind", "is conv2d but its input is flat")
            kernel = _pair_field(path, layer, "kernel_size", where, 1)
            stride = _pair_field(path, layer, "stride", where, 1)
            padding = _pair_field(path, layer, "padding", where, 0)
            size = [(current[1 + i] + 2 * padding[i] - kernel[i]) // stride[i] + 1 for i in range(2)]
            if min(size) < 1:
                _fail(path, f"{where}.kernel_size", f"is larger than the padded input {current[1:]}")
            weight_shape = (out_channels, in_channels, kernel[0], kernel[1])
            current = [out_channels] + size
        else:
            if len(current) != 1:
                _fail(path, f"{where}.flatten_input", "must be true: a linear layer takes a flat input")
            weight_shape = (out_channels, in_channels)
            current = [out_channels]
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
        _check_array(path, layer_arrays, "bias", where, (out_channels,))
        for key in ("weight_step", "output_step"):
            if not isinstance(layer.get(key), (int, float)) or isinstance(layer.get(key), bool):
                _fail(path, f"{where}.{key}", "must be a number")
        if is_last:
            for key in ("act_bits", "requant_shift", "pool"):
                if layer.get(key, "missing") is not None:
                    _fail(path, f"{where}.{key}", "must be null in the last layer (it returns logits)")
            if "requant_multiplier" in layer_arrays:
                _fail(path, f"{where}.requant_multiplier", "must be absent in the last layer")
            continue
        bits_in = _int_field(path, layer, "act_bits", where, allowed=ACT_BITS)
        _int_field(path, layer, "requant_shift", where, low=0, high=fixedpoint.SHIFT_MAX)
        _check_array(path, layer_arrays, "requant_multiplier", where, (out_channels,))
        pool = layer.get("pool", "missing")
        if pool == "missing":
            _fail(path, f"{where}.pool", "is missing")
        if pool is not None:
            if kind != "conv2d" or not isinstance(pool, dict):
                _fail(path, f"{where}.pool", "must be null or an object (conv2d layers only)")
            kernel = _pair_field(path, pool, "kernel_size", f"{where}.pool", 1)
            stride = _pair_field(path, pool, "stride", f"{where}.pool", 1)
            padding = _pair_field(path, pool, "padding", f"{where}.pool", 0)
            if any(2 * padding[i] > kernel[i] for i in range(2)):
                _fail(path, f"{where}.pool.padding", "must be at most half the kernel")
            current = [current[0]] + [(current[1 + i] + 2 * padding[i] - kernel[i]) // stride[i] + 1
                                      for i in range(2)]
            if min(current[1:]) < 1:
                _fail(path, f"{where}.pool.kernel_size", "is larger than its input")
    if "num_classes" in header and header["num_classes"] != current[0]:
        _fail(path, "num_classes", f"is {header['num_classes']} but the last layer has {current[0]} outputs")
