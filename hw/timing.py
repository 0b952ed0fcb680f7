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
# A PPU job: accepted in some cycle, it counts R * C elements in the next
# R * C cycles and its last write comes PPU_PIPELINE cycles after the last
# element; the cycle after that write is when its OAB buffer is free again.
PPU_PIPELINE = 5
PPU_CYCLES = PPU_PIPELINE + 1
# HALT's own cycle after DECODE: done rises once the PPU is idle.
HALT_CYCLES = 1
