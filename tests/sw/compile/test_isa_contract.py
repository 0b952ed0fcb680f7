"""The compiler's encodings against the hardware's layouts (hw/isa.py), with
no RTL: what the compiler encodes, the layout decodes (Amaranth's
`from_bits`, as the core's views read it), and what the layout encodes
(`const`), the compiler decodes, over random values of every field and at
every field's limits; a value that does not fit its field is refused."""

import re

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data

from hw import isa
from hw.config import CONFIGS
from hw.isa import INSTRUCTION, PARAMETER, Memory, Opcode, chunk_layout, wptr_layout
from hw.pe.modes import PeMode
from sw.compile import encoding as enc

SAMPLES = 200
ROW_COUNTS = (1, 2, 3, 4, 5, 8, 16, 32)


def leaves(layout, path=()):
    """(path, shape) of every field that is not itself a layout."""
    for key, field in layout:
        if isinstance(field.shape, data.Layout):
            yield from leaves(field.shape, path + (key,))
        else:
            yield path + (key,), field.shape


def limits(shape):
    cast = Shape.cast(shape)
    if cast.signed:
        return -(1 << (cast.width - 1)), (1 << (cast.width - 1)) - 1
    return 0, (1 << cast.width) - 1


def random_value(rng, shape):
    if isinstance(shape, type) and issubclass(shape, (Opcode, PeMode)):
        return list(shape)[int(rng.integers(len(shape)))]
    low, high = limits(shape)
    # Edges often: the limits are where a wrong width or sign shows.
    pick = rng.random()
    if pick < 0.2:
        return low
    if pick < 0.4:
        return high
    return int(rng.integers(low, high, endpoint=True))


def random_fields(rng, layout):
    """Random values for every field of `layout`, as `const` takes them."""
    fields = {}
    for key, field in layout:
        if isinstance(field.shape, data.Layout):
            fields[key] = random_fields(rng, field.shape)
        else:
            fields[key] = random_value(rng, field.shape)
    return list(fields.values()) if isinstance(layout, data.ArrayLayout) else fields


def as_plain(value):
    """A layout constant as nested dicts and lists."""
    if isinstance(value, data.Const):
        layout = data.Layout.cast(value.shape())
        items = {key: as_plain(value[key]) for key, _ in layout}
        return list(items.values()) if isinstance(layout, data.ArrayLayout) else items
    return value


def layouts():
    yield "PARAMETER", PARAMETER
    for opcode, name in isa.OPERANDS.items():
        yield f"{opcode.name} operands", INSTRUCTION[name].shape
    for rows in ROW_COUNTS:
        yield f"chunk_layout({rows})", chunk_layout(rows)
    for rows, bits in ((1, 9), (4, 12), (8, 18), (32, 18)):
        yield f"wptr_layout({rows}, {bits})", wptr_layout(rows, bits)


@pytest.mark.parametrize("name, layout", list(layouts()), ids=[name for name, _ in layouts()])
def test_codec_is_amaranths_const_and_from_bits(name, layout):
    rng = np.random.default_rng(len(name) * 7919 + layout.size)
    for _ in range(SAMPLES):
        fields = random_fields(rng, layout)
        word = enc.encode(layout, fields)
        assert word == layout.const(fields).as_bits()
        assert enc.decode(layout, word) == as_plain(layout.from_bits(word)) == fields
        raw = int(rng.integers(0, 1 << 62)) | (int(rng.integers(0, 1 << 62)) << 62)
        raw &= (1 << layout.size) - 1
        try:
            expected = as_plain(layout.from_bits(raw))
        except ValueError:         # an enum field's bits that name no member
            with pytest.raises(ValueError):
                enc.decode(layout, raw)
            continue
        assert enc.decode(layout, raw) == expected


def test_instructions_both_ways():
    rng = np.random.default_rng(1)
    encoders = {
        Opcode.SET: lambda f: enc.encode_set(f["register"], f["value"]),
        Opcode.TILE: lambda f: enc.encode_tile(f["y"], f["x0"], f["ktile"]),
        Opcode.ROUND: lambda f: enc.encode_round(**f),
    }
    for _ in range(SAMPLES):
        for opcode, name in isa.OPERANDS.items():
            fields = random_fields(rng, INSTRUCTION[name].shape)
            if opcode == Opcode.ROUND:
                fields["chunk_count"] = max(1, fields["chunk_count"])
                fields.update((flag, bool(fields[flag])) for flag in ("input2", "first", "last"))
            # Compiler -> layout: the core's view of the word.
            word = encoders[opcode](fields)
            instruction = INSTRUCTION.from_bits(word)
            assert instruction.opcode is opcode
            assert as_plain(instruction[name]) == {key: int(value) for key, value in fields.items()}
            # Layout -> compiler.
            word = INSTRUCTION.const({"opcode": opcode, name: fields}).as_bits()
            assert enc.decode_instruction(word) == (opcode, fields)
    assert enc.encode_halt() == INSTRUCTION.const({"opcode": Opcode.HALT}).as_bits()
    assert enc.decode_instruction(enc.encode_halt()) == (Opcode.HALT, {})
    unknown = 0xF << INSTRUCTION["opcode"].offset
    assert enc.decode_instruction(unknown) == (0xF, {})


@pytest.mark.parametrize("rows", ROW_COUNTS)
def test_chunks_both_ways(rows):
    rng = np.random.default_rng(rows)
    layout = chunk_layout(rows)
    for _ in range(SAMPLES):
        fields = random_fields(rng, layout)
        args = (fields["ky"], fields["kx"], fields["block"], fields["mode"],
                [row["pcode"] for row in fields["rows"]], [row["fold"] for row in fields["rows"]])
        word = enc.encode_chunk(*args)
        assert as_plain(layout.from_bits(word)) == fields
        assert enc.decode_chunk(layout.const(fields).as_bits(), rows) == args


def test_wptr_and_params_both_ways():
    rng = np.random.default_rng(2)
    for _ in range(SAMPLES):
        rows, bits = int(rng.integers(1, 33)), int(rng.integers(1, 21))
        layout = wptr_layout(rows, bits)
        pointers = random_fields(rng, layout)
        assert as_plain(layout.from_bits(enc.encode_wptr(pointers, bits))) == pointers
        assert enc.decode_wptr(layout.const(pointers).as_bits(), rows, bits) == pointers
        fields = random_fields(rng, PARAMETER)
        param = PARAMETER.from_bits(enc.encode_param(fields["bias"], fields["multiplier"],
                                                     fields["residual_multiplier"]))
        assert (param.bias, param.multiplier, param.residual_multiplier) == \
            (fields["bias"], fields["multiplier"], fields["residual_multiplier"])
        assert enc.decode_param(PARAMETER.const(fields).as_bits()) == \
            (fields["bias"], fields["multiplier"], fields["residual_multiplier"])


@pytest.mark.parametrize("name, layout", list(layouts()), ids=[name for name, _ in layouts()])
def test_every_field_fits_and_no_more(name, layout):
    """Each field takes its limits; one step beyond is a ValueError naming it
    (Amaranth's `const` would truncate silently)."""
    def nested(path, value):
        for key in reversed(path):
            value = {key: value}
        return value

    for path, shape in leaves(layout):
        if isinstance(shape, type) and issubclass(shape, (Opcode, PeMode)):
            continue
        label = "".join(f".{key}" if isinstance(key, str) else f"[{key}]" for key in path)
        low, high = limits(shape)
        for value in (low, high):
            word = enc.encode(layout, nested(path, value))
            assert word == layout.const(nested(path, value)).as_bits()
        for value in (low - 1, high + 1):
            with pytest.raises(ValueError, match=re.escape(f"{label.lstrip('.')}={value} does not fit")):
                enc.encode(layout, nested(path, value))


def test_encoders_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match="shift=16"):
        enc.encode_round(0, 1, 0, 16)
    with pytest.raises(ValueError, match="wptr=4096"):
        enc.encode_round(0, 1, 4096, 0)
    with pytest.raises(ValueError, match="y=65536"):
        enc.encode_tile(65536, 0, 0)
    with pytest.raises(ValueError, match="register=64"):
        enc.encode_set(64, 0)
    with pytest.raises(KeyError):
        enc.encode_set("NO_SUCH_REGISTER", 0)
    with pytest.raises(ValueError, match="block=4096"):
        enc.encode_chunk(0, 0, 4096, PeMode.W4A4, [0], [0])
    with pytest.raises(ValueError, match=r"rows\[1\].pcode=4"):
        enc.encode_chunk(0, 0, 0, PeMode.W4A4, [0, 4], [0, 0])
    with pytest.raises(ValueError, match="multiplier=32768"):
        enc.encode_param(0, 1 << 15)
    with pytest.raises(ValueError, match="bias=-2147483649"):
        enc.encode_param(-(1 << 31) - 1, 0)


def test_compiler_limits_are_the_field_widths():
    assert enc.ROUND_SHIFT_MAX == 15 and enc.ROUND_WPTR_LIMIT == 1 << 12
    assert enc.TILE_COORD_LIMIT == enc.CHUNK_ADDRESS_LIMIT == 1 << 16
    assert enc.CHUNK_KERNEL_LIMIT == 16 and enc.CHUNK_BLOCK_LIMIT == 1 << 12
    assert enc.PAD_LIMIT == 16
    assert [isa.PCODE_BITS[enc.PCODE_OF_BITS[bits]] for bits in (0, 2, 3, 4)] == [0, 2, 3, 4]


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_memory_widths_are_the_layouts(config):
    shapes = config.memory_shapes()
    assert list(shapes) == list(Memory)
    assert [name for name, _, _, _ in shapes.values()] == [m.name.lower() for m in Memory]
    widths = {memory: width for memory, (_, _, width, _) in shapes.items()}
    assert widths[Memory.PROGRAM] == INSTRUCTION.size == 64
    assert widths[Memory.CHUNKS] == chunk_layout(config.rows).size == 22 + 3 * config.rows
    assert widths[Memory.WPTR] == config.rows * config.weight_addr_bits
    assert PARAMETER.size == 64
    # Without residual adds the entry stops below the residual multiplier.
    assert widths[Memory.PARAMS] == (64 if config.residual else 48)
    assert widths[Memory.PARAMS] == config.param_width
    assert widths[Memory.WEIGHTS] == isa.GROUP_SIZE
    assert widths[Memory.ACTIVATIONS] == isa.ACT_SLOT_BITS * isa.ACT_SLOTS_PER_WORD
    # Every instruction's operands stay below the opcode.
    for name in isa.OPERANDS.values():
        assert INSTRUCTION[name].offset + INSTRUCTION[name].width <= INSTRUCTION["opcode"].offset
