"""docs/host.md against hw/isa.py's host protocol: the command table's codes
and header fields are HostCommand's and HOST_HEADER's, the register table's
numbers are HostRegister's; the driver's headers decode through the layout."""

import pathlib
import re

from hw.counters import COUNTERS
from hw.isa import COUNTER_REGISTERS, HOST_HEADER, HostCommand, HostRegister, Memory, counter_register
from sw import driver

DOC = (pathlib.Path(__file__).resolve().parents[3] / "docs" / "host.md").read_text()


def table(heading):
    text = re.search(rf"^## {heading}$(.*?)(?=^#|\Z)", DOC, re.S | re.M).group(1)
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def span(name):
    field = HOST_HEADER[name]
    return f"{field.offset + field.width - 1}:{field.offset}"


def test_command_table():
    rows = table("Commands")
    assert [(row[0].strip("`"), int(row[1])) for row in rows] == \
        [(command.name, command.value) for command in HostCommand]
    assert "bits 31:28 are the command" in DOC and span("command") == "31:28"
    fields = {"memory id": span("memory"), "bank": span("bank"), "register": span("register")}
    for row in rows:
        for name, bits in fields.items():
            if name in row[2]:
                assert f"{bits} {name}" in row[2], (row, name, bits)


def test_register_table():
    rows = table("Registers")
    named = {int(row[0]): row[1].strip("`") for row in rows if row[0].isdigit()}
    assert named == {r.value: r.name for r in HostRegister if r != HostRegister.COUNTERS}
    counters = [row[0] for row in rows if not row[0].isdigit()]
    assert counters == [f"{HostRegister.COUNTERS} + {COUNTER_REGISTERS}i, "
                        f"{HostRegister.COUNTERS + 1} + {COUNTER_REGISTERS}i"]
    assert counter_register(len(COUNTERS) - 1, 1) == 16 + 2 * len(COUNTERS) - 1


def test_driver_headers_decode_through_the_layout():
    header, address, count = driver.read_memory(Memory.ACTIVATIONS, 3, 100, 7)
    fields = HOST_HEADER.from_bits(header)
    assert (fields.command, fields.memory, fields.bank) == (HostCommand.READ_MEM, Memory.ACTIVATIONS, 3)
    assert (address, count) == (100, 7)
    fields = HOST_HEADER.from_bits(driver.start_command()[0])
    assert (fields.command, fields.register) == (HostCommand.WRITE_REG, HostRegister.CTRL)
    # The numbers docs/host.md gives, bit for bit.
    assert driver.status_command() == [(4 << 28) | 1]
    assert driver.load_commands([(Memory.WEIGHTS, 2, 5, [9])], _Config())[0] == (1 << 28) | (4 << 24) | (2 << 16)


class _Config:
    def memory_shapes(self):
        return {Memory.WEIGHTS: ("weights", 4, 16, 64)}
