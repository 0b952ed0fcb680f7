"""The round engine: runs one ROUND's chunks into the systolic array.

Three small engines in a pipeline (docs/isa.md, "Dataflow"):

  descriptors  reads the round's chunk descriptors in order, one ahead;
  fetch        for one chunk, reads every row's weight planes (up to 4, one per
               cycle, from that row's bank) and every column's activation words
               (4, one per cycle, from the bank that holds its pixel) into one
               of two chunk buffers;
  emit         steps through the other chunk buffer: each cycle it takes the
               next `lanes` weights and activations, packs them for the
               chunk's PE mode and presents them to the array, then shifts
               the buffer by `lanes`.

A chunk takes at least 4 steps (W2A2) and its fetch 4 read cycles, and the
fetch of chunk j+1 starts in the last step of chunk j-1, so the array gets a
step on every cycle of a round after the first chunk's fetch.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.isa import ACT_WORD_BITS, CHUNK_ACT_WORDS, GROUP_SIZE, MAX_PLANES, PAD_BITS
from hw.pe import PeMode
from hw.pe.modes import pack_lanes_hdl

PLANES = MAX_PLANES              # most weight planes in a group (4-bit)
ACT_WORDS = CHUNK_ACT_WORDS      # activation words per chunk (4)
FETCH_READS = max(PLANES, ACT_WORDS)          # read cycles per chunk fetch


class ReadPort(wiring.Signature):
    """A synchronous memory read request: data is valid the cycle after `en`."""

    def __init__(self, addr_width, data_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(data_width)})


class RoundEngine(wiring.Component):
    """Runs chunks `chunk_start ..` of a round for the tile at (`y`, `x0`).

    The caller pulses `start` with the round and layer fields valid; `done`
    pulses in the cycle after the round's last step was presented.
    """

    def __init__(self, config):
        self._config = config
        rows, cols = config.rows, config.cols
        act_addr_bits = (config.act_depth - 1).bit_length()
        # config.narrow_counts: as wide as a chunk address and a count up to chunk_depth.
        self._count_bits = config.chunk_depth.bit_length() if config.narrow_counts else 16
        self._address_bits = self._count_bits - 1 if config.narrow_counts else 16
        super().__init__({
            "start": In(1),
            "chunk_start": In(self._address_bits),
            "chunk_count": In(self._count_bits),
            "wptr_index": In((config.wptr_depth - 1).bit_length()),
            "input2": In(1),
            "y": In(16),
            "x0": In(16),
            # Layer registers this engine reads.
            "in_base": In(32), "in_base2": In(32), "in_h": In(16), "in_w": In(16),
            "in_words": In(16), "pad": In(PAD_BITS),

            "done": Out(1),
            "busy": Out(1),

            "wptr": Out(ReadPort((config.wptr_depth - 1).bit_length(), config.wptr_width)),
            "chunks": Out(ReadPort((config.chunk_depth - 1).bit_length(), config.chunk_width)),
            "weights": Out(ReadPort(config.weight_addr_bits, GROUP_SIZE)).array(rows),
            "acts": Out(ReadPort(act_addr_bits, ACT_WORD_BITS)).array(cols),

            # To the systolic array.
            "array_weights": Out(data.ArrayLayout(8, rows)),
            "array_modes": Out(data.ArrayLayout(PeMode, rows)),
            "array_valid": Out(1),
            "array_acts": Out(data.ArrayLayout(8, cols)),

            # Events this cycle, for the counters.
            "weight_reads": Out(range(rows * PLANES + 1)),
            "act_reads": Out(range(cols + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        rows, cols = config.rows, config.cols
        col_bits = (cols - 1).bit_length()
        layout = config.chunk_layout

        # Round fields, latched at start.
        chunk_next = Signal(self._address_bits)      # next descriptor address to read
        chunks_to_read = Signal(self._count_bits)
        chunks_to_emit = Signal(self._count_bits)
        y = Signal(config.coord_bits)
        x0 = Signal(config.coord_bits)
        input2 = Signal()
        loading = Signal()           # the wptr read is in flight
        active = Signal()
        m.d.comb += self.busy.eq(active)

        with m.If(self.start):
            m.d.sync += [
                chunk_next.eq(self.chunk_start), chunks_to_read.eq(self.chunk_count),
                chunks_to_emit.eq(self.chunk_count), y.eq(self.y), x0.eq(self.x0),
                input2.eq(self.input2), active.eq(1), loading.eq(1),
            ]
            m.d.comb += [self.wptr.addr.eq(self.wptr_index), self.wptr.en.eq(1)]

        # Per-row weight pointers, loaded from the wptr entry.
        pointers = [Signal(config.weight_addr_bits, name=f"pointer{r}") for r in range(rows)]
        with m.If(loading):
            m.d.sync += loading.eq(0)
            wptr_entry = config.wptr_layout(self.wptr.data)
            for r in range(rows):
                m.d.sync += pointers[r].eq(wptr_entry[r])

        # ---- descriptors: one register ahead of the fetch engine.
        descriptor = Signal(layout)
        descriptor_valid = Signal()
        descriptor_pending = Signal()
        fetch_start = Signal()

        issue_descriptor = Signal()
        m.d.comb += issue_descriptor.eq(
            active & (chunks_to_read != 0) & ~descriptor_pending
            & (~descriptor_valid | fetch_start))
        m.d.comb += [self.chunks.addr.eq(chunk_next), self.chunks.en.eq(issue_descriptor)]
        with m.If(issue_descriptor):
            m.d.sync += [chunk_next.eq(chunk_next + 1), chunks_to_read.eq(chunks_to_read - 1)]
        m.d.sync += descriptor_pending.eq(issue_descriptor)
        with m.If(descriptor_pending):
            m.d.sync += [descriptor.eq(self.chunks.data), descriptor_valid.eq(1)]
        with m.Elif(fetch_start):
            m.d.sync += descriptor_valid.eq(0)

        # ---- chunk buffers (two, ping-pong) and their state.
        planes = [[[Signal(GROUP_SIZE, name=f"planes_b{b}_r{r}_{k}") for k in range(PLANES)]
                   for r in range(rows)] for b in range(2)]
        act_buffer = [[Signal(GROUP_SIZE * 4, name=f"acts_b{b}_c{c}") for c in range(cols)]
                      for b in range(2)]
        buffer_mode = [Signal(PeMode, name=f"mode_b{b}") for b in range(2)]
        rows_layout = layout["rows"].shape
        buffer_rows = [Signal(rows_layout, name=f"rows_b{b}") for b in range(2)]
        full = [Signal(name=f"full_b{b}") for b in range(2)]

        # ---- emit engine
        emitting = Signal()
        emit_buffer = Signal()
        emit_step = Signal(range(GROUP_SIZE))
        # The emitting chunk's mode and row fields, copied from its buffer's
        # descriptor when it starts (the fetch engine overwrites those early).
        emit_mode = Signal(PeMode)
        emit_rows = Signal(rows_layout)
        steps_in_chunk = Signal(range(GROUP_SIZE + 1))
        with m.Switch(emit_mode):
            for mode in PeMode:
                with m.Case(mode):
                    m.d.comb += steps_in_chunk.eq(GROUP_SIZE // mode.lanes)
        emit_last = Signal()
        m.d.comb += emit_last.eq(emitting & (emit_step == steps_in_chunk - 1))

        # ---- fetch engine
        fetching = Signal()
        fetch_buffer = Signal()        # buffer the next fetch fills
        fetch_read = Signal(range(FETCH_READS))
        fetch_planes = [Signal(range(PLANES + 1), name=f"fetch_planes{r}") for r in range(rows)]
        fetch_pointer = [Signal(config.weight_addr_bits, name=f"fetch_pointer{r}") for r in range(rows)]
        act_addr_bits = len(self.acts[0].addr)
        fetch_bank_addr = [Signal(act_addr_bits, name=f"fetch_bank_addr{b}") for b in range(cols)]
        fetch_bank_read = [Signal(name=f"fetch_bank_read{b}") for b in range(cols)]
        fetch_inside = [Signal(name=f"fetch_inside{c}") for c in range(cols)]
        fetch_rotate = Signal(col_bits)

        # A fetch's first capture comes two cycles after it starts, so it may
        # start while the emit engine is in the last two steps of its target.
        # The buffer a fetch starting now fills: fetch_buffer, or its successor
        # when the current fetch issues its last read in this very cycle.
        target = Signal()
        m.d.comb += target.eq(Mux(fetching, ~fetch_buffer, fetch_buffer))
        target_free = Signal()
        emit_ending = emitting & (emit_step >= steps_in_chunk - 2) & (emit_buffer == target)
        m.d.comb += target_free.eq(~Mux(target, full[1], full[0]) | emit_ending)
        fetch_idle = ~fetching | (fetch_read == FETCH_READS - 1)
        m.d.comb += fetch_start.eq(descriptor_valid & fetch_idle & target_free & ~loading)

        # Activation addressing for the descriptor about to be fetched.
        pad = self.pad
        in_words = self.in_words
        base = Mux(input2, self.in_base2, self.in_base)
        in_wb = (self.in_w + (cols - 1)) >> col_bits
        y_in = Signal(signed(18))
        offset = Signal(signed(18))      # kx - pad: how far the columns' pixels move
        m.d.comb += [
            y_in.eq(y + descriptor.ky - pad),
            offset.eq(descriptor.kx - pad),
        ]
        row_inside = (y_in >= 0) & (y_in < self.in_h)
        if not config.shared_bank_address:
            row_word = Signal(32)
            m.d.comb += row_word.eq(base + (y_in * in_wb) * in_words + descriptor.block * ACT_WORDS)
        column_inside = []
        for c in range(cols):
            x_c = Signal(signed(18), name=f"x_col{c}")
            m.d.comb += x_c.eq(x0 + c + offset)
            column_inside.append(row_inside & (x_c >= 0) & (x_c < self.in_w))
        if config.shared_bank_address:
            # One product for every bank: with base_x = q * C + lo, bank b's
            # pixel x_b = base_x + ((b - base_x) mod C) has x_b div C = q, or
            # q + 1 when b < lo; the same addresses as the products below.
            shared_x = Signal(signed(18))
            m.d.comb += shared_x.eq(x0 + offset)
            low = shared_x[:col_bits]
            pixel_word = Signal(32)
            m.d.comb += pixel_word.eq(base + (y_in * in_wb + (shared_x >> col_bits)) * in_words
                                      + descriptor.block * ACT_WORDS)
        for bank in range(cols if not config.shared_bank_address else 0):
            # The column reading bank b holds pixel x_b = base_x + ((b - base_x) mod C).
            base_x = Signal(signed(18), name=f"base_x{bank}")
            x_b = Signal(signed(18), name=f"x_bank{bank}")
            m.d.comb += [base_x.eq(x0 + offset),
                         x_b.eq(base_x + ((bank - base_x) & (cols - 1)))]
            column = (bank - offset) & (cols - 1)
            inside = Array(column_inside)[column]
            with m.If(fetch_start):
                m.d.sync += [
                    fetch_bank_addr[bank].eq(row_word + (x_b >> col_bits) * in_words),
                    fetch_bank_read[bank].eq(inside),
                ]
        for bank in range(cols if config.shared_bank_address else 0):
            column = (bank - offset) & (cols - 1)
            with m.If(fetch_start):
                m.d.sync += [
                    fetch_bank_addr[bank].eq(pixel_word if bank == cols - 1 else
                                             pixel_word + Mux(bank < low, in_words, 0)),
                    fetch_bank_read[bank].eq(Array(column_inside)[column]),
                ]

        with m.If(fetch_start):
            m.d.sync += fetch_rotate.eq(offset)
            for c in range(cols):
                m.d.sync += fetch_inside[c].eq(column_inside[c])
            for r in range(rows):
                pcode = descriptor.rows[r].pcode
                count = Mux(pcode == 0, 0, pcode + 1)
                m.d.sync += [fetch_planes[r].eq(count), fetch_pointer[r].eq(pointers[r]),
                             pointers[r].eq(pointers[r] + count)]
            for b in range(2):
                with m.If(target == b):
                    m.d.sync += [buffer_mode[b].eq(descriptor.mode),
                                 buffer_rows[b].eq(descriptor.rows)]

        # Reads: cycle k of a fetch reads plane k of each row and word k of
        # each column's pixel.
        capture = Signal()
        capture_read = Signal(range(FETCH_READS))
        capture_buffer = Signal()
        capture_last = Signal()
        weight_reads = []
        for r in range(rows):
            enable = fetching & (fetch_read < fetch_planes[r])
            m.d.comb += [self.weights[r].addr.eq(fetch_pointer[r] + fetch_read),
                         self.weights[r].en.eq(enable)]
            weight_reads.append(enable)
        act_reads = []
        for bank in range(cols):
            enable = fetching & fetch_bank_read[bank]
            m.d.comb += [self.acts[bank].addr.eq(fetch_bank_addr[bank] + fetch_read),
                         self.acts[bank].en.eq(enable)]
            act_reads.append(enable)
        m.d.comb += [self.weight_reads.eq(sum(weight_reads)), self.act_reads.eq(sum(act_reads))]

        with m.If(fetching):
            m.d.sync += fetch_read.eq(fetch_read + 1)
            with m.If(fetch_read == FETCH_READS - 1):
                m.d.sync += [fetching.eq(0), fetch_buffer.eq(~fetch_buffer)]
        with m.If(fetch_start):  # after the block above: a back-to-back start wins
            m.d.sync += [fetching.eq(1), fetch_read.eq(0)]
        m.d.sync += [capture.eq(fetching), capture_read.eq(fetch_read),
                     capture_buffer.eq(fetch_buffer),
                     capture_last.eq(fetching & (fetch_read == FETCH_READS - 1))]
        capture_inside = [Signal(name=f"capture_inside{c}") for c in range(cols)]
        capture_rotate = Signal(col_bits)
        m.d.sync += capture_rotate.eq(fetch_rotate)
        for c in range(cols):
            m.d.sync += capture_inside[c].eq(fetch_inside[c])

        # ---- buffer updates: capture (fetch) or shift (emit), never both on one buffer.
        lanes = Signal(range(5))
        with m.Switch(emit_mode):
            for mode in PeMode:
                with m.Case(mode):
                    m.d.comb += lanes.eq(mode.lanes)
        bank_data = Array([self.acts[b].data for b in range(cols)])
        if config.permuted_buffers:
            self._permuted_buffers(m, planes, act_buffer, buffer_mode, capture, capture_buffer,
                                   capture_read, capture_inside, capture_rotate, bank_data,
                                   emitting, emit_buffer)
        for b in range(2):
            if not config.permuted_buffers:
                capturing = capture & (capture_buffer == b)
                shifting = emitting & (emit_buffer == b)
                for r in range(rows):
                    for k in range(PLANES):
                        plane = planes[b][r][k]
                        with m.If(capturing & (capture_read == k)):
                            m.d.sync += plane.eq(self.weights[r].data)
                        with m.Elif(shifting):
                            m.d.sync += plane.eq(plane >> lanes)
                for c in range(cols):
                    buffer = act_buffer[b][c]
                    word = Mux(capture_inside[c], bank_data[(c + capture_rotate) & (cols - 1)], 0)
                    with m.If(capturing):
                        with m.Switch(capture_read):
                            for k in range(ACT_WORDS):
                                with m.Case(k):
                                    m.d.sync += buffer[k * ACT_WORD_BITS:(k + 1) * ACT_WORD_BITS].eq(word)
                    with m.Elif(shifting):
                        m.d.sync += buffer.eq(buffer >> (lanes * 4))
            with m.If(capture_last & (capture_buffer == b)):
                m.d.sync += full[b].eq(1)
            with m.Elif(emit_last & (emit_buffer == b)):
                m.d.sync += full[b].eq(0)

        # ---- emit: start a chunk when its buffer is full (or fills this cycle).
        next_buffer = Mux(emitting, ~emit_buffer, emit_buffer)
        next_full = Mux(next_buffer, full[1], full[0]) | (capture_last & (capture_buffer == next_buffer))
        can_start = (~emitting | emit_last) & next_full & (chunks_to_emit != 0)
        with m.If(emitting):
            m.d.sync += emit_step.eq(emit_step + 1)
        with m.If(emit_last):
            m.d.sync += [emitting.eq(0), emit_buffer.eq(~emit_buffer)]
        with m.If(can_start):
            m.d.sync += [emitting.eq(1), emit_step.eq(0), emit_buffer.eq(next_buffer),
                         chunks_to_emit.eq(chunks_to_emit - 1),
                         emit_mode.eq(Mux(next_buffer, buffer_mode[1], buffer_mode[0])),
                         emit_rows.eq(Mux(next_buffer, buffer_rows[1].as_value(),
                                          buffer_rows[0].as_value()))]

        # The round is over once the last chunk's last step is presented.
        with m.If(active & ~loading & (chunks_to_emit == 0) & ~emitting & ~self.start):
            m.d.sync += active.eq(0)
            m.d.comb += self.done.eq(1)

        # ---- present the step: lane values from the emitting buffer.
        m.d.comb += self.array_valid.eq(emitting)

        def tap(vector, lane, width):
            """Lane `lane`'s element (`width` bits) of a buffer: its first
            `lanes` elements, or with config.permuted_buffers the element at
            the lane's tap (lane * 16 / lanes)."""
            if not config.permuted_buffers:
                return vector[width * lane:width * (lane + 1)]
            taps = {0: 0, 2: 8, 3: 12}          # lane 1: 4 with 4 lanes, else 8
            if lane == 1:
                return Mux(lanes == 4, vector[4 * width:5 * width], vector[8 * width:9 * width])
            return vector[taps[lane] * width:(taps[lane] + 1) * width]
        for r in range(rows):
            info = emit_rows[r]
            lane_values = []
            for lane in range(4):
                bits = [Mux(emit_buffer, tap(planes[1][r][k], lane, 1), tap(planes[0][r][k], lane, 1))
                        for k in range(PLANES)]
                value = Signal(4, name=f"w_r{r}_l{lane}")
                with m.Switch(info.pcode):
                    with m.Case(1):
                        m.d.comb += value.eq(Cat(bits[0], bits[1], bits[1], bits[1]))
                    with m.Case(2):
                        m.d.comb += value.eq(Cat(bits[0], bits[1], bits[2], bits[2]))
                    with m.Case(3):
                        m.d.comb += value.eq(Cat(bits[0], bits[1], bits[2], bits[3]))
                lane_values.append(Mux(info.fold, value << 1, value)[:4])
            m.d.comb += [self.array_weights[r].eq(pack_lanes_hdl(emit_mode, lane_values, "weight")),
                         self.array_modes[r].eq(emit_mode)]
        for c in range(cols):
            buffer = Mux(emit_buffer, act_buffer[1][c], act_buffer[0][c])
            lane_values = [tap(buffer, lane, 4) for lane in range(4)]
            m.d.comb += self.array_acts[c].eq(pack_lanes_hdl(emit_mode, lane_values, "activation"))
        return m

    def _permuted_buffers(self, m, planes, act_buffer, buffer_mode, capture, capture_buffer,
                          capture_read, capture_inside, capture_rotate, bank_data, emitting,
                          emit_buffer):
        """config.permuted_buffers: the chunk buffers shift by one element per
        step whatever the mode. A buffer is captured in its chunk's mode's
        order: with L lanes and n = 16 / L steps, position p = l * n + s
        holds element e = s * L + l (lane l of step s), so that after s
        shifts lane l's element is at its tap l * n. The same steps reach
        the array as with the shifts by L."""
        rows, cols = self._config.rows, self._config.cols
        capture_mode = Signal(PeMode)
        m.d.comb += capture_mode.eq(Mux(capture_buffer, buffer_mode[1], buffer_mode[0]))

        def element(mode, p):
            n = GROUP_SIZE // mode.lanes
            return (p % n) * mode.lanes + p // n

        # Weight planes: one permuted copy of each row's read data.
        permuted = []
        for r in range(rows):
            word = Signal(GROUP_SIZE, name=f"permuted_plane{r}")
            with m.Switch(capture_mode):
                for mode in PeMode:
                    with m.Case(mode):
                        m.d.comb += word.eq(Cat(self.weights[r].data[element(mode, p)]
                                                for p in range(GROUP_SIZE)))
            permuted.append(word)
        # Activations: position p takes slot e mod 4 of word e div 4.
        slot_enable = [[Signal(name=f"slot_en_c{c}_{p}") for p in range(GROUP_SIZE)]
                       for c in range(cols)]
        slot_data = [[Signal(4, name=f"slot_c{c}_{p}") for p in range(GROUP_SIZE)]
                     for c in range(cols)]
        for c in range(cols):
            word = Mux(capture_inside[c], bank_data[(c + capture_rotate) & (cols - 1)], 0)
            with m.Switch(capture_mode):
                for mode in PeMode:
                    with m.Case(mode):
                        for p in range(GROUP_SIZE):
                            e = element(mode, p)
                            m.d.comb += [slot_enable[c][p].eq(capture_read == e // 4),
                                         slot_data[c][p].eq(word[4 * (e % 4):4 * (e % 4) + 4])]
        for b in range(2):
            capturing = capture & (capture_buffer == b)
            shifting = emitting & (emit_buffer == b)
            for r in range(rows):
                for k in range(PLANES):
                    plane = planes[b][r][k]
                    with m.If(capturing & (capture_read == k)):
                        m.d.sync += plane.eq(permuted[r])
                    with m.Elif(shifting):
                        m.d.sync += plane.eq(plane >> 1)
            for c in range(cols):
                buffer = act_buffer[b][c]
                for p in range(GROUP_SIZE):
                    with m.If(capturing & slot_enable[c][p]):
                        m.d.sync += buffer[4 * p:4 * p + 4].eq(slot_data[c][p])
                    with m.Elif(shifting):
                        m.d.sync += buffer[4 * p:4 * p + 4].eq(
                            buffer[4 * p + 4:4 * p + 8] if p < GROUP_SIZE - 1 else 0)
