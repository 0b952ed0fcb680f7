"""Every rejection path: a UserError that names the layer and the limit."""

import dataclasses

import numpy as np
import pytest

from common.errors import UserError
from hw.config import CONFIGS, AcceleratorConfig
from hw.isa import Register
from sw.compile import LayerSpec, Placement, compile_layer
from sw.compile import encoding as enc
from sw.compile.network import compile_network, layer_specs
from sw.quantize.export import validate

SMALL = CONFIGS["small"]
TINY = AcceleratorConfig("tiny", rows=2, cols=2, acc_width=24, program_depth=64,
                         chunk_depth=16, wptr_depth=4, param_depth=8, weight_depth=32,
                         act_depth=64, result_depth=16)


def layer(name="bad", kind="conv", cout=2, cin=16, kernel=1, size=(2, 2), bits=2, shift=0,
          act_in=2, act_out=2, raw=False, pool=False, padding=0, weights=None, **overrides):
    wshape = (cout, cin) if kind == "linear" else (cout, cin, kernel, kernel)
    gshape = (cout, -(-cin // 16)) if kind == "linear" else (cout, kernel, kernel,
                                                             -(-cin // 16))
    fields = dict(
        kind=kind, weights=np.zeros(wshape, np.int64) if weights is None else weights,
        precision=np.full(gshape, bits), shift=np.full(gshape, shift),
        bias=np.zeros(cout, np.int64), multiplier=None if raw else np.ones(cout, np.int64),
        requant_shift=None if raw else 0, act_bits_in=act_in,
        act_bits_out=None if raw else act_out,
        input_shape=(cin, 1, 1) if kind == "linear" else (cin, *size),
        padding=padding, pool=pool, raw=raw, name=name)
    fields.update(overrides)
    return LayerSpec(**fields)


def rejects(limit, make, config=SMALL, placement=None):
    with pytest.raises(UserError) as info:
        compile_layer(make(), config, placement)
    message = str(info.value)
    assert "'bad'" in message, message
    assert limit in message, message
    return message


SPEC_CASES = {
    "kind": ("kind must be", lambda: layer(kind="deconv")),
    "float weights": ("must be integers", lambda: layer(weights=np.zeros((2, 16, 1, 1)))),
    "input channels": ("channels", lambda: layer(input_shape=(8, 2, 2))),
    "kernel too big for input": ("does not fit", lambda: layer(kernel=3, size=(2, 2))),
    "precision shape": ("group shape", lambda: layer(precision=np.full((2, 1), 2))),
    "precision 5": ("not supported", lambda: layer(bits=5)),
    "p + e": ("p + e must be <= 4", lambda: layer(bits=3, shift=2)),
    "negative shift": ("negative shift", lambda: layer(shift=-1)),
    "8-bit mixed": ("whole layer", lambda: layer(
        precision=np.array([8, 2]).reshape(2, 1, 1, 1))),
    "8-bit shift": ("shift 0", lambda: layer(bits=8, shift=1)),
    "weight not q << e": ("group (1, 0, 0, 0)", lambda: layer(
        weights=np.pad(np.full((1, 16, 1, 1), 3), ((1, 0), (0, 0), (0, 0), (0, 0))))),
    "weight odd for e=1": ("not q << 1", lambda: layer(
        shift=1, weights=np.ones((2, 16, 1, 1), np.int64))),
    "act bits in": ("input activation bits", lambda: layer(act_in=5)),
    "act bits out": ("output activation bits", lambda: layer(act_out=8)),
    "multiplier": ("16-bit", lambda: layer(multiplier=np.full(2, 1 << 15))),
    "requant shift": ("[0, 47]", lambda: layer(requant_shift=48)),
    "bias": ("32-bit", lambda: layer(bias=np.full(2, 1 << 31))),
    "raw pool": ("cannot pool", lambda: layer(raw=True, pool=True)),
    "pool too small": ("pooling", lambda: layer(pool=True, size=(1, 4))),
    "linear padding": ("no padding", lambda: layer(kind="linear", padding=1)),
    "linear stride": ("no stride", lambda: layer(kind="linear", stride=2)),
    "stride 0": ("stride must be >= 1", lambda: layer(stride=0)),
    "stride-2 pool too small": ("pooling", lambda: layer(pool=True, stride=2, size=(2, 4))),
    "raw split": ("not a map", lambda: layer(raw=True, split_output=True)),
    "residual pool": ("cannot pool", lambda: layer(pool=True, residual_multiplier=np.ones(2))),
    "signed pool": ("max-pooled", lambda: layer(pool=True, act_signed=True)),
    "residual multiplier": ("16-bit", lambda: layer(residual_multiplier=np.full(2, 1 << 15))),
    "residual multiplier shape": ("2 integers", lambda: layer(residual_multiplier=np.ones(3))),
    "residual shift": ("[0, 47]", lambda: layer(residual_multiplier=np.ones(2, np.int64),
                                                residual_shift=48)),
    "shortcut bits": ("shortcut bits", lambda: layer(residual_multiplier=np.ones(2, np.int64),
                                                     shortcut_bits=8)),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_spec_rejections(case):
    limit, make = SPEC_CASES[case]
    with pytest.raises(UserError) as info:
        make()
    assert "'bad'" in str(info.value) and limit in str(info.value), str(info.value)


def test_kernel_limit():
    rejects("16x16", lambda: layer(kernel=17, size=(17, 17)))


def test_padding_limit():
    rejects("PAD < 16", lambda: layer(padding=16, size=(1, 1)))


def test_stride_limit():
    rejects("stride 3 is not supported (limit: stride 1 or 2)", lambda: layer(stride=3))
    stride1 = dataclasses.replace(SMALL, name="stride1", stride2=False)
    rejects("stride 2 needs a configuration with stride2", lambda: layer(stride=2), stride1)
    rejects("parity-split output", lambda: layer(split_output=True), stride1)
    compile_layer(layer(), stride1)


def test_block_limit():
    rejects("block < 4096", lambda: layer(cout=1, cin=4097 * 16, size=(1, 1)))


def test_tile_coordinate_limit():
    rejects("65535", lambda: layer(cout=1, cin=1, size=(1, 65537)))


def test_accumulator_limit():
    # 9600 * 9 four-bit weights: bound 86400 * 8 * 15 = 10368000 > 2^23 - 1.
    weights = np.full((1, 16 * 600, 3, 3), -8)
    message = rejects("acc_width", lambda: layer(cout=1, cin=16 * 600, kernel=3, size=(3, 3),
                                                 bits=4, act_in=4, weights=weights),
                      config=CONFIGS["default"])
    assert "10368000" in message and "8388607" in message


def test_accumulator_counts_the_bias():
    # 16 weights * 2 * 3 = 96; acc_width 16 allows 32767 with the bias.
    config = AcceleratorConfig("a16", acc_width=16)
    compile_layer(layer(bias=np.full(2, 32767 - 96)), config)
    rejects("acc_width", lambda: layer(bias=np.full(2, 32767 - 95)), config=config)


def test_program_limit():
    # 30 tiles of TILE + ROUND, a SET per register and HALT: 80 instructions > 64.
    config = dataclasses.replace(TINY, act_depth=4096)
    message = rejects("program_depth", lambda: layer(cout=2, size=(30, 2)), config=config)
    assert f"{60 + len(Register) + 1} instructions" in message


def test_chunk_limit():
    rejects("chunk_depth", lambda: layer(cout=2, cin=16 * 17, size=(1, 1)), config=TINY)


def test_wptr_limit():
    rejects("wptr_depth", lambda: layer(cout=10, size=(1, 1)), config=TINY)


def test_param_limit():
    config = AcceleratorConfig("p", rows=8, cols=2, param_depth=8)
    rejects("param_depth", lambda: layer(cout=9, size=(1, 1)), config=config)
    rejects("param_depth", lambda: layer(cout=8, size=(1, 1)), config=config,
            placement=Placement(param_base=1))


def test_weight_limit():
    # 1 ktile, 9 blocks of 4-bit groups: 36 words per bank > 32.
    rejects("weight_depth", lambda: layer(cout=2, cin=16 * 9, bits=4, size=(1, 1)),
            config=TINY)


def test_activation_limit():
    # Input 8x8 pixels of 16 channels on 2 banks: 4 words * 32 = 128 > 64.
    rejects("act_depth", lambda: layer(cout=2, size=(8, 8)), config=TINY)


def test_activation_overlap():
    rejects("overlaps", lambda: layer(cout=2, size=(2, 2)), placement=Placement(out_base=2))


def test_shortcut_limits():
    residual = dict(residual_multiplier=np.ones(2, np.int64))
    # 16 channels (4 words a pixel), 8 pixels a bank: input, output and shortcut 32 words each.
    message = rejects("act_depth", lambda: layer(cout=2, size=(4, 4), **residual),
                      config=dataclasses.replace(TINY, act_depth=16))
    assert "shortcut 32" in message
    rejects("overlaps the output", lambda: layer(cout=2, size=(2, 2), **residual),
            placement=Placement(out_base=8, sc_base=9))
    lean = dataclasses.replace(SMALL, residual=False)
    rejects("residual=False", lambda: layer(**residual), config=lean)
    rejects("residual=False", lambda: layer(act_signed=True), config=lean)


def test_input_maps_overlap():
    rejects("overlap", lambda: layer(act_in=8), placement=Placement(in_base2=2))


def test_result_limit():
    rejects("result_depth", lambda: layer(cout=2, size=(3, 3), raw=True), config=TINY)


def test_round_shift_limit(monkeypatch):
    # Unreachable with the legal precisions (at most 6 + 4); checked anyway.
    monkeypatch.setattr(enc, "ROUND_SHIFT_MAX", 9)
    rejects("ROUND shift", lambda: layer(bits=8, act_in=8))


def test_coordinates_beyond_coord_bits():
    """`coord_bits` (the iCE40's 10): the last column's x, the last channel
    and the last row must fit; a layer that fits is compiled."""
    narrow = dataclasses.replace(SMALL, coord_bits=8)
    compile_layer(layer(cin=16, size=(2, 252)), narrow)          # the last x is 251: fits
    message = rejects("coord_bits", lambda: layer(cin=16, size=(2, 260)), narrow)
    assert "limit of 255" in message
    rejects("coord_bits", lambda: layer(cin=16, cout=257, size=(1, 1)), narrow)
    compile_layer(layer(cin=16, size=(2, 260)), SMALL)
    with pytest.raises(ValueError, match="coord_bits"):
        dataclasses.replace(SMALL, coord_bits=17)


# -- a whole model: layers named as the model file reader names them ---------------------------
def small_model():
    """(header, arrays) of a valid 3-layer model file whose module names are
    not its indices: conv '0', conv '3' (both 16 -> 16, 1x1) on 16x2x2, linear '7'."""
    def conv(name, index):
        return dict(name=name, kind="conv2d", in_channels=16, out_channels=16,
                    flatten_input=False, input_bits=8 if index == 0 else 2, weight_step=1.0,
                    kernel_size=[1, 1], stride=[1, 1], padding=[0, 0], act_bits=2,
                    requant_shift=0, pool=None, output_step=1.0)
    linear = dict(name="7", kind="linear", in_channels=64, out_channels=2, flatten_input=True,
                  input_bits=2, weight_step=1.0, act_bits=None, requant_shift=None, pool=None,
                  output_step=1.0)
    header = {"format": "mpq-model", "version": 1,
              "input": {"shape": [16, 2, 2], "bits": 8, "signed": False}, "group_size": 16,
              "group_axis": "input_channel", "logits": "accumulator_plus_bias", "num_classes": 2,
              "layers": [conv("0", 0), conv("3", 1), linear]}
    conv_arrays = dict(weight=np.zeros((16, 16, 1, 1), np.int8),
                       weight_bits=np.full((16, 1, 1, 1), 2, np.uint8),
                       weight_shift=np.zeros((16, 1, 1, 1), np.uint8),
                       bias=np.zeros(16, np.int32), requant_multiplier=np.ones(16, np.int16))
    arrays = [dict(conv_arrays, weight_bits=np.full((16, 1, 1, 1), 8, np.uint8)), conv_arrays,
              dict(weight=np.zeros((2, 64), np.int8), weight_bits=np.full((2, 4), 2, np.uint8),
                   weight_shift=np.zeros((2, 4), np.uint8), bias=np.zeros(2, np.int32))]
    validate(header, arrays)
    return header, [{key: value.copy() for key, value in layer.items()} for layer in arrays]


def test_model_layers_are_named_as_the_reader_names_them():
    """`layers[1] ('3')`, as in the reader's ``field `layers[1].stride` ``, not `layer '3'`."""
    header, arrays = small_model()
    compile_network(header, arrays, SMALL)                       # the model compiles as it is
    header["layers"][1]["stride"] = [3, 3]
    with pytest.raises(UserError, match=r"^layers\[1\] \('3'\): stride 3 .*stride 1 or 2"):
        layer_specs(header, arrays)
    header, arrays = small_model()
    arrays[1]["weight_shift"][:] = 3                             # p + e = 5 bits
    with pytest.raises(UserError, match=r"^layers\[1\] \('3'\): .*p \+ e"):
        layer_specs(header, arrays)
    header, arrays = small_model()
    tight = dataclasses.replace(SMALL, wptr_depth=4)            # in compile_layer (lower.py)
    with pytest.raises(UserError, match=r"^layers\[0\] \('0'\): .*wptr_depth"):
        compile_network(header, arrays, tight)


def graph_model(second_stride, third_inputs):
    """A version-2 graph on a 16x4x4 image: conv '0', conv 'a' reading '0'
    at `second_stride`, conv 'b' reading `third_inputs` (1x1, 16 -> 16), a
    linear classifier on 'b'."""
    def conv(name, inputs, stride, input_bits=2):
        return dict(name=name, kind="conv2d", inputs=inputs, in_channels=16, out_channels=16,
                    flatten_input=False, input_bits=input_bits, weight_step=1.0,
                    kernel_size=[1, 1], stride=[stride, stride], padding=[0, 0], act_bits=2,
                    act_signed=False, requant_shift=2,
                    residual_shift=0 if len(inputs) > 1 else None, pool=None, output_step=1.0)
    layers = [conv("0", ["input"], 1, 8), conv("a", ["0"], second_stride),
              conv("b", third_inputs, 1)]
    linear = dict(name="fc", kind="linear", inputs=["b"], in_channels=256, out_channels=2,
                  flatten_input=True, input_bits=2, weight_step=1.0, act_bits=None,
                  act_signed=None, requant_shift=None, residual_shift=None, pool=None,
                  output_step=1.0)
    header = {"format": "mpq-model", "version": 2,
              "input": {"shape": [16, 4, 4], "bits": 8, "signed": False}, "group_size": 16,
              "group_axis": "input_channel", "logits": "accumulator_plus_bias", "num_classes": 2,
              "layers": layers + [linear]}
    conv_arrays = dict(weight=np.zeros((16, 16, 1, 1), np.int8),
                       weight_bits=np.full((16, 1, 1, 1), 2, np.uint8),
                       weight_shift=np.zeros((16, 1, 1, 1), np.uint8),
                       bias=np.zeros(16, np.int32), requant_multiplier=np.ones(16, np.int16))
    arrays = [dict(conv_arrays, weight_bits=np.full((16, 1, 1, 1), 8, np.uint8)), conv_arrays,
              dict(conv_arrays, **({"residual_multiplier": np.ones(16, np.int16)}
                                   if len(third_inputs) > 1 else {})),
              dict(weight=np.zeros((2, 256), np.int8), weight_bits=np.full((2, 16), 2, np.uint8),
                   weight_shift=np.zeros((2, 16), np.uint8), bias=np.zeros(2, np.int32))]
    validate(header, arrays)
    return header, arrays


def test_a_map_has_one_layout():
    """A graph's map read at stride 2 (parity-split) and also at stride 1 or
    as a residual shortcut (column order) is refused, naming both readers;
    a residual layer reading its shortcut from another layer's region
    compiles."""
    header, arrays = graph_model(1, ["a", "0"])          # 'b' = conv(a) + '0'
    network = compile_network(header, arrays, SMALL)
    residual = network.specs[2]
    assert residual.residual and network.layers[2].registers["SC_BASE"] == \
        network.layers[0].registers["OUT_BASE"]
    header, arrays = graph_model(2, ["0"])               # '0' read at stride 2 and at stride 1
    with pytest.raises(UserError, match=r"layers\[2\] \('b'\): reads layers\[0\] \('0'\) in "
                                        r"column order .* layers\[1\] \('a'\) reads at stride 2"):
        layer_specs(header, arrays)
