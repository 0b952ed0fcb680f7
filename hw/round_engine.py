"""The round engine: runs one ROUND's chunks into the systolic array.

A pipeline of small components (docs/isa.md, "Dataflow"), a chunk at a
time through each:

    chunks, wptr --> DescriptorReader  <---------- idle -----------.
                          | requests                                |
                     ChunkAddresser                                 |
                          | jobs                                    |
    weights, acts <-> Fetcher  <------ free ------.                 |
                          | captures, begin       |                 |
                     ChunkBuffers ----------------'  <- progress -- Emitter
                          | taps                     -- chunks ---> |
                     LanePacker  <------------------- steps --------'
                          |
                        array

  DescriptorReader  latches the round at `start`, reads its weight-pointer
                    entry, then its chunk descriptors in order, one ahead,
                    and offers each with every row's weight pointer; the
                    round is done once the emitter is idle.
  ChunkAddresser    a chunk's reads: every row's planes, every activation
                    bank's pixel word (`BankAddresses`, or with
                    shared_bank_address `SharedBankAddresses`) and which
                    columns lie inside the map.
  Fetcher           reads a chunk's weight planes (up to 4 per row, one per
                    cycle, from the row's bank) and activation words (4 per
                    column, from the bank that holds its pixel) into a free
                    chunk buffer.
  ChunkBuffers      two chunk buffers, one filling while the other empties
                    (`ChunkStore`, or with permuted_buffers
                    `PermutedChunkStore`); offers the next full one to the
                    emitter and the emitting one's next lanes as `taps`.
  Emitter           steps through each chunk, one step per cycle, G / lanes
                    steps in its PE mode.
  LanePacker        a step's lane values, packed for the chunk's PE mode.

A chunk takes at least 4 steps (W2A2) and its fetch 4 read cycles, and the
fetch of chunk j+1 starts in the last step of chunk j-1, so the array gets a
step on every cycle of a round after the first chunk's fetch. Every stream
between the components keeps the stream rule (valid never waits for ready);
`begin`, `captures`, `steps` and the array's are `always_ready`: the
buffers, the lane packer and the array never wait.
"""

import functools

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.isa import (
    ACT_SLOT_BITS,
    ACT_SLOTS_PER_WORD,
    ACT_WORD_BITS,
    CHUNK_ACT_WORDS,
    GROUP_SIZE,
    MAX_PLANES,
    PAD_BITS,
    field_width,
)
from hw.pe import PeMode
from hw.pe.modes import pack_lanes_hdl

PLANES = MAX_PLANES              # most weight planes in a group (4-bit)
ACT_WORDS = CHUNK_ACT_WORDS      # activation words per chunk (4)
FETCH_READS = max(PLANES, ACT_WORDS)          # read cycles per chunk fetch
MAX_LANES = max(mode.lanes for mode in PeMode)   # elements a step takes from a buffer (4)


class ReadPort(wiring.Signature):
    """A synchronous memory read request: data is valid the cycle after `en`."""

    def __init__(self, addr_width, data_width):
        super().__init__({"addr": Out(addr_width), "en": Out(1), "data": In(data_width)})


# ---- widths a configuration gives the engine

def count_bits(config):
    """Width of a round's chunk count: with narrow_counts, a count up to chunk_depth."""
    return config.chunk_depth.bit_length() if config.narrow_counts else 16


def address_bits(config):
    """Width of a chunk descriptor address: with narrow_counts, the chunk memory's."""
    return count_bits(config) - 1 if config.narrow_counts else 16


def act_addr_bits(config):
    return (config.act_depth - 1).bit_length()


def col_bits(config):
    return (config.cols - 1).bit_length()


def plane_count(pcode):
    """Weight planes of a group of precision code `pcode` (0: none)."""
    return Mux(pcode == 0, 0, pcode + 1)


# ---- the payloads between the components

@functools.cache
def header_layout(config):
    """What a chunk buffer keeps of its chunk's descriptor for the emitter."""
    return data.StructLayout({"mode": PeMode, "rows": config.chunk_layout["rows"].shape})


@functools.cache
def request_layout(config):
    """A chunk as the reader offers it: its descriptor, every row's first
    weight-plane address, and the round's tile and input."""
    return data.StructLayout({"chunk": config.chunk_layout, "pointers": config.wptr_layout,
                              "y": config.coord_bits, "x0": config.coord_bits, "input2": 1})


@functools.cache
def read_plan_layout(config):
    """The reads of one chunk fetch: per row, its planes' first address and
    count; per activation bank, its pixel word's address and whether it is
    read (its column's pixel lies inside the map); per column, whether its
    pixel lies inside the map, and how far columns are from their banks."""
    weight = data.StructLayout({"pointer": config.weight_addr_bits, "planes": range(PLANES + 1)})
    bank = data.StructLayout({"addr": act_addr_bits(config), "read": 1})
    return data.StructLayout({
        "weights": data.ArrayLayout(weight, config.rows),
        "banks": data.ArrayLayout(bank, config.cols),
        "inside": data.ArrayLayout(1, config.cols),
        "rotate": col_bits(config),
    })


@functools.cache
def job_layout(config):
    return data.StructLayout({"header": header_layout(config), "plan": read_plan_layout(config)})


@functools.cache
def begin_layout(config):
    """A fetch starting: the buffer it fills and its chunk's header."""
    return data.StructLayout({"buffer": 1, "header": header_layout(config)})


@functools.cache
def capture_layout(config):
    """One fetch read's data for the buffers: read `index` of a fetch into
    `buffer` (`last`: its final read), plane `index` of every row and word
    `index` of every column's pixel (zero outside the map)."""
    return data.StructLayout({
        "buffer": 1, "index": range(FETCH_READS), "last": 1,
        "planes": data.ArrayLayout(GROUP_SIZE, config.rows),
        "words": data.ArrayLayout(ACT_WORD_BITS, config.cols),
    })


@functools.cache
def taps_layout(config):
    """The emitting buffer's next lanes: per row and plane, the plane's bit
    of each lane (bit l: lane l); per column, each lane's 4-bit activation.
    Lanes past the mode's are don't-cares."""
    return data.StructLayout({
        "planes": data.ArrayLayout(data.ArrayLayout(MAX_LANES, PLANES), config.rows),
        "acts": data.ArrayLayout(data.ArrayLayout(ACT_SLOT_BITS, MAX_LANES), config.cols),
    })


@functools.cache
def array_step_layout(config):
    """One step's operands, as the systolic array takes them."""
    return data.StructLayout({
        "weights": data.ArrayLayout(8, config.rows),
        "modes": data.ArrayLayout(PeMode, config.rows),
        "acts": data.ArrayLayout(8, config.cols),
    })


# The emitter's progress, from its side: the emitting buffer shifts by the
# mode's lanes in this cycle (`shift`), the chunk's last step (`last`: its
# buffer is free after it), one of its last two steps (`ending`: a fetch
# starting now may fill its buffer, as a fetch's first capture comes two
# cycles after it starts).
PROGRESS = wiring.Signature({"shift": Out(1), "mode": Out(PeMode), "last": Out(1), "ending": Out(1)})

# How the buffers step the store, from their side: which buffer is emitted
# (its taps are offered), whether it shifts in this cycle, and its mode.
EMIT = wiring.Signature({"buffer": Out(1), "shift": Out(1), "mode": Out(PeMode)})


def _weight_read_signature(config):
    return memory.ReadPort.Signature(addr_width=config.weight_addr_bits, shape=GROUP_SIZE)


def _act_read_signature(config):
    return memory.ReadPort.Signature(addr_width=act_addr_bits(config), shape=ACT_WORD_BITS)


class DescriptorReader(wiring.Component):
    """The round's front end. At `start` it latches the round (its chunks
    `chunk_start ..`, their count, the tile and which input) and reads the
    round's weight-pointer entry (`wptr`); then it reads the chunk
    descriptors in order (`chunks`), one ahead, and offers each on
    `requests` with every row's weight pointer, which advance past the
    chunk's planes when it is taken. `done` pulses once the pointers are in
    and the emitter reports no chunk left (`emitted`); `busy` from the cycle
    after `start` until then. The next round may start in the `done`
    cycle."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "chunk_start": In(address_bits(config)),
            "chunk_count": In(count_bits(config)),
            "wptr_index": In((config.wptr_depth - 1).bit_length()),
            "input2": In(1), "y": In(16), "x0": In(16),
            "wptr": In(memory.ReadPort.Signature(addr_width=(config.wptr_depth - 1).bit_length(),
                                                 shape=config.wptr_layout)),
            "chunks": In(memory.ReadPort.Signature(addr_width=(config.chunk_depth - 1).bit_length(),
                                                   shape=config.chunk_layout)),
            "requests": Out(stream.Signature(request_layout(config))),
            "emitted": In(1),
            "done": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        requests, request = self.requests, self.requests.payload
        chunk_next = Signal(address_bits(config))      # next descriptor address to read
        chunks_to_read = Signal(count_bits(config))
        active = Signal()
        loading = Signal()           # the wptr read is in flight
        pending = Signal()           # a descriptor read is in flight
        held = Signal()              # request.chunk holds a descriptor not yet taken
        issue = Signal()
        taken = Signal()
        m.d.comb += [
            self.busy.eq(active),
            requests.valid.eq(held & ~loading),
            taken.eq(requests.valid & requests.ready),
            # Read the next descriptor when the one held is gone or going.
            issue.eq(active & (chunks_to_read != 0) & ~pending & (~held | taken)),
            self.chunks.addr.eq(chunk_next), self.chunks.en.eq(issue),
            self.wptr.en.eq(self.start),
        ]

        with m.If(self.start):
            m.d.sync += [
                chunk_next.eq(self.chunk_start), chunks_to_read.eq(self.chunk_count),
                request.y.eq(self.y), request.x0.eq(self.x0), request.input2.eq(self.input2),
                active.eq(1), loading.eq(1),
            ]
            m.d.comb += self.wptr.addr.eq(self.wptr_index)
        with m.If(loading):
            m.d.sync += [loading.eq(0), request.pointers.eq(self.wptr.data)]
        with m.If(issue):
            m.d.sync += [chunk_next.eq(chunk_next + 1), chunks_to_read.eq(chunks_to_read - 1)]
        m.d.sync += pending.eq(issue)
        with m.If(pending):
            m.d.sync += [request.chunk.eq(self.chunks.data), held.eq(1)]
        with m.Elif(taken):
            m.d.sync += held.eq(0)
        with m.If(taken):
            for pointer, row in zip(request.pointers, request.chunk.rows):
                m.d.sync += pointer.eq(pointer + plane_count(row.pcode))

        # Done once the emitter has presented every chunk; a `start` in that
        # cycle begins the next round at once (the controller's back-to-back
        # rounds), so the reader stays active.
        m.d.comb += self.done.eq(active & ~loading & self.emitted)
        with m.If(self.done & ~self.start):
            m.d.sync += active.eq(0)
        return m


class BankAddresses(wiring.Component):
    """The word address of the pixel each activation bank holds for a
    chunk, one product per bank. `x` is the pixel of column 0 (it may lie
    outside the map); the column that reads bank b holds pixel
    x_b = x + ((b - x) mod C), word x_b div C of the map row `y_in` in its
    bank, at the chunk's channel block `block` of the map at `base` (a
    block is `slot_bits` words: isa.slot_bits)."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "base": In(32), "in_w": In(16), "in_words": In(16), "slot_bits": In(3),
            "y_in": In(signed(18)), "x": In(signed(18)),
            "block": In(field_width(config.chunk_layout, "block")),
            "addr": Out(data.ArrayLayout(act_addr_bits(config), config.cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cols, shift = self._config.cols, col_bits(self._config)
        in_wb = (self.in_w + (cols - 1)) >> shift          # map pixels per bank and row
        row_word = Signal(32)
        m.d.comb += row_word.eq(self.base + (self.y_in * in_wb) * self.in_words + self.block * self.slot_bits)
        for bank in range(cols):
            x_b = Signal(signed(18), name=f"x_bank{bank}")
            m.d.comb += [x_b.eq(self.x + ((bank - self.x) & (cols - 1))),
                         self.addr[bank].eq(row_word + (x_b >> shift) * self.in_words)]
        return m


class SharedBankAddresses(BankAddresses):
    """`BankAddresses` with one product for every bank (shared_bank_address):
    with x = q * C + lo, bank b's pixel x_b has x_b div C = q, or q + 1 when
    b < lo; the same addresses."""

    def elaborate(self, platform):
        m = Module()
        cols, shift = self._config.cols, col_bits(self._config)
        in_wb = (self.in_w + (cols - 1)) >> shift
        low = self.x[:shift]
        pixel_word = Signal(32)
        m.d.comb += pixel_word.eq(self.base + (self.y_in * in_wb + (self.x >> shift)) * self.in_words
                                  + self.block * self.slot_bits)
        for bank in range(cols):
            m.d.comb += self.addr[bank].eq(pixel_word if bank == cols - 1 else
                                           pixel_word + Mux(bank < low, self.in_words, 0))
        return m


class ChunkAddresser(wiring.Component):
    """A request's reads (combinational, so a job is offered in the cycle its
    request is): every row's first plane and plane count, every activation
    bank's pixel word (`BankAddresses`; `SharedBankAddresses` with
    shared_bank_address) and whether it is read, which columns' pixels lie
    inside the map (`pad` around the `in_h` x `in_w` map), and how far the
    columns' pixels are from their banks. The layer registers are the
    core's, read while a request is offered.

    With `stride2`, column c reads input pixel (2y + ky - pad, 2(x0 + c) +
    kx - pad) of a parity-split map (docs/isa.md, "Activations"): for one
    kx the columns' pixels all have the parity of kx - pad and lie at C
    consecutive positions, x0 + c + (kx - pad) div 2, plus in_w div 2 for
    even ones; so the banks see them as a stride-1 chunk starting at that
    position. (config.stride2 False: `stride2` is ignored.)"""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "requests": In(stream.Signature(request_layout(config))),
            "in_base": In(32), "in_base2": In(32), "in_h": In(16), "in_w": In(16),
            "in_words": In(16), "pad": In(PAD_BITS), "stride2": In(1), "slot_bits": In(3),
            "jobs": Out(stream.Signature(job_layout(config))),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        cols = config.cols
        m.submodules.banks = banks = (SharedBankAddresses if config.shared_bank_address
                                      else BankAddresses)(config)
        request, job = self.requests.payload, self.jobs.payload
        chunk, plan = request.chunk, job.plan
        m.d.comb += [
            self.jobs.valid.eq(self.requests.valid), self.requests.ready.eq(self.jobs.ready),
            job.header.mode.eq(chunk.mode), job.header.rows.eq(chunk.rows),
        ]
        for weights, pointer, row in zip(plan.weights, request.pointers, chunk.rows):
            m.d.comb += [weights.pointer.eq(pointer), weights.planes.eq(plane_count(row.pcode))]

        y_in = Signal(signed(18))
        offset = Signal(signed(18))      # kx - pad: how far the columns' pixels move
        x_0 = Signal(signed(18))         # column 0's pixel
        position = Signal(signed(18))    # how far the columns' positions in the map move
        stride2 = self.stride2 if config.stride2 else 0
        m.d.comb += [
            y_in.eq(Mux(stride2, request.y << 1, request.y) + chunk.ky - self.pad),
            offset.eq(chunk.kx - self.pad),
            x_0.eq(Mux(stride2, request.x0 << 1, request.x0) + offset),
            position.eq(Mux(stride2, (offset >> 1) + Mux(offset[0], 0, self.in_w >> 1), offset)),
        ]
        row_inside = (y_in >= 0) & (y_in < self.in_h)
        column_inside = []
        for c in range(cols):
            x_c = Signal(signed(18), name=f"x_col{c}")
            m.d.comb += x_c.eq(x_0 + Mux(stride2, 2 * c, c))
            column_inside.append(row_inside & (x_c >= 0) & (x_c < self.in_w))
            m.d.comb += plan.inside[c].eq(column_inside[c])
        m.d.comb += [
            banks.base.eq(Mux(request.input2, self.in_base2, self.in_base)),
            banks.in_w.eq(self.in_w), banks.in_words.eq(self.in_words), banks.slot_bits.eq(self.slot_bits),
            banks.y_in.eq(y_in), banks.x.eq(request.x0 + position), banks.block.eq(chunk.block),
            plan.rotate.eq(position),
        ]
        for bank in range(cols):
            column = (bank - position) & (cols - 1)    # the column whose pixel bank `bank` holds
            m.d.comb += [plan.banks[bank].addr.eq(banks.addr[bank]),
                         plan.banks[bank].read.eq(Array(column_inside)[column])]
        return m


class Fetcher(wiring.Component):
    """Fetches one chunk at a time into a chunk buffer. It takes a job when
    the buffer the job would fill is `free` and it is idle or in its last
    read (`begin` tells the buffers: which buffer, and the chunk's header).
    Read k of a fetch reads plane k of every row's group (row r's weight
    bank, `weights[r]`) and word k < `slot_bits` of every bank's pixel (`acts`); its
    data goes to the buffers the cycle after (`captures`), the words turned
    from banks to columns, zero outside the map. `weight_reads` and
    `act_reads` count this cycle's reads."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "jobs": In(stream.Signature(job_layout(config))),
            "slot_bits": In(3),  # the input map's: a chunk is that many words
            "free": In(2),       # per buffer: a fetch starting now may fill it
            "begin": Out(stream.Signature(begin_layout(config), always_ready=True)),
            "weights": In(_weight_read_signature(config)).array(config.rows),
            "acts": In(_act_read_signature(config)).array(config.cols),
            "captures": Out(stream.Signature(capture_layout(config), always_ready=True)),
            "weight_reads": Out(range(config.rows * PLANES + 1)),
            "act_reads": Out(range(config.cols + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        cols = config.cols
        jobs, begin, captures = self.jobs, self.begin, self.captures
        plan = Signal(read_plan_layout(config))     # the fetch's reads, latched when it starts
        fetching = Signal()
        buffer = Signal()            # the buffer the current fetch fills, or the next one
        read = Signal(range(FETCH_READS))
        # A job taken in the current fetch's last read fills the other buffer.
        m.d.comb += [
            begin.payload.buffer.eq(Mux(fetching, ~buffer, buffer)),
            begin.payload.header.eq(jobs.payload.header),
            jobs.ready.eq((~fetching | (read == FETCH_READS - 1))
                          & Mux(begin.payload.buffer, self.free[1], self.free[0])),
            begin.valid.eq(jobs.valid & jobs.ready),
        ]
        with m.If(begin.valid):
            m.d.sync += plan.eq(jobs.payload.plan)

        weight_reads = []
        for port, weights in zip(self.weights, plan.weights):
            enable = fetching & (read < weights.planes)
            m.d.comb += [port.addr.eq(weights.pointer + read), port.en.eq(enable)]
            weight_reads.append(enable)
        act_reads = []
        for port, bank in zip(self.acts, plan.banks):
            enable = fetching & bank.read & (read < self.slot_bits)
            m.d.comb += [port.addr.eq(bank.addr + read), port.en.eq(enable)]
            act_reads.append(enable)
        m.d.comb += [self.weight_reads.eq(sum(weight_reads)), self.act_reads.eq(sum(act_reads))]

        with m.If(fetching):
            m.d.sync += read.eq(read + 1)
            with m.If(read == FETCH_READS - 1):
                m.d.sync += [fetching.eq(0), buffer.eq(~buffer)]
        with m.If(begin.valid):  # after the block above: a back-to-back start wins
            m.d.sync += [fetching.eq(1), read.eq(0)]

        # Captures: each read's data, the cycle after the read.
        capture = captures.payload
        inside = Signal(cols)
        rotate = Signal(col_bits(config))
        m.d.sync += [
            captures.valid.eq(fetching), capture.index.eq(read), capture.buffer.eq(buffer),
            capture.last.eq(fetching & (read == FETCH_READS - 1)),
            inside.eq(plan.inside), rotate.eq(plan.rotate),
        ]
        bank_data = Array(port.data for port in self.acts)
        for plane, port in zip(capture.planes, self.weights):
            m.d.comb += plane.eq(port.data)
        for c, word in enumerate(capture.words):
            m.d.comb += word.eq(Mux(inside[c], bank_data[(c + rotate) & (cols - 1)], 0))
        return m


def _buffer_registers(config):
    """Two chunk buffers' data: planes[b][r][k] (plane k of row r's group)
    and acts[b][c] (column c's G 4-bit slots)."""
    planes = [[[Signal(GROUP_SIZE, name=f"planes_b{b}_r{r}_{k}") for k in range(PLANES)]
               for r in range(config.rows)] for b in range(2)]
    acts = [[Signal(GROUP_SIZE * ACT_SLOT_BITS, name=f"acts_b{b}_c{c}") for c in range(config.cols)]
            for b in range(2)]
    return planes, acts


def _lanes(m, mode):
    lanes = Signal(range(MAX_LANES + 1))
    with m.Switch(mode):
        for each in PeMode:
            with m.Case(each):
                m.d.comb += lanes.eq(each.lanes)
    return lanes


class ChunkStore(wiring.Component):
    """The data of the two chunk buffers. A capture writes plane `index` of
    every row and word `index` of every column into its buffer; the
    emitting buffer (`emit`) shifts by its mode's lanes each step (by
    lanes x s bits for its columns' s-bit slots, s = `slot_bits` with
    packed_activations, else 4) and offers its first lanes as `taps`, each
    slot zero-extended to 4 bits. A buffer is never captured and
    shifted in the same cycle. (`capture_mode`, the capturing buffer's
    chunk mode, is for `PermutedChunkStore`.)"""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "capture": In(stream.Signature(capture_layout(config), always_ready=True)),
            "capture_mode": In(PeMode),
            "slot_bits": In(3),      # packed_activations: the chunk's s-bit slots
            "emit": In(EMIT),
            "taps": Out(taps_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        capture, emit, taps = self.capture.payload, self.emit, self.taps
        planes, acts = _buffer_registers(config)
        lanes = _lanes(m, emit.mode)
        slot = self.slot_bits if config.packed_activations else ACT_SLOT_BITS
        for b in range(2):
            capturing = self.capture.valid & (capture.buffer == b)
            shifting = emit.shift & (emit.buffer == b)
            for r in range(config.rows):
                for k, plane in enumerate(planes[b][r]):
                    with m.If(capturing & (capture.index == k)):
                        m.d.sync += plane.eq(capture.planes[r])
                    with m.Elif(shifting):
                        m.d.sync += plane.eq(plane >> lanes)
            for c, buffer in enumerate(acts[b]):
                with m.If(capturing):
                    with m.Switch(capture.index):
                        for k in range(ACT_WORDS):
                            with m.Case(k):
                                m.d.sync += buffer.word_select(k, ACT_WORD_BITS).eq(capture.words[c])
                with m.Elif(shifting):
                    m.d.sync += buffer.eq(buffer >> (lanes * slot))

        for r in range(config.rows):
            for k in range(PLANES):
                m.d.comb += taps.planes[r][k].eq(Mux(emit.buffer, planes[1][r][k], planes[0][r][k]))
        for c in range(config.cols):
            buffer = Mux(emit.buffer, acts[1][c], acts[0][c])
            if not config.packed_activations:
                m.d.comb += taps.acts[c].eq(buffer)
                continue
            for lane in range(MAX_LANES):
                with m.Switch(slot):
                    for bits in (2, 3, 4):
                        with m.Case(bits):
                            m.d.comb += taps.acts[c][lane].eq(buffer[lane * bits:(lane + 1) * bits])
        return m


class PermutedChunkStore(ChunkStore):
    """`ChunkStore` for permuted_buffers: the buffers shift by one element
    per step whatever the mode. A buffer is captured in its chunk's mode's
    order: with L lanes and n = G / L steps, position p = l * n + s holds
    element e = s * L + l (lane l of step s), so that after s shifts lane
    l's element is at its tap l * n. The same steps reach the array as
    with the shifts by L."""

    def elaborate(self, platform):
        m = Module()
        config = self._config
        capture, emit, taps = self.capture.payload, self.emit, self.taps
        planes, acts = _buffer_registers(config)
        lanes = _lanes(m, emit.mode)

        def element(mode, p):
            n = GROUP_SIZE // mode.lanes
            return (p % n) * mode.lanes + p // n

        # Weight planes: one permuted copy of each row's read data.
        permuted = [Signal(GROUP_SIZE, name=f"permuted_plane{r}") for r in range(config.rows)]
        # Activations: position p takes slot e mod 4 of word e div 4.
        slot_enable = [[Signal(name=f"slot_en_c{c}_{p}") for p in range(GROUP_SIZE)]
                       for c in range(config.cols)]
        slot_data = [[Signal(ACT_SLOT_BITS, name=f"slot_c{c}_{p}") for p in range(GROUP_SIZE)]
                     for c in range(config.cols)]
        with m.Switch(self.capture_mode):
            for mode in PeMode:
                with m.Case(mode):
                    for r, word in enumerate(permuted):
                        m.d.comb += word.eq(Cat(capture.planes[r][element(mode, p)] for p in range(GROUP_SIZE)))
                    for c, word in enumerate(capture.words):
                        for p in range(GROUP_SIZE):
                            e = element(mode, p)
                            m.d.comb += [
                                slot_enable[c][p].eq(capture.index == e // ACT_SLOTS_PER_WORD),
                                slot_data[c][p].eq(word.word_select(e % ACT_SLOTS_PER_WORD, ACT_SLOT_BITS)),
                            ]
        for b in range(2):
            capturing = self.capture.valid & (capture.buffer == b)
            shifting = emit.shift & (emit.buffer == b)
            for r in range(config.rows):
                for k, plane in enumerate(planes[b][r]):
                    with m.If(capturing & (capture.index == k)):
                        m.d.sync += plane.eq(permuted[r])
                    with m.Elif(shifting):
                        m.d.sync += plane.eq(plane >> 1)
            for c, buffer in enumerate(acts[b]):
                for p in range(GROUP_SIZE):
                    slot = buffer.word_select(p, ACT_SLOT_BITS)
                    with m.If(capturing & slot_enable[c][p]):
                        m.d.sync += slot.eq(slot_data[c][p])
                    with m.Elif(shifting):
                        m.d.sync += slot.eq(buffer.word_select(p + 1, ACT_SLOT_BITS) if p < GROUP_SIZE - 1 else 0)

        def tap(vector, lane, width):
            """Lane `lane`'s element (`width` bits) at its tap lane * G / lanes."""
            if lane == 1:   # 4 with 4 lanes, else 8
                return Mux(lanes == 4, vector.word_select(4, width), vector.word_select(8, width))
            return vector.word_select({0: 0, 2: 8, 3: 12}[lane], width)

        for r in range(config.rows):
            for k in range(PLANES):
                m.d.comb += taps.planes[r][k].eq(Cat(
                    Mux(emit.buffer, tap(planes[1][r][k], lane, 1), tap(planes[0][r][k], lane, 1))
                    for lane in range(MAX_LANES)))
        for c in range(config.cols):
            buffer = Mux(emit.buffer, acts[1][c], acts[0][c])
            m.d.comb += taps.acts[c].eq(Cat(tap(buffer, lane, ACT_SLOT_BITS) for lane in range(MAX_LANES)))
        return m


class ChunkBuffers(wiring.Component):
    """Two chunk buffers, which the fetcher fills and the emitter empties in
    turn (their data in a `ChunkStore`, or with permuted_buffers a
    `PermutedChunkStore`). A buffer keeps its chunk's header from the
    fetch's `begin`, is full after the fetch's last capture, and free after
    the emitter's last step of it, or `free` already in that chunk's last
    two steps. `chunks` offers the next buffer's header once it is full or
    in the cycle of its last capture; the taken chunk's buffer then
    emits."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "begin": In(stream.Signature(begin_layout(config), always_ready=True)),
            "captures": In(stream.Signature(capture_layout(config), always_ready=True)),
            "slot_bits": In(3),
            "free": Out(2),
            "chunks": Out(stream.Signature(header_layout(config))),
            "progress": In(PROGRESS),
            "taps": Out(taps_layout(config)),
        })

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.store = store = (PermutedChunkStore if config.permuted_buffers
                                      else ChunkStore)(config)
        wiring.connect(m, wiring.flipped(self.captures), store.capture)
        begin, capture, progress, chunks = self.begin, self.captures.payload, self.progress, self.chunks
        captured = [Signal(name=f"captured{b}") for b in range(2)]     # its last capture is now
        headers = [Signal(header_layout(config), name=f"header{b}") for b in range(2)]
        full = [Signal(name=f"full{b}") for b in range(2)]
        emit_buffer = Signal()       # the buffer emitting, or the last one emitted
        next_buffer = Signal()       # the buffer the next chunk is emitted from
        m.d.comb += [
            next_buffer.eq(Mux(progress.shift, ~emit_buffer, emit_buffer)),
            chunks.valid.eq(Mux(next_buffer, full[1] | captured[1], full[0] | captured[0])),
            chunks.payload.eq(Mux(next_buffer, headers[1].as_value(), headers[0].as_value())),
            store.capture_mode.eq(Mux(capture.buffer, headers[1].mode, headers[0].mode)),
            store.emit.buffer.eq(emit_buffer), store.emit.shift.eq(progress.shift),
            store.emit.mode.eq(progress.mode), store.slot_bits.eq(self.slot_bits),
            self.taps.eq(store.taps),
        ]
        for b in range(2):
            m.d.comb += [
                captured[b].eq(self.captures.valid & capture.last & (capture.buffer == b)),
                self.free[b].eq(~full[b] | (progress.ending & (emit_buffer == b))),
            ]
            with m.If(begin.valid & (begin.payload.buffer == b)):
                m.d.sync += headers[b].eq(begin.payload.header)
            with m.If(captured[b]):
                m.d.sync += full[b].eq(1)
            with m.Elif(progress.last & (emit_buffer == b)):
                m.d.sync += full[b].eq(0)
        with m.If(progress.last):
            m.d.sync += emit_buffer.eq(~emit_buffer)
        with m.If(chunks.valid & chunks.ready):
            m.d.sync += emit_buffer.eq(next_buffer)
        return m


class Emitter(wiring.Component):
    """Steps through the round's chunks, one step per cycle, G / lanes steps
    of each in its PE mode. It takes a chunk (`chunks`, its buffer's
    header) when idle or in the current chunk's last step, `chunk_count`
    of them from `start`; `steps` carries the emitting chunk's header in
    each of its steps, and `progress` tells the buffers. `last`: this step
    is the round's last (the array hands its sums off after it). `idle`: no
    chunk of the round left to present."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "start": In(1),
            "chunk_count": In(count_bits(config)),
            "chunks": In(stream.Signature(header_layout(config))),
            "progress": Out(PROGRESS),
            "steps": Out(stream.Signature(header_layout(config), always_ready=True)),
            "last": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        chunks, progress = self.chunks, self.progress
        chunks_to_emit = Signal(count_bits(self._config))
        emitting = Signal()
        step = Signal(range(GROUP_SIZE))
        # The emitting chunk's header, copied from its buffer when it starts
        # (the next fetch may overwrite the buffer's before its last step).
        header = Signal(header_layout(self._config))
        steps_in_chunk = Signal(range(GROUP_SIZE + 1))
        with m.Switch(header.mode):
            for mode in PeMode:
                with m.Case(mode):
                    m.d.comb += steps_in_chunk.eq(GROUP_SIZE // mode.lanes)
        m.d.comb += [
            progress.shift.eq(emitting), progress.mode.eq(header.mode),
            progress.last.eq(emitting & (step == steps_in_chunk - 1)),
            progress.ending.eq(emitting & (step >= steps_in_chunk - 2)),
            chunks.ready.eq((~emitting | progress.last) & (chunks_to_emit != 0)),
            self.steps.valid.eq(emitting), self.steps.payload.eq(header),
            self.last.eq(progress.last & (chunks_to_emit == 0)),
            self.idle.eq((chunks_to_emit == 0) & ~emitting),
        ]
        with m.If(self.start):
            m.d.sync += chunks_to_emit.eq(self.chunk_count)
        with m.If(emitting):
            m.d.sync += step.eq(step + 1)
        with m.If(progress.last):
            m.d.sync += emitting.eq(0)
        with m.If(chunks.valid & chunks.ready):
            m.d.sync += [emitting.eq(1), step.eq(0), chunks_to_emit.eq(chunks_to_emit - 1),
                         header.eq(chunks.payload)]
        return m


class LanePacker(wiring.Component):
    """A step's operands for the array (combinational): every row's lane
    weights rebuilt from its plane taps for the row's precision (pcode) and
    fold, every column's lane activations, both packed for the chunk's PE
    mode (`pack_lanes_hdl`, the twin of `pack_weights`)."""

    def __init__(self, config):
        self._config = config
        super().__init__({
            "steps": In(stream.Signature(header_layout(config), always_ready=True)),
            "taps": In(taps_layout(config)),
            "array": Out(stream.Signature(array_step_layout(config), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        header, taps, out = self.steps.payload, self.taps, self.array.payload
        m.d.comb += self.array.valid.eq(self.steps.valid)
        for r, info in enumerate(header.rows):
            lane_values = []
            for lane in range(MAX_LANES):
                bits = [taps.planes[r][k][lane] for k in range(PLANES)]
                value = Signal(4, name=f"w_r{r}_l{lane}")
                with m.Switch(info.pcode):     # PCODE_BITS: 2, 3, 4 bits, sign-extended to 4
                    with m.Case(1):
                        m.d.comb += value.eq(Cat(bits[0], bits[1], bits[1], bits[1]))
                    with m.Case(2):
                        m.d.comb += value.eq(Cat(bits[0], bits[1], bits[2], bits[2]))
                    with m.Case(3):
                        m.d.comb += value.eq(Cat(bits[0], bits[1], bits[2], bits[3]))
                lane_values.append(Mux(info.fold, value << 1, value)[:4])
            m.d.comb += [out.weights[r].eq(pack_lanes_hdl(header.mode, lane_values, "weight")),
                         out.modes[r].eq(header.mode)]
        for c, acts in enumerate(taps.acts):
            m.d.comb += out.acts[c].eq(pack_lanes_hdl(header.mode, list(acts), "activation"))
        return m


def _forward_read(m, inner, outer):
    """A part's read port (lib.memory's signature, from the reader's side)
    out through one of the engine's `ReadPort`s. The same members, but
    lib.memory's `en` starts at 1 and ours at 0, so `connect` refuses the
    pair; every part drives its `en` in every cycle."""
    m.d.comb += [outer.addr.eq(inner.addr), outer.en.eq(inner.en), inner.data.eq(outer.data)]


class RoundEngine(wiring.Component):
    """Runs chunks `chunk_start ..` of a round for the tile at (`y`, `x0`).

    The caller pulses `start` with the round and layer fields valid; `done`
    pulses in the cycle after the round's last step was presented.
    """

    def __init__(self, config):
        self._config = config
        rows, cols = config.rows, config.cols
        # config.narrow_counts: as wide as a chunk address and a count up to chunk_depth.
        self._count_bits = count_bits(config)
        self._address_bits = address_bits(config)
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
            "in_words": In(16), "pad": In(PAD_BITS), "stride2": In(1), "in_bits": In(3),

            "done": Out(1),
            "busy": Out(1),

            "wptr": Out(ReadPort((config.wptr_depth - 1).bit_length(), config.wptr_width)),
            "chunks": Out(ReadPort((config.chunk_depth - 1).bit_length(), config.chunk_width)),
            "weights": Out(ReadPort(config.weight_addr_bits, GROUP_SIZE)).array(rows),
            "acts": Out(ReadPort(act_addr_bits(config), ACT_WORD_BITS)).array(cols),

            # To the systolic array.
            "array_weights": Out(data.ArrayLayout(8, rows)),
            "array_modes": Out(data.ArrayLayout(PeMode, rows)),
            "array_valid": Out(1),
            "array_last": Out(1),       # the round's last step
            "array_acts": Out(data.ArrayLayout(8, cols)),

            # Events this cycle, for the counters.
            "weight_reads": Out(range(rows * PLANES + 1)),
            "act_reads": Out(range(cols + 1)),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.reader = reader = DescriptorReader(config)
        m.submodules.addresser = addresser = ChunkAddresser(config)
        m.submodules.fetcher = fetcher = Fetcher(config)
        m.submodules.buffers = buffers = ChunkBuffers(config)
        m.submodules.emitter = emitter = Emitter(config)
        m.submodules.packer = packer = LanePacker(config)

        wiring.connect(m, reader.requests, addresser.requests)
        wiring.connect(m, addresser.jobs, fetcher.jobs)
        wiring.connect(m, fetcher.begin, buffers.begin)
        wiring.connect(m, fetcher.captures, buffers.captures)
        wiring.connect(m, buffers.chunks, emitter.chunks)
        wiring.connect(m, emitter.progress, buffers.progress)
        wiring.connect(m, emitter.steps, packer.steps)
        m.d.comb += [
            fetcher.free.eq(buffers.free),
            packer.taps.eq(buffers.taps),
            reader.emitted.eq(emitter.idle),
        ]

        # The engine's ports.
        for port in ("start", "chunk_start", "chunk_count", "wptr_index", "input2", "y", "x0"):
            m.d.comb += getattr(reader, port).eq(getattr(self, port))
        for port in ("in_base", "in_base2", "in_h", "in_w", "in_words", "pad", "stride2"):
            m.d.comb += getattr(addresser, port).eq(getattr(self, port))
        # The input map's slot width (isa.slot_bits): IN_BITS with packed_activations.
        slot = self.in_bits if config.packed_activations else ACT_SLOT_BITS
        m.d.comb += [addresser.slot_bits.eq(slot), fetcher.slot_bits.eq(slot), buffers.slot_bits.eq(slot)]
        m.d.comb += [
            emitter.start.eq(self.start), emitter.chunk_count.eq(self.chunk_count),
            self.done.eq(reader.done), self.busy.eq(reader.busy),
            self.array_weights.eq(packer.array.payload.weights),
            self.array_modes.eq(packer.array.payload.modes),
            self.array_acts.eq(packer.array.payload.acts),
            self.array_valid.eq(packer.array.valid), self.array_last.eq(emitter.last),
            self.weight_reads.eq(fetcher.weight_reads), self.act_reads.eq(fetcher.act_reads),
        ]
        _forward_read(m, reader.wptr, self.wptr)
        _forward_read(m, reader.chunks, self.chunks)
        for inner, outer in zip(fetcher.weights, self.weights):
            _forward_read(m, inner, outer)
        for inner, outer in zip(fetcher.acts, self.acts):
            _forward_read(m, inner, outer)
        return m
