"""Lowering of one layer to the core of docs/isa.md: chunks, rounds, tiles,
weight bit-planes, the program and the memory images.

How a layer is cut (all choices of the compiler, none of the hardware's):

* Per channel tile `ktile` (rows `ktile*R .. ktile*R + R-1`) and per
  *position* `(ky, kx, block)`, each row contributes *parts*: its group
  `(q, p, e)`, or for an 8-bit weight three signed 3-bit digits
  `(d, 3, 6)`, `(d, 3, 3)`, `(d, 3, 0)` (`w = d2*64 + d1*8 + d0`). Rows beyond
  COUT contribute nothing (pcode 0); Cin is padded to a multiple of G with
  zero weights inside the last group.
* The parts of a position are split into chunks, each with a *weight shift*
  `s`: take the smallest `e` left as `s`; the chunk holds, at most one per
  row, the parts with `e == s`, and those with `e == s + 1` and `p <= 3`
  (their `fold` is 1: the PE weight is `q << 1`, at most 4 bits). A chunk
  whose parts are all `p = 2` at `e = s` runs in a W2 mode with fold 0,
  otherwise in W4. So the MPQ mix of (p=2, e=1) and (p=3, e=0) groups gives
  W4 chunks with folds at shift 0 and W2 chunks at shift 1; an 8-bit layer
  gives one W4 chunk per digit at shifts 6, 3, 0. Activations: A2 modes when
  the input has 2 bits, A4 otherwise.
* The chunks of a `ktile` with the same weight shift form one *round group*:
  consecutive chunk descriptors and one weight-pointer entry. Groups are
  ordered by decreasing shift, chunks by position (ky, kx, block).
* Every tile runs, for each input pass (8-bit input: high nibbles at
  IN_BASE with +4, then low nibbles at IN_BASE2 with +0; otherwise one pass),
  each round group as one ROUND with shift `s + input shift`. The weights of
  a round group are stored once and re-read by every tile and pass of the
  ktile (the wptr entry resets the row pointers).
* Stride 2 (ResNet's down-sampling convolutions): a tile is still C
  consecutive output pixels of one row, and column c reads input column
  2 * (x0 + c) + kx - pad. The layer's input map is stored parity-split
  (even columns, then odd: `split_output` of the layer that writes it, or
  the host's image for the network input), so for each kx those columns
  are C consecutive positions, one in every bank: a chunk costs the same
  reads and cycles as at stride 1 (docs/dataflow.md, "Stride 2").
* Global average pooling (`global_pool`: a linear layer on the sum of its
  (C, H, W) input over H and W) is the H x W convolution without padding
  whose weights are the same at every kernel position, with one 1x1 output.
  Its weights are planned and stored once, as for position (0, 0); each
  round group is then run once per kernel position (ky, kx), in row-major
  order, as a round of its own whose chunks name that position and whose
  weight-pointer entry is the stored group's: the round engine reloads the
  row pointers from the entry at every ROUND, so the same planes are read
  H * W times and nothing is replicated. Only the chunk descriptors (one
  per block and position) and the ROUNDs repeat (docs/dataflow.md,
  "Global average pooling").
* Tiles: ktile outermost, then output rows, then x0 = 0, C, 2C, ...; with
  pooling the rows go in pairs (y even, y + 1) for each (x0, ktile) and the
  last odd row and column, which floor pooling drops, are not computed
  (OUT_W is then 2 * floor(Wo / 2), the conv columns that are pooled).
"""

import copy
import dataclasses
from collections import Counter

import numpy as np

from common.errors import UserError
from common.layer_shapes import conv_problem
from hw.isa import ACT_SLOT_BITS, GROUP_SIZE, Memory, Register, slot_bits
from hw.pe.modes import PeMode
from sw.compile import encoding as enc
from sw.compile.images import empty_images, merge_images, read_entry
from sw.compile.layer import split_input

PASSES_8BIT_INPUT = ((False, 4), (True, 0))   # (input2, shift): high nibbles, then low
PASS_PLAIN_INPUT = ((False, 0),)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Base addresses of a layer's regions; None places it automatically
    (the second input map after the first, the output map after the inputs,
    a residual layer's shortcut map after the output)."""
    in_base: int = 0
    in_base2: int | None = None
    out_base: int | None = None
    sc_base: int | None = None
    param_base: int = 0
    res_base: int = 0
    chunk_base: int = 0
    wptr_base: int = 0
    weight_base: int = 0


@dataclasses.dataclass
class Chunk:
    ky: int
    kx: int
    block: int
    mode: PeMode
    pcodes: list           # per row
    folds: list            # per row
    planes: list           # per row: list of plane words (empty for pcode 0)

    @property
    def steps(self):
        return GROUP_SIZE // self.mode.lanes

    def descriptor(self):
        return enc.encode_chunk(self.ky, self.kx, self.block, self.mode, self.pcodes, self.folds)


@dataclasses.dataclass
class RoundGroup:
    shift: int             # weight shift s (the input pass adds to it)
    chunks: list
    chunk_start: int = 0   # chunk memory address of the first chunk
    wptr: int = 0          # wptr memory entry
    # The round group whose stored planes and wptr entry this one reads (the
    # same weights at another kernel position of a globally pooled layer).
    shares: "RoundGroup | None" = None


@dataclasses.dataclass
class CompiledLayer:
    """One compiled layer.

    `images`: the static memory images (program, chunks, wptr, params,
    weights) in the format of `sw/compile/images.py`; `input_image(x)` adds the
    input activations, `memories(x)` is everything the host loads before
    start. `decode_output(memories)` reads the layer's output back from the
    activation or result memory of an image set (the golden model's or the
    RTL's)."""
    spec: object
    config: object
    placement: Placement          # resolved: every base an int
    registers: dict               # register name -> value
    program: list                 # 64-bit instruction words
    images: dict
    manifest: dict
    round_groups: list            # per ktile: list of RoundGroup
    tiles: list                   # (y, x0, ktile) in program order

    @property
    def name(self):
        return self.spec.name

    @property
    def expected_counters(self):
        return self.manifest["expected_counters"]

    def input_image(self, x):
        """The activation-memory image of input codes `x` (Cin, H, W), or
        of a LayerInput's input and shortcut codes (a residual layer)."""
        spec, cols = self.spec, self.config.cols
        x, shortcut = split_input(x)
        x = np.asarray(x, dtype=np.int64).reshape(spec.input_shape)
        if x.min(initial=0) < 0 or x.max(initial=0) >= (1 << spec.act_bits_in):
            raise UserError(f"{spec.label}: input codes outside [0, "
                            f"{(1 << spec.act_bits_in) - 1}]")
        images = {Memory.ACTIVATIONS: [dict() for _ in range(cols)]}
        slots = SlotBits.of(spec, self.config)
        if spec.act_bits_in == 8:
            maps = ((x >> 4, self.placement.in_base), (x & 15, self.placement.in_base2))
        else:
            maps = ((x, self.placement.in_base),)
        for codes, base in maps:
            _write_map(images[Memory.ACTIVATIONS], codes, base, cols, slots.input,
                       split=spec.stride == 2)
        if spec.residual:
            if shortcut is None:
                raise UserError(f"{spec.label}: a residual layer needs its shortcut codes "
                                f"(a LayerInput)")
            shortcut = np.asarray(shortcut, dtype=np.int64).reshape(spec.shortcut_shape)
            low, high = spec.shortcut_range
            if shortcut.min(initial=0) < low or shortcut.max(initial=0) > high:
                raise UserError(f"{spec.label}: shortcut codes outside [{low}, {high}]")
            _write_map(images[Memory.ACTIVATIONS], shortcut, self.placement.sc_base, cols,
                       slots.shortcut)
        return images

    def memories(self, x):
        """Static images plus the input image: what the host loads."""
        return merge_images(copy.deepcopy(self.images), self.input_image(x))

    def decode_output(self, memories):
        """The layer output (Cout, Ho, Wo) from an image set after the run."""
        spec, regs, cols = self.spec, self.registers, self.config.cols
        cout, ho, wo = spec.output_shape
        if spec.raw:
            bank = memories[Memory.RESULTS][0]
            out = np.zeros((cout, ho, wo), dtype=np.int64)
            for y in range(ho):
                for x in range(wo):
                    for k in range(cout):
                        out[k, y, x] = enc.decode_result(
                            read_entry(bank, regs["RES_BASE"] + (y * wo + x) * cout + k))
            return out
        return _read_map(memories[Memory.ACTIVATIONS], (cout, ho, wo), regs["OUT_BASE"], cols,
                         SlotBits.of(spec, self.config).output, split=spec.split_output,
                         signed=spec.act_signed)


def _write_map(banks, codes, base, cols, slot_bits, split=False):
    """Write a (channels, height, width) map at `base` in `slot_bits`-bit
    slots (docs/isa.md, "Activations"; parity-split for a stride-2 reader;
    signed codes as their low bits, two's complement)."""
    channels, height, width = codes.shape
    padded = np.zeros((enc.padded_channels(channels), height, width), dtype=np.int64)
    padded[:channels] = codes
    packed = enc.pack_slots(padded, slot_bits)                               # (words, H, W)
    words = len(packed)
    wb = -(-width // cols)
    for y in range(height):
        for x in range(width):
            position = enc.column_position(x, width, split)
            address = base + (y * wb + position // cols) * words
            bank = banks[position % cols]
            for j in range(words):
                bank[address + j] = int(packed[j, y, x])


def _read_map(banks, shape, base, cols, slot_bits, split=False, signed=False):
    """A map's codes from its `slot_bits`-bit slots; `signed`: two's complement."""
    channels, height, width = shape
    out = np.zeros(shape, dtype=np.int64)
    for k in range(channels):
        for y in range(height):
            for x in range(width):
                bank, word, shift = enc.act_address(y, x, k, base, width, channels, cols, slot_bits,
                                                    split)
                high = read_entry(banks[bank], word + 1) if shift + slot_bits > 16 else 0
                out[k, y, x] = enc.slot_value(read_entry(banks[bank], word), high, shift, slot_bits)
    if signed:
        out -= (out >> (slot_bits - 1)) << slot_bits
    return out


# --- chunk planning ---------------------------------------------------------------------------

def _split_position(parts):
    """Split one position's parts `(row, q, p, e)` into `(s, [parts])` chunks
    (see the module docstring)."""
    remaining = sorted(parts, key=lambda part: part[3])
    while remaining:
        s = remaining[0][3]
        taken, rest, rows = [], [], set()
        for part in remaining:
            row, _, p, e = part
            if row not in rows and (e == s or (e == s + 1 and p <= 3)):
                taken.append(part)
                rows.add(row)
            else:
                rest.append(part)
        remaining = rest
        yield s, taken


def _plan_ktile(spec, config, ktile, groups_q, pg, eg):
    """The round groups of one channel tile (over the kernel positions of
    the arrays: a globally pooled layer passes position (0, 0) only)."""
    rows, cout = config.rows, spec.out_channels
    kh, kw = pg.shape[1:3]
    blocks = pg.shape[3]
    act2 = spec.act_bits_in == 2
    by_shift = {}
    for ky in range(kh):
        for kx in range(kw):
            for block in range(blocks):
                parts = []
                for r in range(rows):
                    k = ktile * rows + r
                    if k >= cout:
                        continue
                    values = groups_q[k, ky, kx, block]
                    p, e = int(pg[k, ky, kx, block]), int(eg[k, ky, kx, block])
                    if p == 8:
                        for digit, shift in zip(enc.weight_digits(values), enc.DIGIT_SHIFTS):
                            parts.append((r, digit, enc.DIGIT_BITS, shift))
                    else:
                        parts.append((r, values >> e, p, e))
                for s, taken in _split_position(parts):
                    w2 = all(p == 2 and e == s for _, _, p, e in taken)
                    mode = PeMode[f"W{2 if w2 else 4}A{2 if act2 else 4}"]
                    pcodes, folds, planes = [0] * rows, [0] * rows, [[] for _ in range(rows)]
                    for r, q, p, e in taken:
                        pcodes[r] = enc.PCODE_OF_BITS[p]
                        folds[r] = e - s
                        planes[r] = enc.pack_planes(q, p)
                    by_shift.setdefault(s, []).append(
                        Chunk(ky, kx, block, mode, pcodes, folds, planes))
    return [RoundGroup(s, by_shift[s]) for s in sorted(by_shift, reverse=True)]


def _group_values(spec):
    """Weights grouped as (Cout, kh, kw, blocks, G) int64 (zero padded)."""
    w = spec.conv_weights
    cout, cin, kh, kw = w.shape
    cp = enc.padded_channels(cin)
    padded = np.zeros((cout, cp, kh, kw), dtype=np.int64)
    padded[:, :cin] = w
    return padded.reshape(cout, cp // GROUP_SIZE, GROUP_SIZE, kh, kw).transpose(0, 3, 4, 1, 2)


def accumulator_bound(spec):
    """Per output channel, the largest |accumulator| any input can give, with
    every partial sum of rounds (digit passes, nibble passes, shifted
    chunks) bounded by it: sum over weights of the precision's largest
    |w| (2^(p-1) << e; for 8-bit weights the largest sum of |digit| << shift)
    times the largest activation."""
    pg, eg = spec.conv_groups
    cin = spec.in_channels
    sizes = np.minimum(GROUP_SIZE, cin - np.arange(pg.shape[3]) * GROUP_SIZE)
    per_weight = np.where(pg == 8, enc.DIGIT_WEIGHT_BOUND, (1 << (pg - 1)) << eg)
    amax = (1 << spec.act_bits_in) - 1
    return (per_weight * sizes).reshape(spec.out_channels, -1).sum(axis=1) * amax


# --- the compiler -----------------------------------------------------------------------------

def compile_layer(spec, config, placement=None):
    """Compile one LayerSpec for an AcceleratorConfig into a CompiledLayer.

    Raises UserError naming the layer and the limit for anything the core
    cannot run (docs/isa.md, "Limits the compiler checks"). The stages, in
    order: geometry and accumulator checks, round groups, the weight-side
    memories, the parameters, the activation map placement, the program."""
    placement = placement or Placement()
    if (spec.residual or spec.act_signed) and not config.residual:
        _fail(spec, f"the configuration {config.name!r} has no residual adds or signed outputs "
                    f"(residual=False)")
    geometry = _check_geometry(spec, config)
    bound = _check_accumulator(spec, config)
    input_passes = PASSES_8BIT_INPUT if spec.act_bits_in == 8 else PASS_PLAIN_INPUT
    round_groups = _plan_rounds(spec, config, geometry.ktiles, input_passes)
    images = empty_images(config)
    chunk_end, wptr_end, fill = _store_weight_side(spec, config, placement, round_groups, images)
    _store_params(spec, config, placement, images)
    maps = _place_maps(spec, config, placement, input_passes)
    registers = _registers(spec, config, placement, geometry, maps)
    tiles = _tiles(spec, geometry)
    program = _program(spec, config, registers, tiles, round_groups, input_passes)
    images[Memory.PROGRAM][0] = dict(enumerate(program))

    resolved = dataclasses.replace(placement, in_base2=maps.in_base2, out_base=maps.out_base,
                                   sc_base=maps.sc_base)
    compiled = CompiledLayer(spec=spec, config=config, placement=resolved, registers=registers,
                             program=program, images=images, manifest={},
                             round_groups=round_groups, tiles=tiles)
    compiled.manifest = _manifest(compiled, bound, maps.in_words, maps.out_words, fill, chunk_end,
                                  wptr_end, input_passes)
    return compiled


def _fail(spec, message):
    raise UserError(f"{spec.label}: {message}")


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """How a layer's output is cut into tiles."""
    ktiles: int               # channel tiles of R output channels
    rows_computed: int        # conv rows computed (floor pooling drops the last odd one)
    out_w: int                # conv columns computed
    x0s: list                 # first column of each tile


def _check_geometry(spec, config):
    R, C = config.rows, config.cols
    cin = spec.input_shape[0]
    kh, kw = spec.kernel
    blocks = enc.padded_channels(cin) // GROUP_SIZE
    ho, wo = spec.conv_output_hw
    if spec.global_pool and (kh > enc.CHUNK_KERNEL_LIMIT or kw > enc.CHUNK_KERNEL_LIMIT):
        _fail(spec, f"global pooling of a {kh}x{kw} map: its positions are kernel positions, "
                    f"limit {enc.CHUNK_KERNEL_LIMIT}x{enc.CHUNK_KERNEL_LIMIT}")
    problem = conv_problem(spec.kernel, spec.stride, spec.padding)
    if problem:
        _fail(spec, problem)
    if not config.stride2 and (spec.stride == 2 or spec.split_output):
        what = "stride 2" if spec.stride == 2 else "a parity-split output (for a stride-2 reader)"
        _fail(spec, f"{what} needs a configuration with stride2; {config.name!r} runs stride 1 "
                    f"only (limit: stride 1)")
    if blocks > enc.CHUNK_BLOCK_LIMIT:
        _fail(spec, f"{cin} input channels make {blocks} blocks, above the limit of "
                    f"{enc.CHUNK_BLOCK_LIMIT} (block < {enc.CHUNK_BLOCK_LIMIT})")
    ktiles = -(-spec.out_channels // R)
    rows_computed = (ho // 2 * 2) if spec.pool else ho
    out_w = (wo // 2 * 2) if spec.pool else wo
    x0s = list(range(0, out_w, C))
    if max(rows_computed - 1, x0s[-1], ktiles - 1) >= enc.TILE_COORD_LIMIT:
        _fail(spec, f"tile coordinates reach {max(rows_computed - 1, x0s[-1], ktiles - 1)}, "
                    f"above the limit of {enc.TILE_COORD_LIMIT - 1}")
    # The core keeps coordinates in config.coord_bits bits: the last
    # column's x, the last channel and the last computed row must fit.
    coord_max = max(rows_computed - 1, x0s[-1] + C - 1, ktiles * R - 1)
    if coord_max >= 1 << config.coord_bits:
        _fail(spec, f"tile coordinates reach {coord_max}, above the configuration's limit of "
                    f"{(1 << config.coord_bits) - 1} (coord_bits)")
    return _Geometry(ktiles, rows_computed, out_w, x0s)


def _check_accumulator(spec, config):
    """The per-channel accumulator bound, checked against acc_width."""
    bound = accumulator_bound(spec) + np.abs(spec.bias)
    acc_max = (1 << (config.acc_width - 1)) - 1
    if bound.max() > acc_max:
        k = int(bound.argmax())
        _fail(spec, f"the worst-case accumulator of output channel {k} (|acc| + |bias| <= "
                    f"{int(bound[k])}) overflows the {config.acc_width}-bit accumulator "
                    f"(acc_width, limit {acc_max})")
    return bound


def _plan_rounds(spec, config, ktiles, input_passes):
    """The round groups of every channel tile, with the ROUND shift checked."""
    groups_q = _group_values(spec)
    pg, eg = spec.conv_groups
    if spec.global_pool:
        groups_q, pg, eg = groups_q[:, :1, :1], pg[:, :1, :1], eg[:, :1, :1]
    round_groups = [_plan_ktile(spec, config, ktile, groups_q, pg, eg) for ktile in range(ktiles)]
    if spec.global_pool:
        round_groups = [_repeat_over_positions(groups, spec.kernel) for groups in round_groups]
    max_shift = max(g.shift for groups in round_groups for g in groups) + input_passes[0][1]
    if max_shift > enc.ROUND_SHIFT_MAX:
        _fail(spec, f"a round needs shift {max_shift}, above the 4-bit ROUND shift limit "
                    f"{enc.ROUND_SHIFT_MAX}")
    return round_groups


def _repeat_over_positions(groups, kernel):
    """A globally pooled layer's round groups (planned at position (0, 0)),
    each run at every kernel position: copies whose chunks name the position
    and that share the original's stored planes."""
    kh, kw = kernel
    repeated = []
    for group in groups:
        for ky in range(kh):
            for kx in range(kw):
                if (ky, kx) == (0, 0):
                    repeated.append(group)
                    continue
                chunks = [dataclasses.replace(chunk, ky=ky, kx=kx) for chunk in group.chunks]
                repeated.append(RoundGroup(group.shift, chunks, shares=group))
    return repeated


def _store_weight_side(spec, config, placement, round_groups, images):
    """Chunk, wptr and weight memory images in consumption order; sets each
    round group's `wptr` and `chunk_start`. Returns (chunk end, wptr end,
    per-bank weight fill)."""
    R = config.rows
    chunk_address, wptr_entry = placement.chunk_base, placement.wptr_base
    fill = [placement.weight_base] * R
    # A round's descriptor list is stored once and shared by every channel
    # tile with the same list (all of them, in a uniform-precision layer).
    stored_lists = {}
    for groups in round_groups:
        for group in groups:
            descriptors = tuple(chunk.descriptor() for chunk in group.chunks)
            if group.shares is not None:
                group.wptr = group.shares.wptr
            else:
                group.wptr = wptr_entry
                if wptr_entry < min(config.wptr_depth, enc.ROUND_WPTR_LIMIT):
                    images[Memory.WPTR][0][wptr_entry] = enc.encode_wptr(
                        [f % config.weight_depth for f in fill], config.weight_addr_bits)
                wptr_entry += 1
            if descriptors in stored_lists:
                group.chunk_start = stored_lists[descriptors]
            else:
                group.chunk_start = stored_lists[descriptors] = chunk_address
                for descriptor in descriptors:
                    if chunk_address < config.chunk_depth:
                        images[Memory.CHUNKS][0][chunk_address] = descriptor
                    chunk_address += 1
            if group.shares is not None:
                continue
            for chunk in group.chunks:
                for r, planes in enumerate(chunk.planes):
                    for plane in planes:
                        if fill[r] < config.weight_depth:
                            images[Memory.WEIGHTS][r][fill[r]] = plane
                        fill[r] += 1
    chunk_limit = min(config.chunk_depth, enc.CHUNK_ADDRESS_LIMIT)
    if chunk_address > chunk_limit:
        _fail(spec, f"needs {chunk_address - placement.chunk_base} chunk descriptors from "
                    f"{placement.chunk_base}, the chunk memory holds {chunk_limit} (chunk_depth)")
    wptr_limit = min(config.wptr_depth, enc.ROUND_WPTR_LIMIT)
    if wptr_entry > wptr_limit:
        _fail(spec, f"needs {wptr_entry - placement.wptr_base} weight-pointer entries from "
                    f"{placement.wptr_base}, the wptr memory holds {wptr_limit} (wptr_depth)")
    if max(fill) > config.weight_depth:
        r = int(np.argmax(fill))
        _fail(spec, f"needs {fill[r] - placement.weight_base} weight words in bank {r} from "
                    f"{placement.weight_base}, the weight memory holds {config.weight_depth} "
                    f"per bank (weight_depth)")
    return chunk_address, wptr_entry, fill


def _store_params(spec, config, placement, images):
    cout = spec.out_channels
    if placement.param_base + cout > config.param_depth:
        _fail(spec, f"needs {cout} parameter entries from {placement.param_base}, the parameter "
                    f"memory holds {config.param_depth} (param_depth)")
    multipliers = spec.multiplier if not spec.raw else np.zeros(cout, dtype=np.int64)
    residual = spec.residual_multiplier if spec.residual else np.zeros(cout, dtype=np.int64)
    for k in range(cout):
        images[Memory.PARAMS][0][placement.param_base + k] = enc.encode_param(
            spec.bias[k], multipliers[k], residual[k])


@dataclasses.dataclass(frozen=True)
class SlotBits:
    """Bits per stored value of a layer's maps (hw/isa.py, `slot_bits`):
    the input map(s), the output map (None: a raw layer) and the shortcut
    map (None: no shortcut). An 8-bit input is two maps of 4-bit nibbles."""
    input: int
    output: int | None
    shortcut: int | None

    @classmethod
    def of(cls, spec, config):
        packed = config.packed_activations
        return cls(ACT_SLOT_BITS if spec.act_bits_in == 8 else slot_bits(packed, spec.act_bits_in),
                   None if spec.raw else slot_bits(packed, spec.act_bits_out),
                   slot_bits(packed, spec.shortcut_bits) if spec.residual else None)


@dataclasses.dataclass(frozen=True)
class _Maps:
    """Where the layer's activation maps lie (words per bank)."""
    in_words: int
    in_base2: int | None
    out_words: int
    out_base: int
    sc_base: int | None       # a residual layer's shortcut map


def _place_maps(spec, config, placement, input_passes):
    """The activation and result memory regions, checked for overlap and size."""
    C = config.cols
    cin, height, width = spec.input_shape
    ho, wo = spec.conv_output_hw
    slots = SlotBits.of(spec, config)
    in_words = enc.map_words_per_bank(height, width, cin, C, slots.input)
    in_base2 = placement.in_base2
    if spec.act_bits_in == 8 and in_base2 is None:
        in_base2 = placement.in_base + in_words
    input_end = max(placement.in_base + in_words,
                    in_base2 + in_words if spec.act_bits_in == 8 else 0)
    _, out_h, out_wm = spec.output_shape
    out_words = 0 if spec.raw else enc.map_words_per_bank(out_h, out_wm, spec.out_channels, C,
                                                          slots.output)
    out_base = placement.out_base if placement.out_base is not None else input_end
    act_end = max(input_end, out_base + out_words)
    sc_base, sc_words = None, 0
    if spec.residual:
        # The shortcut has the conv output's shape (no pooling).
        sc_words = enc.map_words_per_bank(out_h, out_wm, spec.out_channels, C, slots.shortcut)
        sc_base = placement.sc_base if placement.sc_base is not None else act_end
        act_end = max(act_end, sc_base + sc_words)
        if sc_base < out_base + out_words and out_base < sc_base + sc_words:
            _fail(spec, f"the shortcut map [{sc_base}, {sc_base + sc_words}) overlaps the output "
                        f"map [{out_base}, {out_base + out_words}) in the activation memory")
    if spec.act_bits_in == 8 and abs(in_base2 - placement.in_base) < in_words:
        _fail(spec, f"the two input nibble maps at {placement.in_base} and {in_base2} overlap "
                    f"({in_words} words each) in the activation memory")
    inputs = [(placement.in_base, "input")] + ([(in_base2, "second input")]
                                              if spec.act_bits_in == 8 else [])
    for base, what in inputs:
        if out_words and base < out_base + out_words and out_base < base + in_words:
            _fail(spec, f"the output map [{out_base}, {out_base + out_words}) overlaps the {what} "
                        f"map [{base}, {base + in_words}) in the activation memory")
    if act_end > config.act_depth:
        _fail(spec, f"needs activation words up to {act_end} per bank (input "
                    f"{in_words * len(input_passes)}, output {out_words}"
                    + (f", shortcut {sc_words}" if spec.residual else "")
                    + f"), the activation memory holds {config.act_depth} per bank (act_depth)")
    if spec.raw and placement.res_base + spec.out_channels * ho * wo > config.result_depth:
        _fail(spec, f"needs {spec.out_channels * ho * wo} result words from {placement.res_base}, "
                    f"the result memory holds {config.result_depth} (result_depth)")
    return _Maps(in_words, in_base2, out_words, out_base, sc_base)


def _registers(spec, config, placement, geometry, maps):
    """The layer registers the program SETs (docs/isa.md)."""
    C = config.cols
    cin, height, width = spec.input_shape
    _, _, out_wm = spec.output_shape
    slots = SlotBits.of(spec, config)
    return {
        "IN_BASE": placement.in_base, "IN_BASE2": maps.in_base2 or 0, "IN_H": height,
        "IN_W": width, "IN_WORDS": enc.pixel_words(cin, slots.input), "IN_BITS": slots.input,
        "PAD": spec.padding, "OUT_BASE": maps.out_base, "OUT_W": geometry.out_w,
        "COUT": spec.out_channels, "OUT_WB": -(-out_wm // C),
        "OUT_WORDS": 0 if spec.raw else enc.pixel_words(spec.out_channels, slots.output),
        "POOL": int(spec.pool), "ACT_BITS": 0 if spec.raw else spec.act_bits_out,
        "REQ_SHIFT": 0 if spec.raw else spec.requant_shift, "RAW": int(spec.raw),
        "PARAM_BASE": placement.param_base, "RES_BASE": placement.res_base,
        "STRIDE2": int(spec.stride == 2),
        # (a pass-through layer's output is split as it comes: input_split)
        "OUT_SPLIT": enc.even_start(out_wm) if spec.split_output and not spec.input_split else 0,
        "SC_BASE": maps.sc_base or 0, "SC_ENABLE": int(spec.residual),
        "SC_SHIFT": spec.residual_shift if spec.residual else 0,
        "SC_SIGNED": int(spec.residual and spec.shortcut_signed), "SC_BITS": slots.shortcut or 0,
        "SC_WORDS": enc.pixel_words(spec.out_channels, slots.shortcut) if spec.residual else 0,
        "OUT_SIGNED": int(spec.act_signed),
    }


def _tiles(spec, geometry):
    """(y, x0, ktile) in execution order (module docstring, "Tiles")."""
    ho, _ = spec.conv_output_hw
    tiles = []
    for ktile in range(geometry.ktiles):
        if spec.pool:
            for y in range(0, geometry.rows_computed, 2):
                for x0 in geometry.x0s:
                    tiles += [(y, x0, ktile), (y + 1, x0, ktile)]
        else:
            tiles += [(y, x0, ktile) for y in range(ho) for x0 in geometry.x0s]
    return tiles


def _program(spec, config, registers, tiles, round_groups, input_passes):
    """SETs, then per tile a TILE and its ROUNDs, then HALT."""
    rounds_per_ktile = [len(groups) * len(input_passes) for groups in round_groups]
    program_length = (len(Register) + 1
                      + sum(1 + rounds_per_ktile[ktile] for _, _, ktile in tiles))
    if program_length > config.program_depth:
        _fail(spec, f"needs {program_length} instructions, the program memory holds "
                    f"{config.program_depth} (program_depth)")
    program = [enc.encode_set(name, value) for name, value in registers.items()]
    for y, x0, ktile in tiles:
        program.append(enc.encode_tile(y, x0, ktile))
        rounds = [(group, input2, group.shift + in_shift)
                  for input2, in_shift in input_passes for group in round_groups[ktile]]
        for index, (group, input2, shift) in enumerate(rounds):
            program.append(enc.encode_round(group.chunk_start, len(group.chunks), group.wptr,
                                            shift, input2, first=index == 0,
                                            last=index == len(rounds) - 1))
    program.append(enc.encode_halt())
    return program


def _manifest(compiled, bound, in_words, out_words, fill, chunk_end, wptr_end, input_passes):
    from sw.compile.golden import execute

    spec, config, placement = compiled.spec, compiled.config, compiled.placement
    chunks = [chunk for groups in compiled.round_groups for group in groups
              for chunk in group.chunks]
    pg, eg = spec.conv_groups
    if spec.global_pool:       # the stored groups, not their repetitions
        pg, eg = pg[:, :1, :1], eg[:, :1, :1]
    histogram = Counter(f"p{int(p)}e{int(e)}" for p, e in zip(pg.reshape(-1), eg.reshape(-1)))
    regions = {
        "program": {"memory": Memory.PROGRAM, "base": 0, "entries": len(compiled.program)},
        "chunks": {"memory": Memory.CHUNKS, "base": placement.chunk_base,
                   "entries": chunk_end - placement.chunk_base},
        "wptr": {"memory": Memory.WPTR, "base": placement.wptr_base,
                 "entries": wptr_end - placement.wptr_base},
        "params": {"memory": Memory.PARAMS, "base": placement.param_base,
                   "entries": spec.out_channels},
        "weights": {"memory": Memory.WEIGHTS, "base": placement.weight_base,
                    "entries_per_bank": [f - placement.weight_base for f in fill]},
        "input": {"memory": Memory.ACTIVATIONS, "base": placement.in_base,
                  "words_per_bank": in_words},
    }
    if spec.act_bits_in == 8:
        regions["input2"] = {"memory": Memory.ACTIVATIONS, "base": placement.in_base2,
                             "words_per_bank": in_words}
    if spec.residual:
        regions["shortcut"] = {"memory": Memory.ACTIVATIONS, "base": placement.sc_base,
                               "words_per_bank": out_words}
    if spec.raw:
        regions["results"] = {"memory": Memory.RESULTS, "base": placement.res_base,
                              "entries": int(np.prod(spec.output_shape))}
    else:
        regions["output"] = {"memory": Memory.ACTIVATIONS, "base": placement.out_base,
                             "words_per_bank": out_words}
    rounds = sum(len(compiled.round_groups[ktile]) * len(input_passes)
                 for _, _, ktile in compiled.tiles)
    manifest = {
        "layer": spec.name,
        "config": config.name,
        "kind": spec.kind,
        "input_shape": list(spec.input_shape),
        "output_shape": list(spec.output_shape),
        "conv_output_shape": [spec.out_channels, *spec.conv_output_hw],
        "kernel": list(spec.kernel),
        "padding": spec.padding,
        "stride": spec.stride,
        "pool": spec.pool,
        "global_pool": spec.global_pool,
        "split_output": spec.split_output,
        "input_split": spec.input_split,
        "raw": spec.raw,
        "act_bits_in": spec.act_bits_in,
        "act_bits_out": spec.act_bits_out,
        "act_signed": spec.act_signed,
        "residual": ({"shift": spec.residual_shift, "shortcut_bits": spec.shortcut_bits,
                      "shortcut_signed": spec.shortcut_signed} if spec.residual else None),
        "ktiles": len(compiled.round_groups),
        "tiles": len(compiled.tiles),
        "rounds": rounds,
        "rounds_per_tile": [len(groups) * len(input_passes) for groups in compiled.round_groups],
        "chunks": len(chunks),
        "chunks_executed": sum(len(group.chunks) * len(input_passes)
                               for _, _, ktile in compiled.tiles
                               for group in compiled.round_groups[ktile]),
        "modes": {mode.name: sum(chunk.mode is mode for chunk in chunks) for mode in PeMode},
        "round_shifts": sorted({group.shift for groups in compiled.round_groups
                                for group in groups}),
        "precision_histogram": dict(sorted(histogram.items())),
        "accumulator_bound": int(bound.max()),
        "registers": dict(compiled.registers),
        "regions": regions,
    }
    manifest["expected_counters"] = execute(config, compiled.images, compute=False).counters
    return manifest
