"""Post-processing unit: output accumulators to activations (or results).

One value per cycle, in a fixed pipeline (docs/isa.md, "Dataflow"):

  S0  count (row r, column c) of the tile; at c == 0 read the OAB row entry
      and the channel's parameters
  S1  select accumulator c of the row
  S2  add the bias
  S3  multiply by the requantization multiplier
  S4  rounding right shift and clamp to [0, 2^a - 1] (common/fixedpoint.py's rule)
  S5  2x2 max-pool (pairs of columns, then the row pair of two consecutive
      tiles through a line buffer) and write a 4-bit activation slot; or, for
      a raw layer, write acc + bias to the result memory
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.isa import MULTIPLIER_BITS, PARAMETER, RESULT_WIDTH
from hw.round_engine import ReadPort
from hw.timing import PPU_PIPELINE


class PostProcessor(wiring.Component):
    def __init__(self, config):
        self._config = config
        rows, cols, acc = config.rows, config.cols, config.acc_width
        act_addr_bits = (config.act_depth - 1).bit_length()
        super().__init__({
            # A tile to post-process: held by the controller until accepted.
            "job_valid": In(1),
            "job_ready": Out(1),
            "job_y": In(16), "job_x0": In(16), "job_ktile": In(16), "job_buffer": In(1),
            "job_done": Out(1),     # pulses with a job's last write
            "idle": Out(1),         # no job in the pipeline

            # Layer registers.
            "out_base": In(32), "out_w": In(16), "cout": In(16), "out_wb": In(16),
            "out_words": In(16), "pool": In(1), "act_bits": In(3), "req_shift": In(6),
            "raw": In(1), "param_base": In(32), "res_base": In(32),

            "oab": Out(ReadPort((2 * rows - 1).bit_length(), cols * acc)),
            "params": Out(ReadPort((config.param_depth - 1).bit_length(), PARAMETER.size)),

            "act_write_en": Out(1),
            "act_write_bank": Out(range(cols)),
            "act_write_addr": Out(act_addr_bits),
            "act_write_slot": Out(2),
            "act_write_data": Out(4),
            "result_write_en": Out(1),
            "result_write_addr": Out((config.result_depth - 1).bit_length()),
            "result_write_data": Out(RESULT_WIDTH),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols, acc = config.rows, config.cols, config.acc_width
        col_bits = (cols - 1).bit_length()

        # ---- S0: the job and its element counter.
        running = Signal()
        y = Signal(config.coord_bits)
        x0 = Signal(config.coord_bits)
        ktile = Signal(config.coord_bits)
        buffer = Signal()
        r = Signal(range(max(rows, 2)))     # 1 bit, not 0, for a 1-row array
        c = Signal(range(cols))
        last_element = running & (r == rows - 1) & (c == cols - 1)
        m.d.comb += self.job_ready.eq(~running | last_element)
        with m.If(running):
            m.d.sync += c.eq(c + 1)
            with m.If(c == cols - 1):
                m.d.sync += [c.eq(0), r.eq(r + 1)]
            with m.If(last_element):
                m.d.sync += running.eq(0)
        with m.If(self.job_valid & self.job_ready):
            m.d.sync += [running.eq(1), r.eq(0), c.eq(0), y.eq(self.job_y), x0.eq(self.job_x0),
                         ktile.eq(self.job_ktile), buffer.eq(self.job_buffer)]

        k0 = Signal(config.coord_bits)
        m.d.comb += k0.eq(ktile * rows + r)
        first_of_row = running & (c == 0)
        m.d.comb += [
            self.oab.addr.eq(buffer * rows + r), self.oab.en.eq(first_of_row),
            self.params.addr.eq(self.param_base + k0),
            self.params.en.eq(first_of_row & (k0 < self.cout)),
        ]

        # Pipeline metadata travelling with each value.
        meta = data.StructLayout({"valid": 1, "r": range(max(rows, 2)), "c": range(cols),
                                  "k": config.coord_bits, "x": config.coord_bits,
                                  "y": config.coord_bits, "last": 1})
        s0 = Signal(meta)
        m.d.comb += [s0.valid.eq(running), s0.r.eq(r), s0.c.eq(c), s0.k.eq(k0),
                     s0.x.eq(x0 + c), s0.y.eq(y), s0.last.eq(last_element)]
        stages = [Signal(meta, name=f"meta_s{i}") for i in range(1, PPU_PIPELINE + 1)]
        s1, s2, s3, s4, s5 = stages  # the golden model's timing counts these (hw/timing.py)
        m.d.sync += [s1.eq(s0), s2.eq(s1), s3.eq(s2), s4.eq(s3), s5.eq(s4)]

        # ---- S1: the accumulator and parameters (fresh from the ports at c == 0).
        fresh = Signal()
        if config.ppu_hold_registers:
            m.d.sync += fresh.eq(first_of_row)
        row_hold = Signal(cols * acc)
        bias_hold = Signal(PARAMETER["bias"].shape)
        mult_hold = Signal(signed(MULTIPLIER_BITS))
        row = Mux(fresh, self.oab.data, row_hold)
        params = PARAMETER(self.params.data)
        param_bias, param_mult = params.bias, params.multiplier
        if config.ppu_hold_registers:
            with m.If(fresh):
                m.d.sync += [row_hold.eq(self.oab.data), bias_hold.eq(param_bias),
                             mult_hold.eq(param_mult)]
            bias = Mux(fresh, param_bias, bias_hold)
            mult = Mux(fresh, param_mult, mult_hold)
        else:
            # The read ports hold their data until the next read (the PPU
            # is their only reader while the core runs): the row entry and
            # the channel's parameters are still there for c > 0.
            row, bias, mult = self.oab.data, param_bias, param_mult
        value1 = Signal(signed(acc))
        bias1 = Signal(PARAMETER["bias"].shape)
        mult1 = Signal(signed(MULTIPLIER_BITS))
        m.d.sync += [value1.eq(Array(row[i * acc:(i + 1) * acc].as_signed() for i in range(cols))[s1.c]),
                     bias1.eq(bias), mult1.eq(mult)]

        # ---- S2: bias.
        total = Signal(signed(33))
        mult2 = Signal(signed(MULTIPLIER_BITS))
        m.d.sync += [total.eq(value1 + bias1), mult2.eq(mult1)]

        # ---- S3: multiply.
        product = Signal(signed(33 + MULTIPLIER_BITS))
        total3 = Signal(signed(RESULT_WIDTH))
        m.d.sync += [product.eq(total * mult2), total3.eq(total)]

        # ---- S4: rounding shift (round half up) and clamp.
        shift = self.req_shift
        if config.ppu_barrel_shift:
            rounding = Mux(shift == 0, 0, (1 << shift) >> 1)
            shifted = Signal(signed(33 + MULTIPLIER_BITS + 1))
            m.d.comb += shifted.eq((product + rounding) >> shift)
            act_max = (1 << self.act_bits) - 1
            act4 = Signal(4)
            total4 = Signal(signed(RESULT_WIDTH))    # acc + bias, wrapped to 32 bits
            m.d.sync += [act4.eq(Mux(shifted < 0, 0, Mux(shifted > act_max, act_max, shifted))),
                         total4.eq(total3)]
        else:
            act4, total4 = self._clamped_shift(m, product, shift, total3)

        # ---- S5: pool and write.
        hold = Signal(4)            # the even column of a pair
        line = Array(Signal(4, name=f"line{i}") for i in range(rows * (cols // 2)))
        pair_max = Signal(4)
        m.d.comb += pair_max.eq(Mux(hold > act4, hold, act4))
        line_entry = line[s5.r * (cols // 2) + (s5.c >> 1)]
        window_max = Mux(line_entry > pair_max, line_entry, pair_max)

        odd_column = s5.c[0]
        odd_row = s5.y[0]
        write = Signal()
        x_out = Signal(16)
        y_out = Signal(16)
        value_out = Signal(4)
        with m.If(s5.valid & ~odd_column):
            m.d.sync += hold.eq(act4)
        with m.If(self.pool):
            with m.If(s5.valid & odd_column & ~odd_row):
                m.d.sync += line_entry.eq(pair_max)
            m.d.comb += [write.eq(odd_column & odd_row), x_out.eq(s5.x >> 1),
                         y_out.eq(s5.y >> 1), value_out.eq(window_max)]
        with m.Else():
            m.d.comb += [write.eq(1), x_out.eq(s5.x), y_out.eq(s5.y), value_out.eq(act4)]
        in_range = s5.valid & (s5.k < self.cout) & (s5.x < self.out_w)

        m.d.comb += [
            self.act_write_en.eq(in_range & write & ~self.raw),
            self.act_write_bank.eq(x_out[:col_bits] if col_bits else 0),
            self.act_write_addr.eq(self.out_base + (y_out * self.out_wb + (x_out >> col_bits))
                                   * self.out_words + (s5.k >> 2)),
            self.act_write_slot.eq(s5.k[:2]),
            self.act_write_data.eq(value_out),
            self.result_write_en.eq(in_range & self.raw),
            self.result_write_addr.eq(self.res_base + (s5.y * self.out_w + s5.x) * self.cout + s5.k),
            self.result_write_data.eq(total4),
            self.job_done.eq(s5.valid & s5.last),
            self.idle.eq(~running & ~s1.valid & ~s2.valid & ~s3.valid & ~s4.valid & ~s5.valid),
        ]
        return m

    def _clamped_shift(self, m, product, shift, total3):
        """S4 without a full-width shifter (config.ppu_barrel_shift False):
        the same value, clamp((product + rounding) >> shift, 0, 2^a - 1),
        from p = product + rounding: negative when p < 0; at the maximum
        when p >= 2^(a + shift) (a bit of p at or above a + shift is set);
        otherwise the 4 bits of p from bit `shift` (a shifter that keeps
        only those). |product| <= 2^47, so every shift >= 49 gives 0, as 49
        does: the shift is capped at 49 and p fits in 50 bits."""
        width = 50
        limit = 49
        capped = Signal(range(limit + 1))
        m.d.comb += capped.eq(Mux(shift > limit, limit, shift))
        p = Signal(signed(width))
        m.d.comb += p.eq(product + Mux(capped == 0, 0, (1 << capped) >> 1))
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
        threshold = Signal(range(limit + 8))
        m.d.comb += threshold.eq(capped + self.act_bits)
        over = Array(above + [0] * ((1 << len(threshold)) - width))[threshold]
        act_max = (1 << self.act_bits) - 1
        act4 = Signal(4)
        total4 = Signal(signed(RESULT_WIDTH))    # acc + bias, wrapped to 32 bits
        m.d.sync += [act4.eq(Mux(p[width - 1], 0, Mux(over, act_max, low))), total4.eq(total3)]
        return act4, total4
