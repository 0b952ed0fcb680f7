"""Named accelerator configurations: the one object that drives generation.

Later parts (array, memories, compiler, energy model) read their parameters
from here too, so a configuration is named once and means the same thing
everywhere.
"""

import dataclasses

from hw.pe.modes import PeMode
from sw.errors import UserError


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    name: str
    # Accumulator width of every PE, sign included.
    acc_width: int = 24
    # PE modes the fused PEs implement.
    modes: tuple = tuple(PeMode)


CONFIGS = {config.name: config for config in [
    AcceleratorConfig("default"),
    # A 2x2-and-4x4-only PE: the cheapest fused PE that still runs MPQ groups
    # of 2 and 4 bits (3-bit operands use 4x4).
    AcceleratorConfig("w2a2-w4a4", modes=(PeMode.W4A4, PeMode.W2A2)),
]}


def get_config(name):
    try:
        return CONFIGS[name]
    except KeyError:
        raise UserError(f"no configuration named {name!r}; choose one of "
                        f"{', '.join(sorted(CONFIGS))}") from None
