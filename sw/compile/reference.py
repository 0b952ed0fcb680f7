"""Plain numpy integer reference of one layer: what the layer computes, with no
knowledge of the hardware (no tiles, chunks, passes or memories).

Convolution with zero padding and the layer's stride in int64, then either
`acc + bias` (raw layer) or `common.fixedpoint.requantize_sum` per output
channel (with the residual shortcut and the signed clamp where the layer has
them), then 2x2 stride-2 max-pooling with floor.
"""

import numpy as np

from common import fixedpoint
from sw.compile.layer import split_input


def reference_accumulator(spec, x):
    """The int64 convolution (Cout, Ho, Wo) of input codes `x` (Cin, H, W)."""
    x, _ = split_input(x)
    x = np.asarray(x, dtype=np.int64).reshape(spec.input_shape)
    w = spec.conv_weights
    kh, kw = spec.kernel
    p, s = spec.padding, spec.stride
    padded = np.pad(x, ((0, 0), (p, p), (p, p)))
    ho, wo = spec.conv_output_hw
    acc = np.zeros((spec.out_channels, ho, wo), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            window = padded[:, ky:ky + s * (ho - 1) + 1:s, kx:kx + s * (wo - 1) + 1:s]  # (Cin, Ho, Wo)
            acc += np.tensordot(w[:, :, ky, kx], window, axes=(1, 0))
    return acc


def reference_layer(spec, x):
    """The layer's output (Cout, Ho, Wo): int64 logits or activation codes.
    `x`: input codes, or for a residual layer a LayerInput."""
    x, shortcut = split_input(x)
    acc = reference_accumulator(spec, x)
    bias = spec.bias.reshape(-1, 1, 1)
    if spec.raw:
        return acc + bias
    branch = {}
    if spec.residual:
        branch = dict(residual=np.asarray(shortcut, dtype=np.int64).reshape(spec.shortcut_shape),
                      residual_multiplier=spec.residual_multiplier.reshape(-1, 1, 1),
                      residual_shift=spec.residual_shift)
    codes = fixedpoint.requantize_sum(acc, bias, spec.multiplier.reshape(-1, 1, 1),
                                      spec.requant_shift, spec.act_bits_out,
                                      signed=spec.act_signed, **branch)
    if spec.pool:
        cout, ho, wo = codes.shape
        ho, wo = ho // 2 * 2, wo // 2 * 2
        codes = codes[:, :ho, :wo].reshape(cout, ho // 2, 2, wo // 2, 2).max(axis=(2, 4))
    return codes
