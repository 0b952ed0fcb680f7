"""Fixed latencies of the core's controller (docs/isa.md, "Timing").

The golden model predicts cycle counters from these; the RTL tests compare
its counters with the prediction exactly, so a change to the RTL's pipeline
shows up as a test failure until this file says the same.
"""

# Cycles to fetch and decode one instruction.
FETCH_CYCLES = 2
# Cycles between a ROUND's start (after any stall) and its first step issue:
# chunk descriptor read, weight pointers, first group's planes and words.
PREFETCH_CYCLES = 6
# Cycles from a step's issue until it reaches PE (0, 0), beyond the R + C - 1
# of the skewed array.
PIPE_CYCLES = 3
# PPU latency per tile beyond its R * C value cycles.
PPU_CYCLES = 8
