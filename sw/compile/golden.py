"""The golden model: executes a program on memory images as docs/isa.md says
the core does, and predicts every counter of `hw/counters.COUNTERS`.

It knows nothing of the layer that was compiled: it fetches instructions,
sets registers, reads chunk descriptors, weight pointers, weight bit-planes
and activation words through the documented layouts, computes the PE lanes
of each mode, accumulates per PE, drains into the double-buffered OAB with
the round's shift, and runs the PPU (bias, `common.fixedpoint.requantize_sum`
with the tile's residual shortcut codes where SC_ENABLE is set,
pooling over row pairs, writes to the activation or result memory). Its
output is checked against the numpy reference (`sw/compile/reference.py`),
and the RTL's memories and counters are checked against it.

Arithmetic is vectorised per ROUND (all chunks of the round at once); the
sum of a chunk's steps does not depend on how channels are spread over
lanes, so the steps appear only in the counters and the timing. PE and OAB
accumulators wrap to `acc_width` bits like the hardware (the compiler proves
they never need to).

Count conventions (docs/isa.md, "Counters", made precise here):
* `program_reads`: one per instruction fetched, HALT and SET included.
* `chunk_reads`: one per chunk run; `wptr_reads`: one per ROUND.
* `weight_reads`: `p` plane words per row per chunk (0 for pcode 0).
* `act_reads`: per column per chunk, s words (the input map's slot bits,
  hw/isa.py `slot_bits`) when the pixel is inside the map, 0 when it is
  padding (also for columns beyond OUT_W: they compute).
* `macs_<mode>`: `R * C * lanes` per step issued.
* `oab_writes`: R per ROUND (one row entry per drain cycle); `oab_reads`: R
  per ROUND that is not `first` (read-modify-write) plus R per PPU job.
* `param_reads`: per PPU job, one per row with `k < COUT` (rows beyond COUT
  are neither read nor written), also at the even row of a pooled pair.
* `act_writes`: one per slot written (pooled layers write at the odd row
  only); `result_writes`: one per result word.
* `shortcut_reads`: per tile of a layer with SC_ENABLE, J words (those
  holding channels ktile*R .. ktile*R + R - 1) in each of the C banks,
  whatever COUT and OUT_W (docs/isa.md, "Residual shortcut").
"""

import dataclasses

import numpy as np

from common import fixedpoint
from hw import timing
from hw.counters import COUNTERS
from hw.isa import ACT_SLOT_BITS, GROUP_SIZE, MAX_PLANES, PCODE_BITS, Memory, Opcode, Register
from sw.compile import encoding as enc
from sw.compile.images import read_entry

_BITS_OF_PCODE = np.array(PCODE_BITS, dtype=np.int64)
_DENSE = (Memory.WEIGHTS, Memory.ACTIVATIONS, Memory.RESULTS)  # dense numpy banks


class Timeline:
    """The cycle rules of docs/isa.md, "Timing", and nothing else.

    `now` is the controller's next free cycle (cycle 0 is the first FETCH).

    * every instruction: FETCH_CYCLES (FETCH, DECODE);
    * SET is a barrier: it writes its register only once nothing is in the
      round engine, the OAB or the PPU, so a layer's registers never change
      under the previous layer's last tile and its first ROUND never reads
      activations the PPU has not written yet;
    * ROUND: it starts (the cycle after its DECODE, or later) once the round
      engine is free, `round_start_gap(R)` cycles after the previous round's
      `done` (0: in the `done` cycle), and, if `first`, once the PPU job of tile n - 2 (the other
      user of this tile's OAB buffer) has ended (the wait for that job
      counts as stall cycles); then PREFETCH_CYCLES and one cycle per step
      (busy); `done` the cycle after the last step; after a residual
      tile's `last` ROUND, the next starts `shortcut_start_gap(R)` cycles
      after its done at the earliest (the shortcut reads come first). The
      controller fetches the next instruction the cycle after the start;
    * the round's sums reach the OAB R + C - 1 + PIPE_CYCLES +
      HANDOFF_CYCLES cycles after its last step and drain in R cycles (the
      next rounds run meanwhile); a `last` ROUND hands its tile to the PPU
      in the cycle after its drain; the PPU accepts it then, or in the
      cycle of the previous job's last element, counts R * C elements in
      the following cycles, and is done with it PPU_CYCLES after the last
      element (hw/timing.py);
    * HALT: HALT_CYCLES after its fetch, or until nothing is in the engine,
      the OAB or the PPU; `cycles` counts every cycle from the first FETCH
      to the one where done rises.
    """

    def __init__(self, rows, cols, packed):
        self.rows, self.cols, self.packed = rows, cols, packed
        self.now = 0
        self.busy = 0
        self.stall = 0
        self.done = None           # cycle of the latest round's `done`
        self.after_shortcut = False  # the latest round read a residual tile's shortcut
        self.oab_idle = 0          # first cycle with no round in the OAB
        self.last_element = None   # cycle of the latest PPU job's last element
        self.ppu_idle = 0          # first cycle the PPU is idle again
        self.ppu_end = {}          # tile number -> first cycle after its PPU job

    def fetch(self):
        self.now += timing.FETCH_CYCLES

    def quiet(self):
        """The first cycle from which nothing is in the engine, OAB or PPU."""
        engine_free = 0 if self.done is None else self.done + 1
        return max(engine_free, self.oab_idle, self.ppu_idle)

    def set(self):
        decode = self.now - 1
        quiet = self.quiet()
        if quiet > decode:
            self.now = quiet + 1

    def round(self, tile_number, first, last, steps, reads_shortcut=False):
        rows, cols = self.rows, self.cols
        start = self.now
        if first and tile_number - 2 in self.ppu_end:
            self.stall += max(0, self.ppu_end[tile_number - 2] - self.now)
            start = max(start, self.ppu_end[tile_number - 2])
        if self.done is not None:
            gap = timing.round_start_gap(rows)
            if self.after_shortcut:
                gap = max(gap, timing.shortcut_start_gap(rows, self.packed))
            start = max(start, self.done + gap)
        self.after_shortcut = reads_shortcut
        last_step = start + timing.PREFETCH_CYCLES + steps - 1
        self.busy += steps
        self.done = last_step + 1
        # The first cycle after the drain's R rows.
        drain_end = (last_step + rows + cols + timing.PIPE_CYCLES + timing.HANDOFF_CYCLES + rows)
        self.oab_idle = drain_end
        self.now = start + 1
        if last:
            accept = drain_end if self.last_element is None else max(drain_end, self.last_element)
            self.last_element = accept + rows * cols
            self.ppu_idle = self.ppu_end[tile_number] = self.last_element + timing.PPU_CYCLES

    def halt(self):
        self.now = max(self.now + timing.HALT_CYCLES - 1, self.quiet()) + 1


@dataclasses.dataclass
class Execution:
    memories: dict          # final images: sparse dicts (program .. params), numpy banks (_DENSE)
    counters: dict          # every name of hw.counters.COUNTERS
    error: bool = False     # stopped on an unknown opcode
    error_pc: int | None = None


@dataclasses.dataclass
class GoldenRun:
    output: np.ndarray      # (Cout, Ho, Wo) decoded from the final memories
    counters: dict
    memories: dict
    execution: Execution


def _wrap(value, bits):
    half = 1 << (bits - 1)
    return ((value + half) & ((1 << bits) - 1)) - half


def _load(config, images):
    shapes = config.memory_shapes()
    memories = {}
    for memory, (_, banks, _, depth) in shapes.items():
        given = images.get(memory, [])
        if memory in _DENSE:
            dense = np.zeros((banks, depth), dtype=np.int64)
            for index, bank in enumerate(given):
                if isinstance(bank, dict):
                    if bank:
                        dense[index, list(bank.keys())] = list(bank.values())
                else:
                    dense[index, :len(bank)] = bank
            memories[memory] = dense
        else:
            memories[memory] = [dict(bank) if isinstance(bank, dict) else
                                dict(enumerate(int(v) for v in bank)) for bank in given]
            memories[memory] += [dict() for _ in range(banks - len(memories[memory]))]
    return memories


class _Core:
    def __init__(self, config, images, compute, timeline=None):
        self.config = config
        self.R, self.C = config.rows, config.cols
        self.compute = compute
        self.mem = _load(config, images)
        self.regs = {register.name: 0 for register in Register}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.timeline = (timeline or Timeline)(self.R, self.C, config.packed_activations)
        self.oab = np.zeros((2, self.R, self.C), dtype=np.int64)
        self.tile = (0, 0, 0)
        self.tile_number = -1
        self.pool_row = {}          # (x0, ktile) -> (y, horizontal maxima)
        self.chunk_cache = {}

    # -- instruction loop --

    def run(self, max_instructions):
        program = self.mem[Memory.PROGRAM][0]
        depth = self.config.program_depth
        pc = 0
        for _ in range(max_instructions):
            opcode, fields = enc.decode_instruction(program.get(pc, 0))
            self.counters["program_reads"] += 1
            self.timeline.fetch()
            if opcode == Opcode.HALT:
                self.timeline.halt()
                return False, None
            if opcode == Opcode.SET:
                self.timeline.set()
                if fields["register"] < len(Register):
                    self.regs[Register(fields["register"]).name] = fields["value"]
            elif opcode == Opcode.TILE:
                self.tile = (fields["y"], fields["x0"], fields["ktile"])
            elif opcode == Opcode.ROUND:
                self.round(**fields)
            else:
                return True, pc
            pc = (pc + 1) % depth
        raise RuntimeError(f"no HALT within {max_instructions} instructions")

    # -- ROUND --

    def chunk(self, address):
        word = read_entry(self.mem[Memory.CHUNKS][0], address % self.config.chunk_depth)
        key = (address, word)
        if key not in self.chunk_cache:
            self.chunk_cache[key] = enc.decode_chunk(word, self.R)
        return self.chunk_cache[key]

    def round(self, chunk_start, chunk_count, wptr, shift, input2, first, last):
        if first:
            self.tile_number += 1
        config, counters, R, C = self.config, self.counters, self.R, self.C
        chunks = [self.chunk(chunk_start + i) for i in range(chunk_count)]
        pointers = enc.decode_wptr(read_entry(self.mem[Memory.WPTR][0], wptr % config.wptr_depth), R,
                                   config.weight_addr_bits)
        counters["wptr_reads"] += 1
        counters["chunk_reads"] += chunk_count
        ky = np.array([c[0] for c in chunks], dtype=np.int64)
        kx = np.array([c[1] for c in chunks], dtype=np.int64)
        block = np.array([c[2] for c in chunks], dtype=np.int64)
        modes = [c[3] for c in chunks]
        pcodes = np.array([c[4] for c in chunks], dtype=np.int64).reshape(chunk_count, R)
        folds = np.array([c[5] for c in chunks], dtype=np.int64).reshape(chunk_count, R)
        bits = _BITS_OF_PCODE[pcodes]                                       # (N, R)
        steps = 0
        for mode in modes:
            mode_steps = GROUP_SIZE // mode.lanes
            steps += mode_steps
            counters[f"macs_{mode.name.lower()}"] += mode_steps * R * C * mode.lanes
        counters["weight_reads"] += int(bits.sum())

        activations, inside = self.read_activations(ky, kx, block, modes, input2)
        counters["act_reads"] += self.slot_bits("IN_BITS") * int(inside.sum())
        buffer = self.tile_number % 2
        if self.compute:
            weights = self.read_weights(pointers, bits, folds, modes)      # (N, R, G)
            acc = _wrap(np.einsum("nrl,ncl->rc", weights, activations), config.acc_width)
            shifted = acc << shift
            self.oab[buffer] = _wrap(shifted if first else self.oab[buffer] + shifted,
                                     config.acc_width)
        counters["oab_writes"] += R
        if not first:
            counters["oab_reads"] += R
        reads_shortcut = bool(last and self.config.residual and self.regs["SC_ENABLE"] & 1)
        self.timeline.round(self.tile_number, first, last, steps, reads_shortcut)
        if last:
            self.ppu(self.oab[buffer])

    def read_activations(self, ky, kx, block, modes, input2):
        """(N, C, G) activation lane values and the (N, C) inside-the-map mask."""
        C, regs = self.C, self.regs
        y, x0, _ = self.tile
        height, width, pad = regs["IN_H"], regs["IN_W"], regs["PAD"]
        stride = 2 if regs["STRIDE2"] & 1 else 1
        yy = stride * y + ky - pad                                          # (N,)
        xx = stride * (x0 + np.arange(C)[None, :]) + kx[:, None] - pad     # (N, C)
        inside = ((yy >= 0) & (yy < height))[:, None] & (xx >= 0) & (xx < width)
        if not self.compute:
            return None, inside
        base = regs["IN_BASE2"] if input2 else regs["IN_BASE"]
        slot = self.slot_bits("IN_BITS")
        wb = -(-width // C)
        position = enc.column_position(xx, width, split=stride == 2)       # (N, C)
        address = (base + (yy[:, None] * wb + position // C) * regs["IN_WORDS"]
                   + block[:, None] * slot)                                 # (N, C)
        address = address[:, :, None] + np.arange(slot)                     # (N, C, s)
        bank = np.broadcast_to((position % C)[:, :, None], address.shape)
        words = np.where(inside[:, :, None],
                         self.mem[Memory.ACTIVATIONS][bank, address % self.config.act_depth], 0)
        words = np.concatenate([words, np.zeros_like(words[..., :1])], axis=-1)  # a straddle's high word
        word, shift = enc.slot_start(np.arange(GROUP_SIZE), slot)
        slots = enc.slot_value(words[..., word], words[..., word + 1], shift, slot)  # (N, C, G)
        mask = np.array([(1 << mode.activation_bits) - 1 for mode in modes], dtype=np.int64)
        return slots & mask[:, None, None], inside

    def slot_bits(self, register):
        """The slot width of the map a register names (hw/isa.py,
        `slot_bits`): the register's with packed_activations, else 4."""
        return self.regs[register] if self.config.packed_activations else ACT_SLOT_BITS

    def read_weights(self, pointers, bits, folds, modes):
        """(N, R, G) weight lane values: each row reads its p planes at its
        pointer, which then advances by p; the value is q << fold wrapped to
        the mode's weight width."""
        R, depth = self.R, self.config.weight_depth
        offsets = np.cumsum(bits, axis=0) - bits                             # exclusive
        address = np.array(pointers, dtype=np.int64)[None, :] + offsets      # (N, R)
        plane_index = np.arange(MAX_PLANES)
        planes = self.mem[Memory.WEIGHTS][np.arange(R)[None, :, None],
                             (address[:, :, None] + plane_index) % depth]    # (N, R, 4)
        planes = np.where(plane_index < bits[:, :, None], planes, 0)
        lane = np.arange(GROUP_SIZE)
        value = (((planes[..., None] >> lane) & 1) << plane_index[:, None]).sum(axis=2)
        sign = (value >> np.maximum(bits - 1, 0)[:, :, None]) & 1
        value = np.where(bits[:, :, None] > 0, value - (sign << bits[:, :, None]), 0)
        value = value << folds[:, :, None]
        width = np.array([mode.weight_bits for mode in modes], dtype=np.int64)[:, None, None]
        half = 1 << (width - 1)
        return ((value + half) & ((1 << width) - 1)) - half

    # -- PPU --

    def ppu(self, values):
        R, C, regs, counters = self.R, self.C, self.regs, self.counters
        y, x0, ktile = self.tile
        k = ktile * R + np.arange(R)
        rows_ok = k < regs["COUT"]
        x = x0 + np.arange(C)
        cols_ok = x < regs["OUT_W"]
        counters["oab_reads"] += R
        counters["param_reads"] += int(rows_ok.sum())
        params = [enc.decode_param(read_entry(self.mem[Memory.PARAMS][0],
                                              (regs["PARAM_BASE"] + kk) % self.config.param_depth))
                  if ok else (0, 0, 0) for kk, ok in zip(k.tolist(), rows_ok.tolist())]
        bias = np.array([p[0] for p in params], dtype=np.int64)[:, None]
        multiplier = np.array([p[1] for p in params], dtype=np.int64)[:, None]
        residual_multiplier = np.array([p[2] for p in params], dtype=np.int64)[:, None]
        shortcut = self.read_shortcut() if regs["SC_ENABLE"] else None
        if regs["RAW"]:
            ok = rows_ok[:, None] & cols_ok[None, :]
            counters["result_writes"] += int(ok.sum())
            if self.compute:
                address = regs["RES_BASE"] + (y * regs["OUT_W"] + x[None, :]) * regs["COUT"] \
                    + k[:, None]
                self.mem[Memory.RESULTS][0, address[ok] % self.config.result_depth] = \
                    enc.encode_result((values + bias)[ok])
            return
        if shortcut is None:
            codes = fixedpoint.requantize_sum(values, bias, multiplier, regs["REQ_SHIFT"],
                                              regs["ACT_BITS"], signed=bool(regs["OUT_SIGNED"]))
        else:
            codes = fixedpoint.requantize_sum(values, bias, multiplier, regs["REQ_SHIFT"],
                                              regs["ACT_BITS"], residual=shortcut,
                                              residual_multiplier=residual_multiplier,
                                              residual_shift=regs["SC_SHIFT"],
                                              signed=bool(regs["OUT_SIGNED"]))
        if not regs["POOL"]:
            ok = rows_ok[:, None] & cols_ok[None, :]
            self.write_slots(codes, np.full(x.shape, y), x, k, ok)
            return
        pairs = np.arange(C // 2)
        horizontal = np.maximum(codes[:, 0::2], codes[:, 1::2])              # (R, C/2)
        if y % 2 == 0:
            self.pool_row[(x0, ktile)] = (y, horizontal)
            return
        previous = self.pool_row.pop((x0, ktile), None)
        if previous is None or previous[0] != y - 1:
            raise RuntimeError(f"pooled tile row {y} (x0={x0}, ktile={ktile}) does not follow "
                               f"its even row")
        pooled = np.maximum(previous[1], horizontal)
        ok = rows_ok[:, None] & (x0 + 2 * pairs + 1 < regs["OUT_W"])[None, :]
        self.write_slots(pooled, np.full(pairs.shape, y // 2), x0 // 2 + pairs, k, ok)

    def read_shortcut(self):
        """The tile's (R, C) shortcut codes: bank c reads the J words of
        pixel (y, x0 + c) that hold channels ktile*R .. ktile*R + R - 1
        (docs/isa.md, "Residual shortcut"); signed with SC_SIGNED."""
        R, C, regs = self.R, self.C, self.regs
        y, x0, ktile = self.tile
        slot = self.slot_bits("SC_BITS")
        first, words = timing.shortcut_words(R, ktile, slot)
        self.counters["shortcut_reads"] += C * words
        if not self.compute:
            return None
        address = (regs["SC_BASE"] + (y * regs["OUT_WB"] + x0 // C) * regs["SC_WORDS"] + first
                   + np.arange(words + 1)) % self.config.act_depth                # (J + 1,)
        data = self.mem[Memory.ACTIVATIONS][:, address]                              # (C, J + 1)
        data[:, words] = 0                          # only J words are read
        word, shift = enc.slot_start(ktile * R + np.arange(R), slot)                 # (R,)
        word -= first
        codes = enc.slot_value(data[:, word], data[:, word + 1], shift, slot).T      # (R, C)
        if regs["SC_SIGNED"]:
            codes = codes - ((codes >> (slot - 1)) << slot)
        return codes

    def write_slots(self, codes, ys, xs, k, ok):
        """Write codes[r, j] to pixel (ys[j], xs[j]), channel k[r] where ok:
        its slot's bits, in one or two words (hw/isa.py)."""
        self.counters["act_writes"] += int(ok.sum())
        if not self.compute:
            return
        regs, C, depth = self.regs, self.C, self.config.act_depth
        slot = self.slot_bits("ACT_BITS")
        even_start = regs["OUT_SPLIT"]
        position = np.where(even_start, xs // 2 + (1 - xs % 2) * even_start, xs)
        bank = np.broadcast_to(position % C, ok.shape)
        word, shift = enc.slot_start(k, slot)                                        # (R,)
        pixel = regs["OUT_BASE"] + (ys * regs["OUT_WB"] + position // C) * regs["OUT_WORDS"]
        word = (pixel[None, :] + word[:, None]) % depth                              # (R, J)
        shift = np.broadcast_to(shift[:, None], ok.shape)
        mask = (1 << slot) - 1
        bits = ((codes & mask) << shift, mask << shift)
        activations = self.mem[Memory.ACTIVATIONS]
        # One channel position of the G in a chunk at a time: its writes
        # touch distinct words (a slot never leaves its chunk's words).
        for position_in_chunk in range(GROUP_SIZE):
            sel = ok & np.broadcast_to((k % GROUP_SIZE == position_in_chunk)[:, None], ok.shape)
            if not sel.any():
                continue
            b, w = bank[sel], word[sel]
            value, enable = bits[0][sel], bits[1][sel]
            for half, target in ((0, w), (1, (w + 1) % depth)):
                part, part_enable = value >> (16 * half) & 0xFFFF, enable >> (16 * half) & 0xFFFF
                activations[b, target] = (activations[b, target] & ~part_enable) | part


def execute(config, images, *, compute=True, max_instructions=50_000_000, timeline=None):
    """Run the program in `images` from address 0 to HALT.

    `compute=False` skips the data path (weights, activations, PPU values)
    and only counts and times: the counters do not depend on the data.
    `timeline`: a `Timeline` subclass to time the run with instead, for
    models of a core that is not built (bench/round_overlap.py); the RTL
    matches only the default."""
    core = _Core(config, images, compute, timeline)
    error, error_pc = core.run(max_instructions)
    counters = core.counters
    counters["cycles"] = core.timeline.now
    counters["busy_cycles"] = core.timeline.busy
    counters["stall_cycles"] = core.timeline.stall
    return Execution(core.mem, dict(counters), error, error_pc)


def run_golden(compiled, x):
    """Load a CompiledLayer and input codes `x`, execute, decode the output."""
    execution = execute(compiled.config, compiled.memories(x))
    if execution.error:
        raise RuntimeError(f"golden model stopped on an unknown opcode at {execution.error_pc}")
    return GoldenRun(compiled.decode_output(execution.memories), execution.counters,
                     execution.memories, execution)

