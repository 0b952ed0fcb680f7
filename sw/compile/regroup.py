"""Hardware weight groups from per-weight precisions and shifts.

The hardware's group is 16 consecutive input channels at one kernel position
(`hw.isa.GROUP_SIZE`). Where the compiler changes the weights' layout (a
flattened linear layer as a full-map convolution, model groups of another
size, a packed first layer), it rebuilds the groups from every weight's own
precision `p` and shift `e` (value `q << e`): each group takes the smallest
shift of its members and the precision that holds all of them exactly.
"""

import math

import numpy as np

from hw.isa import GROUP_SIZE
from sw.quantize import groups


def expand_groups(per_group, shape, group_size=GROUP_SIZE):
    """Per-weight values (shape `shape`) of a per-group array (the model
    file's group layout, `sw/quantize/groups.py`)."""
    import torch
    return groups.expand_to_weights(torch.from_numpy(np.asarray(per_group, dtype=np.int64)),
                                    shape, group_size).numpy()


def regroup(values, bits, shifts):
    """`(precision, shift)` per hardware group (O, kh, kw, blocks) of conv
    weights `values` (O, C, kh, kw) = q << e, from per-weight `bits` and
    `shifts` of the same shape."""
    out_channels, channels, kh, kw = values.shape
    blocks = math.ceil(channels / GROUP_SIZE)
    pad = blocks * GROUP_SIZE - channels

    def per_group(array, fill, reduce):
        padded = np.pad(array, ((0, 0), (0, pad), (0, 0), (0, 0)), constant_values=fill)
        blocked = padded.reshape(out_channels, blocks, GROUP_SIZE, kh, kw)
        return reduce(blocked, axis=2).transpose(0, 2, 3, 1)      # (O, kh, kw, blocks)

    shift = per_group(shifts, 99, np.min)
    top = per_group(bits + shifts, 0, np.max)
    return np.maximum(top - shift, 2), shift


def hardware_groups(values, bits, shifts):
    """`regroup`, or for an 8-bit layer (`bits` None: run as digit passes,
    docs/isa.md) precision 8 and shift 0 in every group."""
    if bits is None:
        shape = groups.group_shape(values.shape, GROUP_SIZE)
        return np.full(shape, 8), np.zeros(shape, dtype=np.int64)
    return regroup(values, bits, shifts)


def per_weight(spec):
    """A LayerSpec's hardware-group precisions and shifts, per weight
    (O, C, kh, kw)."""
    precision, shift = spec.conv_groups                      # (O, kh, kw, blocks)
    channel_block = np.arange(spec.in_channels) // GROUP_SIZE

    def expand(array):
        return array[:, :, :, channel_block].transpose(0, 3, 1, 2)
    return expand(precision), expand(shift)
