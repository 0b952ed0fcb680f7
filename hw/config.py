"""Named accelerator configurations: the one object that drives generation,
the compiler, the golden model's counters and (later) the energy model.

A configuration is named once and means the same thing everywhere:
`make verilog CONFIG=name`, `mpq compile --config name`.
"""

import dataclasses

from common.errors import UserError
from common.weight_groups import GROUP_SIZE
from hw.counters import COUNTER_WIDTH

# The fixed widths and layouts of the memories' entries are the ISA's
# (hw/isa.py); this file holds what a configuration chooses. hw/isa.py is
# imported where it is needed, not here, so that reading the configurations
# (`mpq --help`) does not load Amaranth.


def _is_power_of_two(value):
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    name: str
    rows: int = 8
    cols: int = 8
    # Accumulator width of every PE and of the output accumulators, sign included.
    acc_width: int = 24
    # Memory depths (entries); each a power of two.
    program_depth: int = 16384
    chunk_depth: int = 32768
    wptr_depth: int = 1024
    param_depth: int = 4096
    weight_depth: int = 262144
    act_depth: int = 16384
    result_depth: int = 1024
    # Width of every event counter (hw/counters.py). A counter wraps modulo
    # 2 ** counter_width; bits above it read as zero. 48 (the default) never
    # wraps in practice; 32 saves about 500 logic cells on the iCE40 and
    # wraps after 358 s at 12 MHz (docs/fpga.md).
    counter_width: int = COUNTER_WIDTH
    # False: the core keeps only the `cycles` counter; every other counter
    # reads 0 (about 1,000 logic cells fewer on the iCE40, docs/fpga.md).
    # The FPGA host then compares `cycles` alone with the golden model.
    counters: bool = True
    # False: the PPU's requantization shift keeps only what the clamp to
    # 4 bits needs (the same results; about 300 logic cells fewer on the
    # iCE40) instead of shifting the whole 50-bit product.
    ppu_barrel_shift: bool = True
    # Width of the tile coordinates (y, x0, the channel tile and the PPU's
    # y, x, k) inside the core. 16 is the ISA's field width; a smaller
    # memory never holds a layer whose coordinates need it, and the
    # compiler refuses one that would (the iCE40 keeps 10 bits).
    coord_bits: int = 16
    # True: counters sized by what they count. The round engine's chunk
    # address and counts by chunk_depth (a round's chunks all lie in the
    # chunk memory); the controller's tile and PPU-job counters as 2 bits,
    # compared by their difference (at most 3 tiles are ever outstanding),
    # instead of 32 and 16 bits. The same behaviour.
    narrow_counts: bool = False
    # True: the round engine computes one pixel-word product for all
    # activation banks (a bank's pixel is that word's or the next) instead
    # of one per bank. The same addresses.
    shared_bank_address: bool = False
    # False: the PPU reads the OAB row and the channel's parameters from
    # its read ports for every column (they hold their data between reads)
    # instead of copying them into hold registers. The same values.
    ppu_hold_registers: bool = True
    # True: the round engine captures each chunk in its mode's lane order
    # and shifts its buffers by one element per step, instead of by the
    # mode's lane count (1, 2 or 4). The same steps and timing.
    permuted_buffers: bool = False
    # False: the core runs stride-1 convolutions only and writes every map
    # in column order (STRIDE2 and OUT_SPLIT read as 0; the compiler refuses
    # stride-2 layers). The iCE40 saves about 80 LUTs (96 logic cells),
    # without which its build misses the board's 12 MHz (docs/fpga.md).
    stride2: bool = True
    # False: the core runs no residual adds and no signed outputs (SC_* and
    # OUT_SIGNED read as 0; the compiler refuses such layers): no shortcut
    # loader and buffer, and the PPU's narrower unsigned clamp.
    residual: bool = True
    # True: a map of 2- or 3-bit activations stores each value in a 2- or
    # 3-bit slot (isa.slot_bits): its fetch reads 2 or 3 words a chunk
    # instead of 4, and each activation bank is two memories, even and odd
    # words, with bit write enables, so that the PPU writes a slot that
    # straddles two words in one cycle. False: 4-bit slots for every map.
    packed_activations: bool = True

    def __post_init__(self):
        for field in ("rows", "cols"):
            value = getattr(self, field)
            if not isinstance(value, int) or not 1 <= value <= 32:
                raise ValueError(f"{field} must be an int in [1, 32], got {value!r}")
        if not _is_power_of_two(self.cols) or self.cols < 2:
            # Even for 2x2 pooling; a power of two so that bank = x mod C and
            # word = x div C are bit slices in the column readers and the PPU.
            raise ValueError(f"cols must be a power of two >= 2, got {self.cols}")
        if not isinstance(self.acc_width, int) or not 16 <= self.acc_width <= 32:
            raise ValueError(f"acc_width must be an int in [16, 32], got {self.acc_width!r}")
        if not isinstance(self.counter_width, int) or not 16 <= self.counter_width <= COUNTER_WIDTH:
            raise ValueError(f"counter_width must be an int in [16, {COUNTER_WIDTH}], "
                             f"got {self.counter_width!r}")
        for field in ("counters", "ppu_barrel_shift", "narrow_counts", "shared_bank_address",
                      "ppu_hold_registers", "permuted_buffers", "stride2", "residual",
                      "packed_activations"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field} must be a bool, got {getattr(self, field)!r}")
        if self.packed_activations and self.permuted_buffers:
            raise ValueError("permuted_buffers captures 4-bit slots only: set packed_activations=False")
        if self.packed_activations and self.act_depth < 2:
            raise ValueError("packed_activations splits each bank into even and odd words: act_depth >= 2")
        if not isinstance(self.coord_bits, int) or not 8 <= self.coord_bits <= 16:
            raise ValueError(f"coord_bits must be an int in [8, 16], got {self.coord_bits!r}")
        for field in ("program_depth", "chunk_depth", "wptr_depth", "param_depth",
                      "weight_depth", "act_depth", "result_depth"):
            if not _is_power_of_two(getattr(self, field)):
                raise ValueError(f"{field} must be a power of two, got {getattr(self, field)!r}")

    @property
    def group_size(self):
        return GROUP_SIZE

    @property
    def weight_addr_bits(self):
        return (self.weight_depth - 1).bit_length()

    @property
    def chunk_layout(self):
        """The chunk descriptor of this array (hw/isa.py)."""
        from hw import isa
        return isa.chunk_layout(self.rows)

    @property
    def wptr_layout(self):
        """The weight-pointer entry of this array and weight memory (hw/isa.py)."""
        from hw import isa
        return isa.wptr_layout(self.rows, self.weight_addr_bits)

    @property
    def param_width(self):
        """Bits of a parameter entry: the whole PARAMETER, or without
        `residual` only bias and multiplier (the residual multiplier is
        PARAMETER's top field; such a core never reads it)."""
        from hw import isa
        return isa.PARAMETER.size if self.residual else isa.PARAMETER["residual_multiplier"].offset

    @property
    def chunk_width(self):
        return self.chunk_layout.size

    @property
    def wptr_width(self):
        return self.wptr_layout.size

    def memory_shapes(self):
        """`isa.Memory` -> (name, banks, width, depth), as in docs/isa.md."""
        from hw import isa
        Memory = isa.Memory
        shapes = {
            Memory.PROGRAM: (1, isa.INSTRUCTION.size, self.program_depth),
            Memory.CHUNKS: (1, self.chunk_width, self.chunk_depth),
            Memory.WPTR: (1, self.wptr_width, self.wptr_depth),
            Memory.PARAMS: (1, self.param_width, self.param_depth),
            Memory.WEIGHTS: (self.rows, GROUP_SIZE, self.weight_depth),
            Memory.ACTIVATIONS: (self.cols, isa.ACT_WORD_BITS, self.act_depth),
            Memory.RESULTS: (1, isa.RESULT_WIDTH, self.result_depth),
        }
        return {memory: (memory.name.lower(), *shape) for memory, shape in shapes.items()}


CONFIGS = {config.name: config for config in [
    AcceleratorConfig("default"),
    # Small and fast to simulate: the random-layer regression and the iCE40.
    AcceleratorConfig("small", rows=4, cols=4, program_depth=2048, chunk_depth=2048,
                      wptr_depth=256, param_depth=512, weight_depth=4096, act_depth=4096,
                      result_depth=256),
    AcceleratorConfig("large", rows=16, cols=16, act_depth=32768),
    # FPGA boards (hw/boards/, docs/fpga.md). The iCE40UP5K (iCEBreaker):
    # 5280 logic cells and 30 4-kbit block RAMs. The smallest array (1x2),
    # memories of a few block RAMs each (all 30 with the serial bridge's
    # buffer; a 1-row array needs twice the instructions, so the program
    # memory is the largest), 24-bit accumulators (an 8-bit first layer
    # needs them), only the cycle counter (32 bits), the PPU's clamped
    # shift, stride 1 only. The core's fixed logic still exceeds the logic
    # cells (docs/fpga.md).
    AcceleratorConfig("ice40", rows=1, cols=2, program_depth=1024,
                      chunk_depth=256, wptr_depth=256, param_depth=256, weight_depth=512,
                      act_depth=256, result_depth=256, counter_width=32,
                      counters=False, ppu_barrel_shift=False, coord_bits=10,
                      narrow_counts=True, shared_bank_address=True,
                      ppu_hold_registers=False, permuted_buffers=True, stride2=False,
                      residual=False, packed_activations=False),
    # The LFE5U-85F (ULX3S 85F, OrangeCrab 85F): 84k LUTs, 208 18-kbit block
    # RAMs. 4-bit activation slots: its block RAMs have byte write enables,
    # not the bit enables packed slots need.
    AcceleratorConfig("ecp5", rows=8, cols=8, program_depth=2048, chunk_depth=2048,
                      wptr_depth=256, param_depth=1024, weight_depth=4096, act_depth=4096,
                      result_depth=1024, packed_activations=False),
]}


def get_config(name):
    try:
        return CONFIGS[name]
    except KeyError:
        raise UserError(f"no configuration named {name!r}; choose one of "
                        f"{', '.join(sorted(CONFIGS))}") from None
