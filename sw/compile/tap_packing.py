"""Tap packing: a small-channel first layer as a 1x1 convolution over its
image's patches.

A chunk is one kernel position's group of 16 input channels, so a first
layer with 3 (RGB) or 1 (grey) input channels fills 3 or 1 of a chunk's 16
lanes: a 3x3 layer on an RGB image takes 9 chunks a tile where its 27 MACs
per output would fit 2. Packing moves the kernel taps into the channels: the
host writes the image as its patches (im2col; channel `(ky * kw + kx) * C + c`
of pixel `(oy, ox)` is input channel `c` at `(oy * sy - py + ky, ox * sx -
px + kx)`, zero outside the image), and the layer becomes a 1x1, stride-1,
unpadded convolution over `C * kh * kw` channels: `ceil(C * kh * kw / 16)`
chunks a tile instead of `kh * kw * ceil(C / 16)`. The same products are
summed, so the outputs are the same integers; only the input map (what the
host loads) and the weights' order change.

The weights keep their values; the hardware groups (16 consecutive packed
channels) are rebuilt from each weight's own precision and shift
(`regroup.hardware_groups`), which is exact.
"""

import dataclasses
import math

import numpy as np

from hw.isa import GROUP_SIZE
from sw.compile.regroup import hardware_groups, per_weight


@dataclasses.dataclass(frozen=True)
class TapPacking:
    """How the host turns an image `(C, H, W)` into the packed layer's input."""
    channels: int
    kernel: tuple          # (kh, kw)
    stride: tuple          # (sy, sx)
    padding: tuple         # (py, px)
    output_hw: tuple       # (Ho, Wo) of the convolution

    def apply(self, x):
        """The patches of `x` (C, H, W): an int64 array (C * kh * kw, Ho, Wo)."""
        x = np.asarray(x, dtype=np.int64)
        (kh, kw), (sy, sx), (py, px), (ho, wo) = (self.kernel, self.stride, self.padding,
                                                  self.output_hw)
        padded = np.pad(x, ((0, 0), (py, py), (px, px)))
        taps = [padded[:, ky:ky + sy * (ho - 1) + 1:sy, kx:kx + sx * (wo - 1) + 1:sx]
                for ky in range(kh) for kx in range(kw)]
        return np.concatenate(taps, axis=0)

    def describe(self):
        """The manifest's record of it (what another host needs to do the same)."""
        return {"kind": "im2col", "channel_order": "(ky * kw + kx) * C + c",
                "channels": self.channels, "kernel": list(self.kernel),
                "stride": list(self.stride), "padding": list(self.padding),
                "output_hw": list(self.output_hw)}


def chunks_per_tile(channels, kernel):
    """Chunks one tile's reduction takes: kernel positions times channel blocks."""
    return kernel[0] * kernel[1] * math.ceil(channels / GROUP_SIZE)


def pack_taps(spec):
    """`(packed_spec, packing)` for a convolution that reads the image, when
    packing takes fewer chunks; otherwise `(spec, None)`."""
    kh, kw = spec.kernel
    channels = spec.in_channels
    if spec.kind != "conv" or chunks_per_tile(channels * kh * kw, (1, 1)) >= \
            chunks_per_tile(channels, (kh, kw)):
        return spec, None
    stride = getattr(spec, "stride", 1)
    stride = tuple(stride) if isinstance(stride, (tuple, list)) else (int(stride), int(stride))
    packing = TapPacking(channels, (kh, kw), stride, (spec.padding, spec.padding),
                         tuple(spec.conv_output_hw))
    out_channels = spec.out_channels

    def packed(array):      # (O, C, kh, kw) -> (O, kh * kw * C, 1, 1), tap-major
        return array.transpose(0, 2, 3, 1).reshape(out_channels, kh * kw * channels, 1, 1)

    weights = packed(spec.conv_weights)
    if (spec.precision == 8).all():
        precision, shift = hardware_groups(weights, None, None)
    else:
        bits, shifts = per_weight(spec)
        precision, shift = hardware_groups(weights, packed(bits), packed(shifts))
    changes = dict(kind="conv", weights=weights, precision=precision, shift=shift,
                   input_shape=(kh * kw * channels, *packing.output_hw), padding=0)
    if any(field.name == "stride" for field in dataclasses.fields(spec)):
        changes["stride"] = type(spec.stride)((1, 1)) if isinstance(spec.stride, (tuple, list)) \
            else 1
    return dataclasses.replace(spec, **changes), packing
