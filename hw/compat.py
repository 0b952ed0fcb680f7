"""Where this project reaches into a tool's private API: each patch in one
place, with the versions it was checked on and the upstream issue that would
make it unnecessary. A version outside the checked range fails loudly here
rather than misbehaving somewhere else."""

import contextlib

# Amaranth's RTLIL emitter internals change between minor releases; the
# patch below was written against these.
CHECKED_AMARANTH = ("0.5.",)


@contextlib.contextmanager
def memories_without_initial_value():
    """While active, Amaranth's RTLIL backend emits no initial value for a
    memory whose initial contents are all zero, as SRAMs and FPGA block RAMs
    take them. Amaranth always writes one value per word (for the default
    configuration's 4 Mbit of weights: 95 s and 76 MB of Verilog). Upstream:
    amaranth-lang/amaranth#270 (memories without initialisation, open) and
    #1522 (the long initialisation, closed without a switch)."""
    import amaranth
    from amaranth.back import rtlil

    if not amaranth.__version__.startswith(CHECKED_AMARANTH):
        raise RuntimeError(f"hw/compat.py patches Amaranth's RTLIL emitter and was checked on "
                           f"{', '.join(v + 'x' for v in CHECKED_AMARANTH)}; Amaranth "
                           f"{amaranth.__version__} is installed: re-check the patch, then "
                           "extend CHECKED_AMARANTH")
    original = rtlil.ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    rtlil.ModuleEmitter.emit_memory = emit_memory
    try:
        yield
    finally:
        rtlil.ModuleEmitter.emit_memory = original
