"""Named accelerator configurations: the one object that drives generation.

Later parts (array, memories, compiler, energy model) read their parameters
from here too, so a configuration is named once and means the same thing
everywhere.
"""

import dataclasses

from sw.errors import UserError


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    name: str
    # Accumulator width of every PE, sign included.
    acc_width: int = 24


CONFIGS = {config.name: config for config in [
    AcceleratorConfig("default"),
    # Narrower accumulators: for small networks (the digits CNN) on small FPGAs.
    AcceleratorConfig("small", acc_width=16),
]}


def get_config(name):
    try:
        return CONFIGS[name]
    except KeyError:
        raise UserError(f"no configuration named {name!r}; choose one of "
                        f"{', '.join(sorted(CONFIGS))}") from None
