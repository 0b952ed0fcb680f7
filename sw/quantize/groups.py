"""Weight groups: the one definition shared by the quantizer, the export and
the compiler.

A group is a run of `group_size` consecutive weights along the input-channel
axis of one output channel at one kernel position:

* Linear weight `(out, in)`: groups `(out, ceil(in / group_size))`; group
  `(o, g)` holds `weight[o, g*group_size : (g+1)*group_size]`.
* Conv2d weight `(out, in, kh, kw)`: groups
  `(out, kh, kw, ceil(in / group_size))`; group `(o, y, x, g)` holds
  `weight[o, g*group_size : (g+1)*group_size, y, x]`.

When `in` is not a multiple of `group_size` the last group of each run is
shorter (the first layer's 3 input channels make one group of 3). Grouping
along the input channel at a fixed kernel position matches channels-last
activations: the hardware reads `group_size` consecutive channels of one pixel
and the weights they meet, so a group never straddles two kernel positions.

Every group has a precision `p` and a left shift `e`; a weight is `q << e` with
`q` a `p`-bit signed integer (see docs/model_format.md).
"""

import math

import torch

from common.weight_groups import GROUP_SIZE

# A model's groups default to the hardware's (common/weight_groups.py).
DEFAULT_GROUP_SIZE = GROUP_SIZE


def group_shape(weight_shape, group_size):
    """Shape of the per-group arrays (precision, shift) for a weight shape."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    weight_shape = tuple(int(d) for d in weight_shape)
    count = math.ceil(weight_shape[1] / group_size)
    if len(weight_shape) == 2:
        return (weight_shape[0], count)
    if len(weight_shape) == 4:
        return (weight_shape[0], weight_shape[2], weight_shape[3], count)
    raise ValueError(f"weights must be 2-D (linear) or 4-D (conv2d), got shape {weight_shape}")


def group_index(weight_shape, group_size):
    """For each input channel, the index of its group along the last group axis
    (a LongTensor of length `in`)."""
    return torch.arange(int(weight_shape[1])) // group_size


def expand_to_weights(per_group, weight_shape, group_size):
    """Broadcast a per-group tensor (shape `group_shape(...)`) to the weight
    shape, so each weight gets its group's value."""
    expected = group_shape(weight_shape, group_size)
    if tuple(per_group.shape) != expected:
        raise ValueError(f"per-group array has shape {tuple(per_group.shape)}, "
                         f"expected {expected}")
    index = group_index(weight_shape, group_size).to(per_group.device)
    if len(weight_shape) == 2:
        return per_group[:, index]                          # (out, in)
    return per_group[:, :, :, index].permute(0, 3, 1, 2)    # (out, in, kh, kw)
