"""The rules every layer shares, at the bottom of the dependency order: the
error type for bad input (`errors`), writing outputs safely (`files`), the
integer contract's rounding and requantization (`fixedpoint`), the weight
group's size (`weight_groups`), the layer shapes the core runs
(`layer_shapes`) and the command-line argument types
(`arguments`). Nothing here imports `hw`, `sw` or `sim`; they all may import
it."""
