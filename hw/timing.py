"""Fixed latencies of the core's controller (docs/isa.md, "Timing").

The golden model predicts the cycle counters from these; the RTL tests
compare its counters with the prediction exactly, so a change to the RTL's
pipeline shows up as a test failure until this file says the same.
"""

# FETCH and DECODE of every instruction.
FETCH_CYCLES = 2
# A ROUND, from its start cycle (after any stall) to its first step: wptr
# and first descriptor reads, the first chunk's four plane/word reads, and
# the capture into a chunk buffer.
PREFETCH_CYCLES = 9
# Beyond the R + C - 1 cycles the last step needs to reach PE (R-1, C-1).
PIPE_CYCLES = 0
# A PE hands its round's sum to its shadow register in the cycle after the
# round's last step passed it (hw/array/systolic.py), so the shadows' drain
# reaches the OAB HANDOFF_CYCLES after the step has crossed the array: the
# OAB takes row R-1-k in cycle T + R + C + PIPE_CYCLES + HANDOFF_CYCLES + k
# for a last step presented in cycle T.
HANDOFF_CYCLES = 1
# The fewest steps a ROUND has: one W2A2 chunk, G / 4 lanes (tests check it).
MIN_ROUND_STEPS = 4
# A ROUND's first activation read comes this many cycles after its start
# (the weight-pointer and descriptor reads, the chunk's addresses first;
# tests/hw/core/test_round_engine.py checks it).
FIRST_ACT_READ_CYCLES = 4
# A PPU job: accepted in some cycle, it counts R * C elements in the next
# R * C cycles and its last write comes PPU_PIPELINE cycles after the last
# element; the cycle after that write is when its OAB buffer is free again.
PPU_PIPELINE = 5
PPU_CYCLES = PPU_PIPELINE + 1
# HALT's own cycle after DECODE: done rises once the PPU is idle.
HALT_CYCLES = 1

# A residual layer's shortcut reads (docs/isa.md, "Residual shortcut"): for
# each tile, every activation bank reads the J words that hold channels
# ktile*R .. ktile*R + R - 1 of its pixel, J <= shortcut_words_max(R, packed). They
# start in the cycle the OAB takes the record of the tile's last ROUND (the
# engine's done) and the ShortcutLoader issues them in the next J cycles,
# before the next round's first activation read (shortcut_start_gap), their
# data captured SHORTCUT_LATENCY cycles after each. The round crosses the
# array, hands off and drains for 2R + C - 1 cycles (at least 2R + C - 2,
# the bound below) before the tile reaches the PPU, and the PPU
# reads the buffer two cycles after taking the tile, so the reads add no
# cycle to the timing rules above (`shortcut_reads_hidden` holds for every
# array; ShortcutLoader refuses one where it would not).
SHORTCUT_LATENCY = 1


def round_start_gap(rows):
    """Fewest cycles from the round engine's `done` (the cycle after a
    round's last step) to the next ROUND's start (0: in the `done` cycle).
    The array's shadows need two rounds' last steps `rows` cycles apart
    (hw/array/systolic.py), and a round's last step comes at least
    PREFETCH_CYCLES + MIN_ROUND_STEPS - 1 cycles after its start, so only
    arrays of more than 13 rows ever wait."""
    return max(0, rows - PREFETCH_CYCLES - MIN_ROUND_STEPS)


def shortcut_start_gap(rows, packed):
    """Fewest cycles from the `done` of a residual tile's last ROUND to the
    next ROUND's start: the shortcut loader reads the activation banks in
    the J <= shortcut_words_max(R, packed) cycles after that done, and the
    next round's first activation read must come after them (0 up to 10
    rows)."""
    return max(0, shortcut_words_max(rows, packed) + 1 - FIRST_ACT_READ_CYCLES)


def shortcut_words(rows, ktile, slot_bits):
    """`(first, count)`: the words of a pixel that hold channels ktile*R ..
    ktile*R + R - 1 in `slot_bits`-bit slots (bits s*k .. s*k + s - 1)."""
    first = slot_bits * ktile * rows // 16
    return first, (slot_bits * (ktile + 1) * rows - 1) // 16 - first + 1


def shortcut_words_max(rows, packed):
    """Most words a bank reads for one tile's shortcut: over the slot widths
    a map may have (2, 3, 4 with packed_activations, else 4) and the
    channel tiles (the word offsets repeat every 16 tiles)."""
    return max(shortcut_words(rows, ktile, bits)[1] for ktile in range(16)
               for bits in ((2, 3, 4) if packed else (4,)))


def shortcut_reads_hidden(rows, cols, packed):
    """The last shortcut capture comes before the PPU reads the buffer:
    start + J + SHORTCUT_LATENCY <= start + 2R + C (the cycle before the
    tile's first element is in the PPU's S1)."""
    return 1 + shortcut_words_max(rows, packed) + SHORTCUT_LATENCY <= 2 * rows + cols
