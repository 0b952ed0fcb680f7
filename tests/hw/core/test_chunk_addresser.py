"""The round engine's chunk addresser in Amaranth's simulator, at its
boundary (combinational): a request and the layer registers in, the fetch
job out, against the activation layout of docs/isa.md computed here in
Python: column c's pixel x = s(x0 + c) + kx - pad of row s*y + ky - pad (s
the stride) lies at position p = x, or in the parity-split map of a
stride-2 layer x div 2 (+ W div 2 when x is even), in bank p mod C at
word base + (y * WB + p div C) * words + block * s (s-bit slots: a
chunk is s words). Every bank's address
(one product per bank, or `shared_bank_address`'s one product), read
enable, the columns inside the map, the rotation, every row's pointer and
plane count; edge cases (pixels left, right, above and below the map,
padding up to 15, 8-bit input's second base, wide coordinates, odd and
even widths at stride 2) and random requests at both strides."""

# amaranth: UnusedElaboratable=no

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from hw.config import AcceleratorConfig
from hw.isa import PCODE_BITS
from hw.pe import PeMode
from hw.round_engine import ChunkAddresser
from sw.compile.encoding import column_position

BASE = AcceleratorConfig("addresser-test", rows=2, cols=4, program_depth=16, chunk_depth=16,
                         wptr_depth=4, param_depth=4, weight_depth=64, act_depth=1024, result_depth=4)
CONFIGS = [dataclasses.replace(BASE, name=f"{rows}x{cols}{'-shared' if shared else ''}", rows=rows,
                               cols=cols, shared_bank_address=shared)
           for rows, cols in ((2, 4), (1, 2), (3, 8)) for shared in (False, True)]


def reference(config, request, layer):
    """The job's plan for `request` (a dict) under `layer` (a dict)."""
    cols = config.cols
    stride = 2 if layer["stride2"] else 1
    y_in = stride * request["y"] + request["ky"] - layer["pad"]
    offset = request["kx"] - layer["pad"]
    base = layer["in_base2"] if request["input2"] else layer["in_base"]
    in_wb = -(-layer["in_w"] // cols)
    columns = []
    for c in range(cols):
        x = stride * (request["x0"] + c) + offset
        inside = 0 <= y_in < layer["in_h"] and 0 <= x < layer["in_w"]
        p = column_position(x, layer["in_w"], split=stride == 2)
        word = base + (y_in * in_wb + p // cols) * layer["in_words"] + request["block"] * layer["slot_bits"]
        columns.append((p % cols, word % config.act_depth, inside))
    banks = {bank: (word, inside) for bank, word, inside in columns}
    # The columns' positions are consecutive (inside the map or not), at
    # either stride: each bank holds one column's pixel.
    assert len(banks) == cols
    return {
        "inside": [inside for _, _, inside in columns],
        "rotate": (column_position(stride * request["x0"] + offset, layer["in_w"], stride == 2)
                   - request["x0"]) % cols,
        "banks": [banks[b] for b in range(cols)],
        "weights": [(request["pointers"][r], PCODE_BITS[request["pcodes"][r]]) for r in range(config.rows)],
    }


def random_request(rng, config, *, wide=False):
    return {
        "ky": rng.randrange(16), "kx": rng.randrange(16), "block": rng.randrange(1 << 12),
        "y": rng.randrange(1 << config.coord_bits) if wide else rng.randrange(8),
        "x0": rng.randrange(1 << config.coord_bits) if wide else cols_multiple(rng, config),
        "input2": rng.getrandbits(1), "mode": rng.choice(list(PeMode)),
        "pcodes": [rng.randrange(4) for _ in range(config.rows)],
        "folds": [rng.getrandbits(1) for _ in range(config.rows)],
        "pointers": [rng.randrange(config.weight_depth) for _ in range(config.rows)],
    }


def cols_multiple(rng, config):
    return config.cols * rng.randrange(4)


def random_layer(rng, *, wide=False):
    if wide:
        return {"in_base": rng.getrandbits(32), "in_base2": rng.getrandbits(32),
                "in_h": rng.getrandbits(16), "in_w": rng.getrandbits(16),
                "in_words": rng.getrandbits(16), "pad": rng.randrange(16), "stride2": rng.getrandbits(1)}
    return {"in_base": rng.randrange(256), "in_base2": rng.randrange(256), "in_h": rng.randrange(1, 9),
            "in_w": rng.randrange(1, 20), "in_words": rng.randrange(1, 9), "pad": rng.randrange(4),
            "stride2": rng.getrandbits(1)}


def cases(config):
    rng = random.Random(config.cols * 10 + config.rows)
    edge = []
    for kx in range(0, 6):          # pixels left of, inside and right of a narrow map
        for pad in (0, 1, 2):
            request = random_request(rng, config)
            request.update(kx=kx, ky=pad, y=0, x0=0)
            edge.append((request, {"in_base": 100, "in_base2": 300, "in_h": 1, "in_w": config.cols + 1,
                                   "in_words": 3, "pad": pad, "stride2": 0}))
    for y, ky, pad in ((0, 0, 1), (0, 0, 2), (0, 1, 2), (1, 0, 1), (2, 1, 0), (2, 2, 0), (3, 0, 0)):
        request = random_request(rng, config)      # map rows -2 .. 4 of a 3-row map
        request.update(y=y, ky=ky, kx=pad)
        edge.append((request, {"in_base": 7, "in_base2": 9, "in_h": 3, "in_w": 5, "in_words": 2,
                               "pad": pad, "stride2": 0}))
    # Stride 2 on odd and even widths: both parities, the left edge (pad 1),
    # the right edge and the second tile, rows of a 5-row map.
    for in_w in (2 * config.cols - 1, 2 * config.cols, 2 * config.cols + 1, 4 * config.cols + 3):
        for kx in range(3):
            for pad in (0, 1):
                for y, x0 in ((0, 0), (2, config.cols), (1, 2 * config.cols)):
                    request = random_request(rng, config)
                    request.update(kx=kx, ky=kx, y=y, x0=x0)
                    edge.append((request, {"in_base": 11, "in_base2": 40, "in_h": 5, "in_w": in_w,
                                           "in_words": 4, "pad": pad, "stride2": 1}))
    edge += [(random_request(rng, config), random_layer(rng)) for _ in range(80)]
    edge += [(random_request(rng, config, wide=True), random_layer(rng, wide=True)) for _ in range(80)]
    for index, (_, layer) in enumerate(edge):     # every slot width (isa.slot_bits)
        layer["slot_bits"] = (2, 3, 4)[index % 3]
    return edge


@pytest.mark.parametrize("config", CONFIGS, ids=[config.name for config in CONFIGS])
def test_jobs_against_the_activation_layout(config):
    dut = ChunkAddresser(config)

    async def testbench(ctx):
        for index, (request, layer) in enumerate(cases(config)):
            payload = dut.requests.payload
            for name in ("ky", "kx", "block", "mode"):
                ctx.set(getattr(payload.chunk, name), request[name])
            for r in range(config.rows):
                ctx.set(payload.chunk.rows[r].pcode, request["pcodes"][r])
                ctx.set(payload.chunk.rows[r].fold, request["folds"][r])
                ctx.set(payload.pointers[r], request["pointers"][r])
            for name in ("y", "x0", "input2"):
                ctx.set(getattr(payload, name), request[name])
            for name, value in layer.items():
                ctx.set(getattr(dut, name), value)
            valid, ready = index % 2, index % 3 == 0
            ctx.set(dut.requests.valid, valid)
            ctx.set(dut.jobs.ready, ready)
            assert (ctx.get(dut.jobs.valid), ctx.get(dut.requests.ready)) == (valid, ready)

            job = dut.jobs.payload
            expected = reference(config, request, layer)
            assert ctx.get(job.header.mode) == request["mode"]
            for r in range(config.rows):
                assert ctx.get(job.header.rows[r].pcode) == request["pcodes"][r]
                assert ctx.get(job.header.rows[r].fold) == request["folds"][r]
                weights = job.plan.weights[r]
                assert (ctx.get(weights.pointer), ctx.get(weights.planes)) == expected["weights"][r]
            context = (index, request, layer)
            assert [ctx.get(job.plan.inside[c]) for c in range(config.cols)] == expected["inside"], context
            assert ctx.get(job.plan.rotate) == expected["rotate"], context
            for bank, (word, inside) in enumerate(expected["banks"]):
                assert ctx.get(job.plan.banks[bank].read) == inside, (bank, context)
                assert ctx.get(job.plan.banks[bank].addr) == word, (bank, context)

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
