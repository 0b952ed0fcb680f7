"""The core's event counters, in register order (docs/isa.md, "Counters").

One list shared by the RTL (which builds a counter per name), the host
interface's register map, the compiler's golden model (which predicts each)
and the energy model (which prices them).
"""

COUNTERS = (
    "cycles",
    "busy_cycles",
    "stall_cycles",
    "macs_w4a4",
    "macs_w4a2",
    "macs_w2a4",
    "macs_w2a2",
    "weight_reads",
    "act_reads",
    "act_writes",
    "result_writes",
    "chunk_reads",
    "wptr_reads",
    "param_reads",
    "program_reads",
    "oab_reads",
    "oab_writes",
    "shortcut_reads",       # last: the registers of the counters before it keep their numbers
)
COUNTER_WIDTH = 48          # the default; a configuration may narrow it (counter_width)


def counter_reading(count, width=COUNTER_WIDTH):
    """What a counter `width` bits wide reads after `count` events: the
    count modulo 2 ** width (the golden model predicts the unwrapped count)."""
    return int(count) % (1 << width)
