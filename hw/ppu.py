"""Post-processing unit: output accumulators to activations (or results).

One value per cycle, in a fixed pipeline (docs/isa.md, "Dataflow"):

  S0  count (row r, column c) of the tile; at c == 0 read the OAB row entry
      and the channel's parameters
  S1  select accumulator c of the row
  S2  add the bias (and, in a residual layer, the shortcut code times its
      multiplier Mr)
  S3  multiply by the requantization multiplier (and shift the shortcut
      term left by Sr)
  S4  add the two, rounding right shift and clamp to [0, 2^a - 1] or the
      signed range (common/fixedpoint.py's requantize_sum)
  S5  2x2 max-pool (pairs of columns, then the row pair of two consecutive
      tiles through a line buffer) and write an activation slot; or, for
      a raw layer, write acc + bias to the result memory

Three components in a pipeline, each value's position (`element_layout`)
travelling with it: `TileReader` (S0, S1), `Requantizer` (S2 .. S4) and
`PoolWriter` (S5). The pipeline never stalls, so their streams are
`always_ready`.
"""

import functools

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from common.fixedpoint import SHIFT_MAX
from hw.isa import ACT_SLOT_BITS, ACT_SLOTS_PER_WORD, ACT_WORD_BITS, MULTIPLIER_BITS, PARAMETER, RESULT_WIDTH
from hw.shortcut import shortcut_read_signature
from hw.timing import PPU_PIPELINE

# The layer registers the PPU reads, as wide as it reads them.
PPU_REGISTERS = data.StructLayout({
    "out_base": 32, "out_w": 16, "cout": 16, "out_wb": 16, "out_words": 16, "pool": 1,
    "act_bits": 3, "req_shift": 6, "raw": 1, "param_base": 32, "res_base": 32,
    "out_split": 16,
    "sc_enable": 1, "sc_shift": 6, "sc_signed": 1, "out_signed": 1,
})
# The residual term (code * Mr) << Sr: a 5-bit signed code (4-bit slot,
# signed or zero-extended) times the 16-bit multiplier, shifted by up to
# SHIFT_MAX (docs/isa.md: SC_SHIFT 0 .. 47).
RESIDUAL_TERM_BITS = 5 + MULTIPLIER_BITS + SHIFT_MAX
BIAS = PARAMETER["bias"].shape


@functools.cache
def tile_layout(coord_bits):
    """A tile: output row y, first column x0, output-channel tile ktile (docs/isa.md, TILE)."""
    return data.StructLayout({"y": coord_bits, "x0": coord_bits, "ktile": coord_bits})


@functools.cache
def job_layout(coord_bits):
    """A finished tile for the PPU: the tile and the OAB buffer that holds it."""
    return data.StructLayout({**tile_layout(coord_bits).members, "buffer": 1})


@functools.cache
def element_layout(config):
    """Where one value of a tile goes: its row r (output channel k) and
    column c (pixel (y, x)), and whether it is the job's last."""
    return data.StructLayout({"r": range(max(config.rows, 2)), "c": range(config.cols),
                              "k": config.coord_bits, "x": config.coord_bits,
                              "y": config.coord_bits, "last": 1})


@functools.cache
def operands_layout(config):
    """An element with its accumulator, its channel's parameters and its
    shortcut code (S1 -> S2)."""
    return data.StructLayout({"at": element_layout(config), "acc": signed(config.acc_width),
                              "bias": BIAS, "multiplier": signed(MULTIPLIER_BITS),
                              "residual_multiplier": signed(MULTIPLIER_BITS),
                              "shortcut": ACT_SLOT_BITS})


@functools.cache
def code_layout(config):
    """An element with its activation code and acc + bias wrapped to 32 bits (S4 -> S5)."""
    return data.StructLayout({"at": element_layout(config), "value": ACT_SLOT_BITS,
                              "total": signed(RESULT_WIDTH)})


def oab_read_signature(config):
    """A read of one OAB entry: a row of the array's C accumulators, buffer b's row r at b * R + r."""
    return memory.ReadPort.Signature(addr_width=(2 * config.rows - 1).bit_length(),
                                     shape=config.cols * config.acc_width)


def params_read_signature(config):
    return memory.ReadPort.Signature(addr_width=(config.param_depth - 1).bit_length(),
                                     shape=config.param_width)


def activation_write_signature(config, bank_bits=None):
    """A write of one activation slot, from the memory's side (as
    amaranth.lib.memory's port signatures): with packed_activations, bits
    `en` of `data` go to the word at `addr` (low 16) and the next word
    (high 16), so that a 3-bit slot that straddles two words is one write;
    without, one word and an enable per 4-bit slot. The address has
    `bank_bits` more low bits than a bank's (default: the bank, x mod C,
    of the banks side by side)."""
    if bank_bits is None:
        bank_bits = (config.cols - 1).bit_length()
    words, granularity = (2, 1) if config.packed_activations else (1, ACT_SLOT_BITS)
    return wiring.Signature({"addr": In((config.act_depth - 1).bit_length() + bank_bits),
                             "data": In(words * ACT_WORD_BITS),
                             "en": In(words * ACT_WORD_BITS // granularity)})


def result_write_signature(config):
    return memory.WritePort.Signature(addr_width=(config.result_depth - 1).bit_length(),
                                      shape=RESULT_WIDTH)


class TileReader(wiring.Component):
    """S0 and S1: takes a job, counts its R x C elements (one per cycle, row
    by row), reads each row's OAB entry and channel parameters at its first
    column, and offers every element with its accumulator, bias and
    multipliers, and (config.residual) its shortcut code, looked up in the
    shortcut buffer in S0. A job is accepted in the cycle of the previous
    job's last element, so back-to-back jobs leave no gap."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "job": In(stream.Signature(job_layout(config.coord_bits))),
            "cout": In(16), "param_base": In(32),
            "oab": In(oab_read_signature(config)),
            "params": In(params_read_signature(config)),
            "element": Out(stream.Signature(operands_layout(config), always_ready=True)),
            "busy": Out(1),      # a job is counting or its last element is in S1
            **({"shortcut": Out(shortcut_read_signature(config))} if config.residual else {}),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols, acc = config.rows, config.cols, config.acc_width

        # ---- S0: the job and its element counter.
        running = Signal()
        job = Signal(job_layout(config.coord_bits))
        r = Signal(range(max(rows, 2)))     # 1 bit, not 0, for a 1-row array
        c = Signal(range(cols))
        last_element = running & (r == rows - 1) & (c == cols - 1)
        m.d.comb += self.job.ready.eq(~running | last_element)
        with m.If(running):
            m.d.sync += c.eq(c + 1)
            with m.If(c == cols - 1):
                m.d.sync += [c.eq(0), r.eq(r + 1)]
            with m.If(last_element):
                m.d.sync += running.eq(0)
        with m.If(self.job.valid & self.job.ready):
            m.d.sync += [running.eq(1), r.eq(0), c.eq(0), job.eq(self.job.payload)]

        k0 = Signal(config.coord_bits)
        m.d.comb += k0.eq(job.ktile * rows + r)
        first_of_row = running & (c == 0)
        m.d.comb += [
            self.oab.addr.eq(job.buffer * rows + r), self.oab.en.eq(first_of_row),
            self.params.addr.eq(self.param_base + k0),
            self.params.en.eq(first_of_row & (k0 < self.cout)),
        ]
        s0 = Signal(element_layout(config))
        m.d.comb += [s0.r.eq(r), s0.c.eq(c), s0.k.eq(k0), s0.x.eq(job.x0 + c), s0.y.eq(job.y),
                     s0.last.eq(last_element)]
        s1_valid = Signal(name="meta_s1_valid")
        s1 = Signal(element_layout(config), name="meta_s1")
        m.d.sync += [s1_valid.eq(running), s1.eq(s0)]
        # The shortcut code, looked up while `job` is this element's (in S1
        # the next job may already be latched).
        code1 = Signal(ACT_SLOT_BITS)
        if config.residual:
            m.d.comb += [self.shortcut.buffer.eq(job.buffer), self.shortcut.row.eq(r),
                         self.shortcut.col.eq(c), self.shortcut.first.eq((job.ktile * rows)[:4])]
            m.d.sync += code1.eq(self.shortcut.code)

        # ---- S1: the accumulator and parameters (fresh from the ports at c == 0).
        # Without config.residual the entry stops below residual_multiplier,
        # which then reads 0.
        params_bits = Signal(PARAMETER.size)
        m.d.comb += params_bits.eq(self.params.data)
        params = PARAMETER(params_bits)
        if config.ppu_hold_registers:
            fresh = Signal()
            m.d.sync += fresh.eq(first_of_row)
            row_hold = Signal(cols * acc)
            bias_hold = Signal(BIAS)
            mult_hold = Signal(signed(MULTIPLIER_BITS))
            rmult_hold = Signal(signed(MULTIPLIER_BITS))
            with m.If(fresh):
                m.d.sync += [row_hold.eq(self.oab.data), bias_hold.eq(params.bias),
                             mult_hold.eq(params.multiplier),
                             rmult_hold.eq(params.residual_multiplier)]
            row = Mux(fresh, self.oab.data, row_hold)
            bias = Mux(fresh, params.bias, bias_hold)
            mult = Mux(fresh, params.multiplier, mult_hold)
            rmult = Mux(fresh, params.residual_multiplier, rmult_hold)
        else:
            # The read ports hold their data until the next read (the PPU
            # is their only reader while the core runs): the row entry and
            # the channel's parameters are still there for c > 0.
            row, bias, mult = self.oab.data, params.bias, params.multiplier
            rmult = params.residual_multiplier
        m.d.comb += [
            self.element.valid.eq(s1_valid), self.element.p.at.eq(s1),
            self.element.p.acc.eq(Array(row[i * acc:(i + 1) * acc].as_signed() for i in range(cols))[s1.c]),
            self.element.p.bias.eq(bias), self.element.p.multiplier.eq(mult),
            self.element.p.residual_multiplier.eq(rmult if config.residual else 0),
            self.element.p.shortcut.eq(code1),
            self.busy.eq(running | s1_valid),
        ]
        return m


class Requantizer(wiring.Component):
    """S2 .. S4 (`LATENCY` cycles): acc + bias, times the multiplier, plus
    (with `sc_enable`) the residual term (code * Mr) << sc_shift, then the
    rounding right shift by `req_shift` and the clamp to [0, 2^act_bits - 1],
    or with `out_signed` to [-2^(act_bits-1), 2^(act_bits-1) - 1], written
    as the low 4 bits of its two's complement (common/fixedpoint.py's
    requantize_sum); `total` is acc + bias wrapped to 32 bits (a raw
    layer's result). The shortcut code is signed (bit 3 the sign) with
    `sc_signed`. Each element's position goes along. Without
    config.residual the residual and signed inputs are ignored."""

    LATENCY = 4

    def __init__(self, config):
        self._config = config
        super().__init__({
            "element": In(stream.Signature(operands_layout(config), always_ready=True)),
            "act_bits": In(3), "req_shift": In(6),
            "sc_enable": In(1), "sc_shift": In(6), "sc_signed": In(1), "out_signed": In(1),
            "code": Out(stream.Signature(code_layout(config), always_ready=True)),
            "busy": Out(1),     # an element in S2 .. S5
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        # The positions and valid bits of S2 .. S5 (S1's is the input).
        at = [Signal(element_layout(config), name=f"meta_s{i}") for i in range(2, 6)]
        valid = [Signal(name=f"meta_s{i}_valid") for i in range(2, 6)]
        m.d.sync += [at[0].eq(self.element.p.at), valid[0].eq(self.element.valid)]
        m.d.sync += [a.eq(b) for a, b in zip(at[1:], at)] + [a.eq(b) for a, b in zip(valid[1:], valid)]

        # ---- into S2: the element's operands.
        value1 = Signal(signed(config.acc_width))
        bias1 = Signal(BIAS)
        mult1 = Signal(signed(MULTIPLIER_BITS))
        m.d.sync += [value1.eq(self.element.p.acc), bias1.eq(self.element.p.bias),
                     mult1.eq(self.element.p.multiplier)]

        # ---- S2: bias.
        total = Signal(signed(33))
        mult2 = Signal(signed(MULTIPLIER_BITS))
        m.d.sync += [total.eq(value1 + bias1), mult2.eq(mult1)]

        # ---- S3: multiply.
        product = Signal(signed(33 + MULTIPLIER_BITS))
        total3 = Signal(signed(RESULT_WIDTH))
        m.d.sync += [product.eq(total * mult2), total3.eq(total)]

        if config.residual:
            # Beside S2 and S3: code * Mr, then << Sr (0 without a shortcut).
            rmult1 = Signal(signed(MULTIPLIER_BITS))
            code1 = Signal(ACT_SLOT_BITS)
            m.d.sync += [rmult1.eq(self.element.p.residual_multiplier),
                         code1.eq(self.element.p.shortcut)]
            code = Signal(signed(ACT_SLOT_BITS + 1))
            m.d.comb += code.eq(Mux(self.sc_signed, code1.as_signed(), code1))
            term2 = Signal(signed(ACT_SLOT_BITS + 1 + MULTIPLIER_BITS))
            m.d.sync += term2.eq(Mux(self.sc_enable, code * rmult1, 0))
            term3 = Signal(signed(RESIDUAL_TERM_BITS))
            m.d.sync += term3.eq(term2 << self.sc_shift)
            scaled = Signal(signed(RESIDUAL_TERM_BITS + 1))
            m.d.comb += scaled.eq(product + term3)
        else:
            scaled = product

        # ---- S4: rounding shift (round half up) and clamp.
        shift = self.req_shift
        if config.ppu_barrel_shift:
            rounding = Mux(shift == 0, 0, (1 << shift) >> 1)
            shifted = Signal(signed(len(scaled) + 1))
            m.d.comb += shifted.eq((scaled + rounding) >> shift)
            act4 = Signal(4)
            total4 = Signal(signed(RESULT_WIDTH))    # acc + bias, wrapped to 32 bits
            if config.residual:
                act_max = Signal(signed(9))     # ACT_BITS is 3 bits wide
                act_min = Signal(signed(9))
                m.d.comb += [
                    act_max.eq(Mux(self.out_signed, ((1 << self.act_bits) >> 1) - 1,
                                   (1 << self.act_bits) - 1)),
                    act_min.eq(Mux(self.out_signed, -((1 << self.act_bits) >> 1), 0)),
                ]
            else:
                act_max, act_min = (1 << self.act_bits) - 1, 0
            m.d.sync += [act4.eq(Mux(shifted < act_min, act_min,
                                     Mux(shifted > act_max, act_max, shifted))[:4]),
                         total4.eq(total3)]
        else:
            act4, total4 = self._clamped_shift(m, scaled, shift, total3)

        m.d.comb += [
            self.code.valid.eq(valid[-1]), self.code.p.at.eq(at[-1]),
            self.code.p.value.eq(act4), self.code.p.total.eq(total4),
            self.busy.eq(Cat(valid).any()),
        ]
        return m

    def _clamped_shift(self, m, product, shift, total3):
        """S4 without a full-width shifter (config.ppu_barrel_shift False):
        the same value, clamp((product + rounding) >> shift, lo, hi), from
        p = product + rounding: at the minimum when p < 0 and (unsigned) or
        (signed) a bit of p at or above a - 1 + shift is clear; at the
        maximum when p >= 0 and a bit of p at or above a + shift (signed:
        a - 1 + shift) is set; otherwise the 4 bits of p from bit `shift`
        (a shifter that keeps only those). |product| < 2^(width - 3), so
        every shift >= width - 1 gives 0, as width - 1 does: the shift is
        capped there and p fits in `width` bits (50, or 70 with the
        residual term)."""
        config = self._config
        width = RESIDUAL_TERM_BITS + 2 if config.residual else 50
        limit = width - 1
        # The capped shift and its rounding term are registered: they depend
        # only on layer registers, which SET changes while the PPU is idle
        # (a barrier), so a cycle's lag is never seen, and the decode stays
        # off the path through the adder (the iCE40's critical path).
        capped = Signal(range(limit + 1))
        capped_now = Mux(shift > limit, limit, shift)
        rounding = Signal(width - 1)
        m.d.sync += [capped.eq(capped_now),
                     rounding.eq(Mux(capped_now == 0, 0, (1 << capped_now) >> 1))]
        p = Signal(signed(width))
        m.d.comb += p.eq(product + rounding)
        # The low 4 bits of p >> capped: a log shifter that keeps at each
        # stage only the bits the remaining stages can still reach.
        stages = len(capped)
        current = Cat(p, p[width - 1].replicate(4 + (1 << stages) - 1 - width))
        for bit in reversed(range(stages)):
            keep = 4 + (1 << bit) - 1
            stage = Signal(keep, name=f"shift_stage{bit}")
            m.d.comb += stage.eq(Mux(capped[bit], current[1 << bit:(1 << bit) + keep],
                                     current[:keep]))
            current = stage
        low = current
        # above[i]: some bit of p at or above i is set.
        above = [Signal(name=f"above{i}") for i in range(width)]
        m.d.comb += above[width - 1].eq(p[width - 1])
        for i in reversed(range(width - 1)):
            m.d.comb += above[i].eq(p[i] | above[i + 1])
        signed_out = self.out_signed if config.residual else 0
        threshold = Signal(range(limit + 8))
        m.d.sync += threshold.eq(capped_now + self.act_bits - signed_out)
        over = Array(above + [0] * ((1 << len(threshold)) - width))[threshold]
        act_max = Signal(4)
        m.d.comb += act_max.eq(Mux(signed_out, ((1 << self.act_bits) >> 1) - 1,
                                   (1 << self.act_bits) - 1))
        act4 = Signal(4)
        total4 = Signal(signed(RESULT_WIDTH))    # acc + bias, wrapped to 32 bits
        if config.residual:
            # clear[i]: some bit of p at or above i is clear.
            clear = [Signal(name=f"clear{i}") for i in range(width)]
            m.d.comb += clear[width - 1].eq(~p[width - 1])
            for i in reversed(range(width - 1)):
                m.d.comb += clear[i].eq(~p[i] | clear[i + 1])
            under = Array(clear + [1] * ((1 << len(threshold)) - width))[threshold]
            act_min = Signal(4)
            m.d.comb += act_min.eq(-((1 << self.act_bits) >> 1))
            negative = Mux(signed_out, Mux(under, act_min, low), 0)
        else:
            negative = 0
        m.d.sync += [act4.eq(Mux(p[width - 1], negative, Mux(over, act_max, low))),
                     total4.eq(total3)]
        return act4, total4


class PoolWriter(wiring.Component):
    """S5: writes each code as an activation slot of s bits (isa.slot_bits
    of `act_bits`): bank p mod C, bits s*k .. s*k + s - 1 from word
    out_base + (y * out_wb + p div C) * out_words (one write, also where
    they straddle two words), where p is column x's position: x, or with
    `out_split` n > 0 (a parity-split map) x div 2, plus n when x is
    even), or with `pool` the
    maximum of each 2x2 window at (x/2, y/2): the even column's code waits
    in a register, the even row's pair maxima in a line buffer (the row
    pair is two consecutive tiles). A raw layer writes `total` to result
    res_base + (y * out_w + x) * cout + k. Nothing is written for k >= cout
    or x >= out_w. (config.stride2 False: `out_split` is ignored.)"""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "code": In(stream.Signature(code_layout(config), always_ready=True)),
            "out_base": In(32), "out_w": In(16), "cout": In(16), "out_wb": In(16),
            "out_words": In(16), "pool": In(1), "raw": In(1), "res_base": In(32),
            "out_split": In(16), "act_bits": In(3),
            "activations": In(activation_write_signature(config)),
            "results": In(result_write_signature(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols = config.rows, config.cols
        col_bits = (cols - 1).bit_length()
        at, code = self.code.p.at, self.code.p.value

        hold = Signal(4)            # the even column of a pair
        line = Array(Signal(4, name=f"line{i}") for i in range(rows * (cols // 2)))
        pair_max = Signal(4)
        m.d.comb += pair_max.eq(Mux(hold > code, hold, code))
        line_entry = line[at.r * (cols // 2) + (at.c >> 1)]
        window_max = Mux(line_entry > pair_max, line_entry, pair_max)

        odd_column = at.c[0]
        odd_row = at.y[0]
        write = Signal()
        x_out = Signal(config.coord_bits)
        y_out = Signal(16)
        value_out = Signal(4)
        with m.If(self.code.valid & ~odd_column):
            m.d.sync += hold.eq(code)
        with m.If(self.pool):
            with m.If(self.code.valid & odd_column & ~odd_row):
                m.d.sync += line_entry.eq(pair_max)
            m.d.comb += [write.eq(odd_column & odd_row), x_out.eq(at.x >> 1),
                         y_out.eq(at.y >> 1), value_out.eq(window_max)]
        with m.Else():
            m.d.comb += [write.eq(1), x_out.eq(at.x), y_out.eq(at.y), value_out.eq(code)]
        in_range = self.code.valid & (at.k < self.cout) & (at.x < self.out_w)
        position = Signal(config.coord_bits)
        if config.stride2:
            m.d.comb += position.eq(Mux(self.out_split == 0, x_out,
                                        (x_out >> 1) + Mux(x_out[0], 0, self.out_split)))
        else:
            m.d.comb += position.eq(x_out)

        # Channel k's slot starts at bit s*k of the pixel (isa.slot_bits: s
        # the output precision with packed_activations, else 4).
        slot_start = Signal(config.coord_bits + 2)
        if config.packed_activations:
            with m.Switch(self.act_bits):
                for bits in (2, 3, 4):
                    with m.Case(bits):
                        m.d.comb += slot_start.eq(at.k * bits)
        else:
            m.d.comb += slot_start.eq(at.k << 2)
        shift = slot_start[:4]
        # Each address only for the write that uses it: so Yosys' `share`
        # sees the two multiplier chains as exclusive (raw or not) and
        # builds one (iCE40: a DSP and about 35 LUTs fewer).
        word = self.out_base + (y_out * self.out_wb + (position >> col_bits)) * self.out_words + (slot_start >> 4)
        with m.If(in_range & write & ~self.raw):
            m.d.comb += self.activations.addr.eq(Cat(position[:col_bits],
                                                     word[:(config.act_depth - 1).bit_length()]))
            if config.packed_activations:
                mask = Mux(self.act_bits == 4, 0xF, Mux(self.act_bits == 3, 0x7, 0x3))
                m.d.comb += [self.activations.data.eq(value_out << shift),
                             self.activations.en.eq(mask << shift)]
            else:
                m.d.comb += [self.activations.data.eq(value_out.replicate(ACT_SLOTS_PER_WORD)),
                             self.activations.en.eq(1 << at.k[:2])]
        with m.If(in_range & self.raw):
            m.d.comb += [
                self.results.addr.eq(self.res_base + (at.y * self.out_w + at.x) * self.cout + at.k),
                self.results.data.eq(self.code.p.total),
                self.results.en.eq(1),
            ]
        return m


class PostProcessor(wiring.Component):
    """Post-processes the tiles of the OAB: a job (a tile and its OAB
    buffer) is accepted when the previous one's last element is counted;
    `job_done` pulses with its last write, `idle` says no job is in the
    pipeline. The layer registers must hold while a job runs."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "job": In(stream.Signature(job_layout(config.coord_bits))),
            "job_done": Out(1),
            "idle": Out(1),
            "layer": In(PPU_REGISTERS),
            "oab": In(oab_read_signature(config)),
            "params": In(params_read_signature(config)),
            "activations": In(activation_write_signature(config)),
            "results": In(result_write_signature(config)),
            **({"shortcut": Out(shortcut_read_signature(config))} if config.residual else {}),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        # The golden model's timing counts these stages (hw/timing.py).
        assert 1 + Requantizer.LATENCY == PPU_PIPELINE

        m.submodules.reader = reader = TileReader(config)
        m.submodules.requantizer = requantizer = Requantizer(config)
        m.submodules.writer = writer = PoolWriter(config)
        wiring.connect(m, wiring.flipped(self.job), reader.job)
        wiring.connect(m, reader.oab, wiring.flipped(self.oab))
        wiring.connect(m, reader.params, wiring.flipped(self.params))
        wiring.connect(m, reader.element, requantizer.element)
        wiring.connect(m, requantizer.code, writer.code)
        wiring.connect(m, writer.activations, wiring.flipped(self.activations))
        wiring.connect(m, writer.results, wiring.flipped(self.results))

        layer = self.layer
        m.d.comb += [reader.cout.eq(layer.cout), reader.param_base.eq(layer.param_base),
                     requantizer.act_bits.eq(layer.act_bits), requantizer.req_shift.eq(layer.req_shift)]
        if config.residual:
            wiring.connect(m, reader.shortcut, wiring.flipped(self.shortcut))
            for name in ("sc_enable", "sc_shift", "sc_signed", "out_signed"):
                m.d.comb += getattr(requantizer, name).eq(layer[name])
        for name in ("out_base", "out_w", "cout", "out_wb", "out_words", "pool", "raw", "res_base",
                     "out_split", "act_bits"):
            m.d.comb += getattr(writer, name).eq(layer[name])
        m.d.comb += [
            self.job_done.eq(requantizer.code.valid & requantizer.code.p.at.last),
            self.idle.eq(~reader.busy & ~requantizer.busy),
        ]
        return m
