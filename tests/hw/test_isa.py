"""docs/isa.md against hw/isa.py: the tables of memories, chunk descriptor
fields, opcodes and their operand bits, layer registers and the parameter
fields say what the layouts and enums define (the layouts are the definition;
the document must not drift from them)."""

import pathlib
import re

import pytest
from amaranth.hdl import Shape

from hw import isa
from hw.config import CONFIGS
from hw.isa import INSTRUCTION, PARAMETER, Memory, Opcode, Register, chunk_layout

DOC = (pathlib.Path(__file__).resolve().parents[2] / "docs" / "isa.md").read_text()


def section(heading):
    """The text under a `#`-heading that starts with `heading`, up to the next heading."""
    match = re.search(rf"^#+ {re.escape(heading)}.*?$(.*?)(?=^#)", DOC, re.S | re.M)
    assert match, f"docs/isa.md has no section {heading!r}"
    return match.group(1)


def table(text):
    """The rows of the first table in `text`, as lists of cells (header and rule dropped)."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines()
            if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def bits(text):
    """{field: (high, low)} for every `bits H:L `name`` or `bit N `name`` in `text`."""
    return {name: (int(high), int(low or high))
            for high, low, name in re.findall(r"bits? (\d+)(?::(\d+))? `(\w+)`", text)}


def span(layout, name, base=0):
    field = layout[name]
    return base + field.offset + field.width - 1, base + field.offset


def evaluate(expression, **symbols):
    """An expression of the document (`22 + 3R`, `R * weight_addr_bits`) for `symbols`."""
    expression = re.sub(r"(\d)([A-Za-z_])", r"\1*\2", expression.replace("`", ""))
    return eval(re.sub(r"[A-Za-z_]+", lambda m: str(symbols[m.group(0)]), expression))


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS)
def test_memory_table(config):
    rows = table(section("Memories"))
    assert [(int(row[0]), row[1]) for row in rows] == [(m.value, m.name.lower()) for m in Memory]
    shapes = config.memory_shapes()
    symbols = dict(R=config.rows, C=config.cols, G=isa.GROUP_SIZE,
                   weight_addr_bits=config.weight_addr_bits, param_bits=config.param_width)
    for memory_id, _, banks, width, *_ in rows:
        _, shape_banks, shape_width, _ = shapes[Memory(int(memory_id))]
        assert (evaluate(banks, **symbols), evaluate(width, **symbols)) == (shape_banks, shape_width)


@pytest.mark.parametrize("rows", [1, 4, 16])
def test_chunk_descriptor_table(rows):
    layout = chunk_layout(rows)
    documented = {}
    for bit_range, field, _ in table(section("Chunk descriptors")):
        name = field.strip("`")
        high, _, low = bit_range.partition(":")
        for r in range(rows) if "[r]" in name else [None]:
            documented[name.replace("[r]", f"[{r}]")] = (evaluate(high, r=r), evaluate(low or high, r=r))
    defined = {name: span(layout, name) for name, _ in layout if name != "rows"}
    rows_offset = layout["rows"].offset
    for r in range(rows):
        for name, _ in isa.CHUNK_ROW:
            defined[f"{name}[{r}]"] = span(isa.CHUNK_ROW, name, rows_offset + r * isa.CHUNK_ROW.size)
    assert documented == defined


def test_program_table():
    text = section("Program")
    high, low = map(int, re.search(r"opcode \(`hw.isa.Opcode`\) in bits\s+(\d+):(\d+)", text).groups())
    assert (high, low) == span(INSTRUCTION, "opcode")
    assert INSTRUCTION.size == 64 and "64-bit instructions" in text
    rows = table(text)
    assert [(int(row[0]), row[1].strip("`")) for row in rows] == [(op.value, op.name) for op in Opcode]
    for value, _, fields in rows:
        opcode = Opcode(int(value))
        layout = INSTRUCTION[isa.OPERANDS[opcode]].shape if opcode in isa.OPERANDS else None
        expected = {name: span(layout, name) for name, _ in layout} if layout else {}
        assert bits(fields) == expected, opcode


def test_layer_register_table():
    rows = table(section("Layer registers"))
    assert [(int(row[0]), row[1].strip("`")) for row in rows] == [(r.value, r.name) for r in Register]


def test_parameter_fields():
    text = section("Parameters")
    assert bits(text) == {name: span(PARAMETER, name) for name, _ in PARAMETER}
    assert all(Shape.cast(field.shape).signed for _, field in PARAMETER)
    assert f"signed {isa.MULTIPLIER_BITS}-bit" in " ".join(text.split())


def test_training_knows_the_hardware_sizes():
    """sw/quantize may not import hw: its hardware sizes come from common/ or,
    where it keeps its own, must equal the contract's."""
    from common import fixedpoint
    from sw.quantize import groups, mpq

    assert groups.DEFAULT_GROUP_SIZE == mpq.HW_GROUP_SIZE == isa.GROUP_SIZE
    assert mpq.MULTIPLIER_BITS == fixedpoint.MULTIPLIER_BITS == isa.MULTIPLIER_BITS
    assert PARAMETER["multiplier"].width == isa.MULTIPLIER_BITS
    assert mpq.TAG_BITS == isa.CHUNK_ROW.size      # pcode and fold, per group


def test_limits_paragraph():
    text = " ".join(section("Limits the compiler checks").split())
    kernel = 1 << isa.field_width(chunk_layout(1), "ky")
    assert f"kernels up to {kernel} x {kernel}" in text
    assert f"`block < {1 << isa.field_width(chunk_layout(1), 'block')}`" in text
    assert f"`PAD < {1 << isa.PAD_BITS}`" in text
    assert f"coordinates below {1 << isa.field_width(isa.TILE_FIELDS, 'y')}" in text
    assert f"multiplier {isa.MULTIPLIER_BITS}-bit" in text
