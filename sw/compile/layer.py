"""One integer layer as the compiler takes it (`LayerSpec`), its checks, and a
generator of random layers for the tests.

The integer semantics are those of docs/model_format.md: `weights` are the
full integer weights `q << e` (not `q`), grouped as in
`sw/quantize/groups.py` with group size `hw.isa.GROUP_SIZE`; a linear
layer is a 1x1 convolution on a 1x1 map, and a globally pooled one
(`global_pool`: the input (C, H, W) summed over H and W, then the linear
layer) an H x W convolution without padding whose weights are the same at
every kernel position. A residual layer (model file
version 2) adds a shortcut tensor of its conv output's shape in its
requantization (`common.fixedpoint.requantize_sum`); its input is then a
`LayerInput` (the input codes and the shortcut codes).
"""

import dataclasses
import math

import numpy as np

from common import fixedpoint
from common.errors import UserError
from hw.isa import GROUP_SIZE
from sw.quantize.groups import group_shape

WEIGHT_BITS = (2, 3, 4, 8)
INPUT_ACT_BITS = (2, 3, 4, 8)
OUTPUT_ACT_BITS = (2, 3, 4)
# p + e of a 2/3/4-bit group must fit the PE's 4-bit weight lane.
MAX_GROUP_BITS = 4
# Bits of a residual shortcut's codes (unsigned, or signed: a projection
# without ReLU); they sit in the 4-bit activation slots.
SHORTCUT_BITS = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class LayerInput:
    """What a residual layer reads: its input codes `x` (Cin, H, W) and the
    shortcut codes (Cout, Ho, Wo) added in its requantization."""
    x: np.ndarray
    shortcut: np.ndarray | None = None


def split_input(value):
    """`(x, shortcut)` of a layer's input: a LayerInput, or plain input codes."""
    if isinstance(value, LayerInput):
        return value.x, value.shortcut
    return value, None


@dataclasses.dataclass
class LayerSpec:
    kind: str                       # "conv" or "linear"
    weights: np.ndarray             # int64 q << e; conv (Cout, Cin, kh, kw), linear (Cout, Cin)
    precision: np.ndarray           # per group p in {2, 3, 4} (8: the whole layer)
    shift: np.ndarray               # per group e >= 0
    bias: np.ndarray                # int64 per Cout, in accumulator units
    multiplier: np.ndarray | None   # signed 16-bit per Cout (None for a raw layer)
    requant_shift: int | None       # 0 .. 47 (None for a raw layer)
    act_bits_in: int                # 2, 3, 4, or 8 for the raw uint8 network input
    act_bits_out: int | None        # 2, 3, 4 (None for a raw layer)
    input_shape: tuple              # (Cin, H, W); (Cin, 1, 1) for linear
    padding: int = 0
    stride: int = 1                 # the convolution's stride, both axes
    pool: bool = False              # 2x2 max-pool, stride 2, floor
    raw: bool = False               # last layer: output acc + bias
    # Store the output map parity-split (docs/isa.md, "Activations"): its
    # consumer is a stride-2 layer.
    split_output: bool = False
    # The input map is stored parity-split and this pointwise layer (1x1,
    # stride 1, no padding, pooling or shortcut) reads it in storage order:
    # its output comes out parity-split as it is written (split_output, no
    # OUT_SPLIT permutation).
    input_split: bool = False
    name: str = "layer"
    index: int | None = None        # position in the model file's `layers` (for messages)
    # Output codes clamped to the signed act_bits_out range (no ReLU).
    act_signed: bool = False
    # A residual shortcut: per-Cout signed 16-bit Mr (None: no shortcut),
    # the left shift Sr of its term, and its codes' bits and signedness.
    residual_multiplier: np.ndarray | None = None
    residual_shift: int = 0
    shortcut_bits: int = 4
    shortcut_signed: bool = False
    # A linear layer on the sum of its (Cin, H, W) input over H and W
    # (model file `global_pool_input`): an H x W convolution without padding
    # whose weights (and groups) are the same at every kernel position.
    global_pool: bool = False

    @property
    def label(self):
        """The layer as messages name it: `layers[i] ('name')`, as the model
        file reader names fields, or `layer 'name'` outside a model."""
        if self.index is None:
            return f"layer {self.name!r}"
        return f"layers[{self.index}] ({self.name!r})"

    def __post_init__(self):
        self.weights = np.asarray(self.weights)
        self.precision = np.asarray(self.precision)
        self.shift = np.asarray(self.shift)
        self.bias = np.asarray(self.bias)
        if self.multiplier is not None:
            self.multiplier = np.asarray(self.multiplier)
        self.input_shape = tuple(int(d) for d in self.input_shape)
        if self.kind == "linear" and len(self.input_shape) == 1:
            self.input_shape = (self.input_shape[0], 1, 1)
        self.padding = int(self.padding)
        self.stride = int(self.stride)
        self.pool = bool(self.pool)
        self.raw = bool(self.raw)
        self.split_output = bool(self.split_output)
        self.input_split = bool(self.input_split)
        self.act_signed = bool(self.act_signed)
        self.shortcut_signed = bool(self.shortcut_signed)
        self.global_pool = bool(self.global_pool)
        if self.residual_multiplier is not None:
            self.residual_multiplier = np.asarray(self.residual_multiplier)
        self.validate()

    # -- derived shapes --

    @property
    def out_channels(self):
        return int(self.weights.shape[0])

    @property
    def in_channels(self):
        return int(self.weights.shape[1])

    @property
    def kernel(self):
        if self.global_pool:
            return tuple(int(d) for d in self.input_shape[1:])
        return (1, 1) if self.kind == "linear" else tuple(int(d) for d in self.weights.shape[2:])

    @property
    def conv_weights(self):
        """Weights as (Cout, Cin, kh, kw) int64 (a globally pooled layer's
        repeated at every kernel position, a read-only view)."""
        w = self.weights.astype(np.int64)
        if self.kind == "conv":
            return w
        return np.broadcast_to(w[:, :, None, None], w.shape + self.kernel)

    @property
    def conv_groups(self):
        """`(precision, shift)` as (Cout, kh, kw, blocks) int64 arrays (read-only
        views repeated at every kernel position for a globally pooled layer)."""
        p, e = self.precision.astype(np.int64), self.shift.astype(np.int64)
        if self.kind == "linear":
            shape = (p.shape[0], *self.kernel, p.shape[1])
            return (np.broadcast_to(p[:, None, None, :], shape),
                    np.broadcast_to(e[:, None, None, :], shape))
        return p, e

    @property
    def conv_output_hw(self):
        (_, h, w), (kh, kw) = self.input_shape, self.kernel
        p, s = self.padding, self.stride
        return (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1

    @property
    def residual(self):
        """The layer adds a shortcut."""
        return self.residual_multiplier is not None

    @property
    def pointwise(self):
        """Each output pixel is computed from the input pixel at the same
        position alone (a 1x1 map layer at stride 1 without padding, pooling
        or shortcut): the layer commutes with any order of the positions
        within a row, the parity split's included."""
        return (self.kind == "conv" and not self.global_pool and self.kernel == (1, 1)
                and self.stride == 1 and self.padding == 0 and not self.pool and not self.residual
                and not self.raw)

    @property
    def shortcut_shape(self):
        """The shortcut's shape: the conv output's (before pooling)."""
        return (self.out_channels, *self.conv_output_hw)

    @property
    def shortcut_range(self):
        return fixedpoint.activation_range(self.shortcut_bits, self.shortcut_signed)

    @property
    def output_range(self):
        return fixedpoint.activation_range(self.act_bits_out, self.act_signed)

    @property
    def output_shape(self):
        ho, wo = self.conv_output_hw
        if self.pool:
            ho, wo = ho // 2, wo // 2
        return self.out_channels, ho, wo

    # -- checks --

    def _fail(self, message):
        raise UserError(f"{self.label}: {message}")

    def validate(self):
        if self.kind not in ("conv", "linear"):
            self._fail(f"kind must be 'conv' or 'linear', got {self.kind!r}")
        w = self.weights
        if not np.issubdtype(w.dtype, np.integer):
            self._fail(f"weights must be integers, got dtype {w.dtype}")
        if w.ndim != (4 if self.kind == "conv" else 2):
            self._fail(f"{self.kind} weights must be {4 if self.kind == 'conv' else 2}-D, "
                       f"got shape {w.shape}")
        if min(w.shape) < 1:
            self._fail(f"weights have an empty dimension: shape {w.shape}")
        self.weights = w.astype(np.int64)
        cout, cin = self.out_channels, self.in_channels
        if len(self.input_shape) != 3:
            self._fail(f"input_shape must be (Cin, H, W), got {self.input_shape}")
        if self.input_shape[0] != cin:
            self._fail(f"input_shape {self.input_shape} has {self.input_shape[0]} channels, "
                       f"the weights take {cin}")
        if self.global_pool and self.kind != "linear":
            self._fail("only a linear layer pools its input globally")
        if self.kind == "linear" and not self.global_pool and self.input_shape[1:] != (1, 1):
            self._fail(f"a linear layer takes a (Cin, 1, 1) input, got {self.input_shape}")
        if self.kind == "linear" and (self.padding or self.pool or self.stride != 1):
            self._fail("a linear layer has no padding, no stride and no pooling")
        if self.padding < 0:
            self._fail(f"padding must be >= 0, got {self.padding}")
        if self.stride < 1:
            self._fail(f"stride must be >= 1, got {self.stride}")
        (_, h, w), (kh, kw) = self.input_shape, self.kernel
        if h + 2 * self.padding < kh or w + 2 * self.padding < kw:
            self._fail(f"the {self.kernel} kernel does not fit the input {self.input_shape} "
                       f"with padding {self.padding}")
        ho, wo = self.conv_output_hw
        if self.pool and (ho < 2 or wo < 2):
            self._fail(f"2x2 pooling of a {ho}x{wo} output leaves nothing")
        if self.raw and self.pool:
            self._fail("a raw (logits) layer cannot pool: the PPU pools activations only")
        if self.raw and self.split_output:
            self._fail("a raw (logits) layer writes results, not a map to split")
        if self.input_split and not (self.pointwise and self.split_output):
            self._fail("only a 1x1 layer at stride 1 without padding, pooling or shortcut reads a "
                       "parity-split map in storage order, and its output is then parity-split too")
        if self.act_bits_in not in INPUT_ACT_BITS:
            self._fail(f"input activation bits {self.act_bits_in} not supported "
                       f"(limit: one of {INPUT_ACT_BITS})")
        self._validate_groups()
        if self.bias.shape != (cout,) or not np.issubdtype(self.bias.dtype, np.integer):
            self._fail(f"bias must be {cout} integers, got shape {self.bias.shape} "
                       f"dtype {self.bias.dtype}")
        self.bias = self.bias.astype(np.int64)
        if self.bias.min() < -(1 << 31) or self.bias.max() >= (1 << 31):
            self._fail("bias exceeds the 32-bit signed parameter field")
        if self.raw:
            return
        if self.act_bits_out not in OUTPUT_ACT_BITS:
            self._fail(f"output activation bits {self.act_bits_out} not supported "
                       f"(limit: one of {OUTPUT_ACT_BITS})")
        if self.multiplier is None or self.multiplier.shape != (cout,) \
                or not np.issubdtype(self.multiplier.dtype, np.integer):
            self._fail(f"multiplier must be {cout} integers")
        self.multiplier = self.multiplier.astype(np.int64)
        if self.multiplier.min() < fixedpoint.MULTIPLIER_MIN \
                or self.multiplier.max() > fixedpoint.MULTIPLIER_MAX:
            self._fail(f"requantization multiplier out of the {fixedpoint.MULTIPLIER_BITS}-bit "
                       f"signed range [{fixedpoint.MULTIPLIER_MIN}, {fixedpoint.MULTIPLIER_MAX}]")
        if not isinstance(self.requant_shift, (int, np.integer)) \
                or not 0 <= self.requant_shift <= fixedpoint.SHIFT_MAX:
            self._fail(f"requantization shift {self.requant_shift!r} outside "
                       f"[0, {fixedpoint.SHIFT_MAX}]")
        self.requant_shift = int(self.requant_shift)
        self._validate_residual()

    def _validate_residual(self):
        cout = self.out_channels
        if self.act_signed and self.pool:
            self._fail("signed output codes cannot be max-pooled (the PPU pools unsigned codes)")
        if not self.residual:
            return
        if self.pool:
            self._fail("a residual layer cannot pool: the shortcut is added to the conv output "
                       "and the pooled map has another shape")
        mr = self.residual_multiplier
        if mr.shape != (cout,) or not np.issubdtype(mr.dtype, np.integer):
            self._fail(f"residual_multiplier must be {cout} integers, got shape {mr.shape}")
        self.residual_multiplier = mr.astype(np.int64)
        if mr.min() < fixedpoint.MULTIPLIER_MIN or mr.max() > fixedpoint.MULTIPLIER_MAX:
            self._fail(f"residual multiplier out of the {fixedpoint.MULTIPLIER_BITS}-bit signed "
                       f"range [{fixedpoint.MULTIPLIER_MIN}, {fixedpoint.MULTIPLIER_MAX}]")
        if not isinstance(self.residual_shift, (int, np.integer)) \
                or not 0 <= self.residual_shift <= fixedpoint.SHIFT_MAX:
            self._fail(f"residual shift {self.residual_shift!r} outside [0, {fixedpoint.SHIFT_MAX}]")
        self.residual_shift = int(self.residual_shift)
        if self.shortcut_bits not in SHORTCUT_BITS:
            self._fail(f"shortcut bits {self.shortcut_bits} not supported "
                       f"(limit: one of {SHORTCUT_BITS})")

    def _validate_groups(self):
        expected = group_shape(self.weights.shape, GROUP_SIZE)
        for field in ("precision", "shift"):
            array = getattr(self, field)
            if array.shape != expected or not np.issubdtype(array.dtype, np.integer):
                self._fail(f"{field} must be an integer array of the group shape {expected}, "
                           f"got shape {array.shape} dtype {array.dtype}")
        p, e = self.precision.astype(np.int64), self.shift.astype(np.int64)
        self.precision, self.shift = p, e
        bad = np.argwhere(~np.isin(p, WEIGHT_BITS))
        if bad.size:
            group = tuple(int(i) for i in bad[0])
            self._fail(f"group {group} has precision {p[group]}, not supported "
                       f"(limit: one of {WEIGHT_BITS})")
        if (p == 8).any() and not (p == 8).all():
            self._fail("8-bit weights must cover the whole layer (they run as digit passes)")
        bad = np.argwhere(e < 0)
        if bad.size:
            group = tuple(int(i) for i in bad[0])
            self._fail(f"group {group} has a negative shift {e[group]}")
        bad = np.argwhere((p == 8) & (e != 0))
        if bad.size:
            group = tuple(int(i) for i in bad[0])
            self._fail(f"group {group}: an 8-bit group must have shift 0, got {e[group]}")
        bad = np.argwhere((p != 8) & (p + e > MAX_GROUP_BITS))
        if bad.size:
            group = tuple(int(i) for i in bad[0])
            self._fail(f"group {group} has precision {p[group]} and shift {e[group]}: "
                       f"p + e must be <= {MAX_GROUP_BITS} (limit of the 4-bit weight lane)")
        # Every weight is q << e with q a p-bit signed integer.
        w = self.conv_weights
        pg, eg = self.conv_groups
        index = np.arange(self.in_channels) // GROUP_SIZE
        pw = pg[:, :, :, index].transpose(0, 3, 1, 2)
        ew = eg[:, :, :, index].transpose(0, 3, 1, 2)
        q = w >> ew
        bad = (q << ew != w) | (q < -(1 << (pw - 1))) | (q > (1 << (pw - 1)) - 1)
        if bad.any():
            o, c, ky, kx = (int(i) for i in np.argwhere(bad)[0])
            group = (o, c // GROUP_SIZE) if self.kind == "linear" else (o, ky, kx,
                                                                         c // GROUP_SIZE)
            self._fail(f"weight {int(w[o, c, ky, kx])} of group {group} is not q << {int(ew[o, c, ky, kx])} "
                       f"with q a {int(pw[o, c, ky, kx])}-bit signed integer")


# --- random layers for tests ------------------------------------------------------------------

GROUP_STYLES = ("uniform2", "uniform3", "uniform4", "mpq", "mixed", "int8")


def random_groups(rng, shape, style):
    """Random per-group `(precision, shift)` of a style: uniform b-bit, MPQ
    (coarse (p=2, e=1) and fine (p=3, e=0) groups), any legal mix, or 8-bit."""
    if style.startswith("uniform"):
        return np.full(shape, int(style[-1]), np.int64), np.zeros(shape, np.int64)
    if style == "int8":
        return np.full(shape, 8, np.int64), np.zeros(shape, np.int64)
    if style == "mpq":
        fine = rng.random(shape) < rng.uniform(0.1, 0.9)
        return np.where(fine, 3, 2).astype(np.int64), np.where(fine, 0, 1).astype(np.int64)
    if style == "mixed":
        choices = np.array([(2, 0), (2, 1), (2, 2), (3, 0), (3, 1), (4, 0)])
        picked = choices[rng.integers(0, len(choices), size=shape)]
        return picked[..., 0].astype(np.int64), picked[..., 1].astype(np.int64)
    raise ValueError(f"unknown group style {style!r}")


def random_layer_spec(rng, *, kind=None, in_channels=None, out_channels=None, height=None,
                      width=None, kernel=None, padding=None, stride=None, pool=None, raw=None,
                      split_output=None, act_bits_in=None, act_bits_out=None, style=None,
                      max_channels=40, max_size=9, name="random", residual=False,
                      global_pool=False):
    """A random valid LayerSpec; any argument left None is drawn from `rng`.
    A quarter of the convolutions have stride 2 (mostly the 3x3 and 1x1
    kernels of residual networks), a quarter of the layers with an output
    map store it parity-split.

    `residual`: False (the default: the draws of earlier versions, so their
    seeds give the same layers), True (a residual layer: an unsigned or
    signed shortcut of 2 to 4 bits, sometimes a signed output) or None (a
    residual layer one time in three, among the layers that may be one).
    `global_pool`: a linear layer on the global sum of a (Cin, H, W) map
    (`height`, `width` drawn up to `max_size` if None)."""
    if global_pool:
        kind = "linear"
    if residual is None:
        residual = bool(rng.random() < 1 / 3) and not raw and not pool
    if residual:
        raw, pool = False, False
    kind = kind or ("linear" if rng.random() < 0.2 else "conv")
    cin = in_channels or int(rng.integers(1, max_channels + 1))
    cout = out_channels or int(rng.integers(1, max_channels + 1))
    style = style or str(rng.choice(GROUP_STYLES, p=[0.15, 0.1, 0.2, 0.25, 0.2, 0.1]))
    raw = bool(rng.random() < 0.15) if raw is None else raw
    if act_bits_in is None:
        act_bits_in = int(rng.choice([2, 3, 4, 8], p=[0.3, 0.2, 0.3, 0.2]))
    if kind == "linear" and global_pool:
        kernel, padding, stride, pool = 1, 0, 1, False
        height = height or int(rng.integers(1, max_size + 1))
        width = width or int(rng.integers(1, max_size + 1))
    elif kind == "linear":
        kernel, padding, stride, pool, height, width = 1, 0, 1, False, 1, 1
    else:
        stride = stride or (2 if rng.random() < 0.25 else 1)
        kernel = kernel or int(rng.choice([1, 3, 2, 5], p=[0.35, 0.45, 0.1, 0.1]))
        padding = int(rng.integers(0, 2)) if padding is None else padding
        pool = (not raw and rng.random() < 0.3) if pool is None else pool
        if raw:  # logits go to the small result memory
            max_size = min(max_size, 4)
        # The smallest input with an output of one pixel, two when pooling.
        low = max(kernel - 2 * padding + (stride if pool else 0), 1)
        height = height or int(rng.integers(low, max(low, max_size) + 1))
        width = width or int(rng.integers(low, max(low, max_size) + 1))
    if split_output is None:
        split_output = not raw and rng.random() < 0.25
    wshape = (cout, cin) if kind == "linear" else (cout, cin, kernel, kernel)
    gshape = group_shape(wshape, GROUP_SIZE)
    precision, shift = random_groups(rng, gshape, style)
    index = np.arange(cin) // GROUP_SIZE
    if kind == "linear":
        pw, ew = precision[:, index], shift[:, index]
    else:
        pw = precision[:, :, :, index].transpose(0, 3, 1, 2)
        ew = shift[:, :, :, index].transpose(0, 3, 1, 2)
    q = rng.integers(-(1 << (pw - 1)), 1 << (pw - 1))
    weights = (q << ew).astype(np.int64)
    # Bias and requantization calibrated on a random input, so the outputs
    # spread over the code range instead of clamping.
    from sw.compile.reference import reference_accumulator
    probe = LayerSpec(kind=kind, weights=weights, precision=precision, shift=shift,
                      bias=np.zeros(cout, np.int64), multiplier=None, requant_shift=None,
                      act_bits_in=act_bits_in, act_bits_out=None, input_shape=(cin, height, width),
                      padding=padding, stride=stride, raw=True, name=name,
                      global_pool=global_pool)
    acc = reference_accumulator(probe, rng.integers(0, 1 << act_bits_in, (cin, height, width)))
    acc = acc.reshape(cout, -1)
    spread = max(1.0, float(acc.std()))
    bias = (-np.median(acc, axis=1) + rng.normal(0, spread / 2, cout)).round().astype(np.int64)
    multiplier, requant_shift, act_bits_out = None, None, None
    if not raw:
        act_bits_out = act_bits_out or int(rng.choice([2, 3, 4]))
        multiplier = rng.integers(1 << 12, 1 << 15, size=cout).astype(np.int64)
        multiplier[rng.random(cout) < 0.1] *= -1
        # (spread * 2^14) >> S ~ a third of the code range
        requant_shift = int(np.clip(round(math.log2(spread * (1 << 14) * 3)) - act_bits_out
                                    + int(rng.integers(-1, 2)), 0, fixedpoint.SHIFT_MAX))
    extra = {}
    if residual:
        # The shortcut term about as large as the main one: Mr / 2^(S - Sr)
        # near 1/2, so r * Mr << Sr >> S spans about half the code range.
        shortcut_bits = int(rng.choice([2, 3, 4]))
        residual_multiplier = rng.integers(1 << 12, 1 << 15, size=cout).astype(np.int64)
        residual_multiplier[rng.random(cout) < 0.1] *= -1
        residual_shift = int(np.clip(requant_shift - 15 + int(rng.integers(-1, 3)), 0,
                                     fixedpoint.SHIFT_MAX))
        extra = dict(residual_multiplier=residual_multiplier, residual_shift=residual_shift,
                     shortcut_bits=shortcut_bits, shortcut_signed=bool(rng.random() < 0.5),
                     act_signed=bool(rng.random() < 0.25))
    return LayerSpec(kind=kind, weights=weights, precision=precision, shift=shift, bias=bias,
                     multiplier=multiplier, requant_shift=requant_shift, act_bits_in=act_bits_in,
                     act_bits_out=act_bits_out, input_shape=(cin, height, width),
                     padding=padding, stride=stride, pool=pool, raw=raw,
                     split_output=split_output, name=name, global_pool=global_pool, **extra)


def random_input(rng, spec):
    """Random input codes of the layer's shape and input bits; for a residual
    layer a LayerInput with random shortcut codes of its range too."""
    x = rng.integers(0, 1 << spec.act_bits_in, size=spec.input_shape).astype(np.int64)
    if not spec.residual:
        return x
    low, high = spec.shortcut_range
    return LayerInput(x, rng.integers(low, high + 1, size=spec.shortcut_shape).astype(np.int64))
