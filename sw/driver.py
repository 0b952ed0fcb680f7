"""Host-side driver of the accelerator's command protocol (docs/host.md).

Turns memory images and register accesses into the 32-bit command words the
core's host interface takes, and back. The cocotb testbenches use it to talk
to the simulated core; the FPGA host program uses it over a serial link.
"""

from hw.counters import COUNTERS
from hw.host import words_per_entry  # noqa: F401 (re-exported)
from hw.isa import HOST_HEADER, HostCommand, HostRegister, counter_register

STATUS_BITS = ("busy", "done", "error", "protocol_error")


def _header(command, mem=0, bank=0, register=0):
    return HOST_HEADER.const({"command": HostCommand[command], "memory": mem, "bank": bank,
                              "register": register}).as_bits()


def load_commands(segments, config):
    """Command words loading `segments` [(mem, bank, start, words)] (the
    compiler's `host_word_stream`)."""
    shapes = config.memory_shapes()
    commands = []
    for mem, bank, start, words in segments:
        per_entry = words_per_entry(shapes[mem][2])
        if len(words) % per_entry:
            raise ValueError(f"memory {mem}: {len(words)} words is not whole entries of "
                             f"{per_entry} words")
        commands += [_header("WRITE_MEM", mem, bank), start, len(words) // per_entry, *words]
    return commands


def read_memory(mem, bank, address, count):
    """READ_MEM of `count` entries; the core answers count * W words."""
    return [_header("READ_MEM", mem, bank), address, count]


def write_register(register, value):
    return [_header("WRITE_REG", register=register), value & 0xFFFFFFFF]


def read_register(register):
    return [_header("READ_REG", register=register)]


def start_command():
    return write_register(HostRegister.CTRL, 1)


def status_command():
    return read_register(HostRegister.STATUS)


def decode_status(word):
    return {name: bool(word >> bit & 1) for bit, name in enumerate(STATUS_BITS)}


def counter_commands():
    """READ_REGs of every counter, low then high word."""
    commands = []
    for index in range(len(COUNTERS)):
        commands += read_register(counter_register(index, 0))
        commands += read_register(counter_register(index, 1))
    return commands


def decode_counters(words):
    return {name: words[2 * i] | (words[2 * i + 1] << 32) for i, name in enumerate(COUNTERS)}


def entries_from_words(words, width):
    """Inverse of the per-entry word split: entries of a READ_MEM answer."""
    per_entry = words_per_entry(width)
    return [sum(words[i + j] << (32 * j) for j in range(per_entry))
            for i in range(0, len(words), per_entry)]
