"""The layer shapes the core runs, whatever its configuration: convolution
strides, padding and kernel sizes, and the PPU's max-pooling window.

The compiler refuses a model file's layer outside them
(`sw/compile/network.py`, `sw/compile/lower.py`), and `mpq train` refuses the
traced network before any training (`sw/quantize/graph.py`), with the same
words. Defined here, below both, because training does not import the
hardware (as `common/weight_groups.py`); `hw/isa.py` sizes its fields from
these.
"""

KERNEL_BITS = 4     # a chunk descriptor's ky and kx: kernels up to 16 x 16
PAD_BITS = 4        # the PAD register: padding below 16
STRIDES = (1, 2)    # stride 2 needs a configuration with `stride2` (sw/compile/lower.py)
POOL_WINDOW = 2     # max-pooling: 2 x 2, stride 2, no padding (hw/ppu.py, PoolWriter)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def conv_problem(kernel, stride, padding):
    """What the core cannot take of a convolution with this kernel, stride
    and padding (ints or (height, width) pairs), or None."""
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    if sh != sw:
        return f"the hardware strides both axes alike, the model asks for stride {[sh, sw]}"
    if sh not in STRIDES:
        return f"stride {sh} is not supported (limit: stride 1 or 2)"
    if ph != pw:
        return f"the hardware pads every side alike, the model asks for padding {[ph, pw]}"
    if ph >= 1 << PAD_BITS:
        return f"padding {ph} exceeds the limit (PAD < {1 << PAD_BITS})"
    limit = 1 << KERNEL_BITS
    if kh > limit or kw > limit:
        return f"kernel {kh}x{kw} exceeds the {limit}x{limit} limit"
    return None


def pool_problem(kernel_size, stride, padding):
    """What the core cannot take of a max-pooling with this window, stride
    (None: the window, as in PyTorch) and padding, or None."""
    kernel = _pair(kernel_size)
    asked = {"kernel_size": list(kernel), "stride": list(_pair(kernel if stride is None else stride)),
             "padding": list(_pair(padding))}
    window = [POOL_WINDOW, POOL_WINDOW]
    if asked != {"kernel_size": window, "stride": window, "padding": [0, 0]}:
        return (f"the hardware pools {POOL_WINDOW}x{POOL_WINDOW} with stride {POOL_WINDOW} and no padding, "
                f"the model asks for {asked}")
    return None
