"""The designs the energy comparison prices, and what each one runs.

A design is a PE kind, a weight storage and the network it runs. The
Bit Fusion-style and fixed-array baselines run the *same* MPQ network with
its weights widened to uniform 4-bit storage (`uniform_storage`): every
value is unchanged, so their outputs equal the MPQ design's bit for bit,
and what differs is only what the hardware stores, reads and computes.
"""

import copy
import dataclasses
import math

import numpy as np
import torch

from common.errors import UserError
from hw.isa import ACT_SLOT_BITS, Memory
from sw.compile.images import runs
from sw.quantize import groups


@dataclasses.dataclass(frozen=True)
class Design:
    name: str
    title: str
    network: str        # "mpq" or "w4a4": which trained network it runs
    storage: str        # "bit-sliced" (a group costs its bits) or "uniform4"
    pe: str             # "fused" or "fixed"


DESIGNS = (
    Design("mpq", "MPQ network, our accelerator (fused PEs, bit-sliced groups)",
           "mpq", "bit-sliced", "fused"),
    Design("w4a4", "uniform W4A4 network, our accelerator", "w4a4", "bit-sliced", "fused"),
    Design("bitfusion", "Bit Fusion-style: MPQ network in uniform 4-bit storage, fused PEs",
           "mpq", "uniform4", "fused"),
    Design("fixed4", "fixed 4-bit PE array: MPQ network in uniform 4-bit storage",
           "mpq", "uniform4", "fixed"),
)


def uniform_storage(header, arrays, bits=4):
    """The model with every sub-8-bit group widened to `bits`-bit storage,
    shift 0 (weight q << e stored as its value): same integers, same outputs.

    8-bit layers (the first and last) are unchanged. Activations stay as
    they are; a fixed 4-bit array needs them at 4 bits (checked when priced).
    """
    header, arrays = copy.deepcopy(header), [dict(layer) for layer in arrays]
    limit = 1 << (bits - 1)
    for index, layer in enumerate(arrays):
        group_bits = layer["weight_bits"].astype(np.int64)
        if (group_bits == 8).all():
            continue
        if (group_bits == 8).any():
            raise UserError(f"layer {index}: mixes 8-bit and narrower groups; uniform storage "
                            "widens whole layers")
        weights = layer["weight"].astype(np.int64)
        # The model file's group layout, per weight (docs/model_format.md).
        shifts = groups.expand_to_weights(
            torch.from_numpy(layer["weight_shift"].astype(np.int64)), weights.shape,
            int(header["group_size"])).numpy()
        values = weights << shifts
        if values.min(initial=0) < -limit or values.max(initial=0) >= limit:
            raise UserError(f"layer {index}: a weight (q << e) does not fit {bits}-bit storage")
        layer["weight"] = values.astype(np.int8)
        layer["weight_bits"] = np.full_like(layer["weight_bits"], bits)
        layer["weight_shift"] = np.zeros_like(layer["weight_shift"])
    metadata = header.setdefault("metadata", {})
    metadata["storage"] = f"uniform {bits}-bit (sw.energy.designs.uniform_storage)"
    return header, arrays


def _words(images):
    """Memory id -> entries the host writes for `images` (zeros included)."""
    return {memory: sum(len(entries) for bank in banks for _, entries in runs(bank))
            for memory, banks in images.items()}


def host_traffic(network):
    """What the host moves per inference of a compiled network.

    Writes: the input image, and every phase's static images when the
    weights do not fit at once (a single phase loads them once, not per
    inference). Reads: the logits. External bytes: the input image's bytes,
    the reloaded phases' bytes (the manifest's external_bytes_per_inference)
    and the logits' 32-bit words. With them, `act_write_bits`: the mean
    slot bits of the PPU's activation writes (the manifest's act_bits_stored
    of each layer, weighted by its writes), which the energy model prices
    them at."""
    shapes = network.config.memory_shapes()
    channels, height, width = network.image_shape
    writes = {}
    input_words = _words(network.input_images(np.zeros((channels, height, width), np.int64)))
    for memory, words in input_words.items():
        writes[shapes[memory][0]] = writes.get(shapes[memory][0], 0) + words
    if len(network.phases) > 1:
        for phase in network.phases:
            for memory, words in _words(phase.images).items():
                writes[shapes[memory][0]] = writes.get(shapes[memory][0], 0) + words
    logits = math.prod(network.specs[-1].output_shape)
    result_bytes = logits * math.ceil(shapes[Memory.RESULTS][2] / 8)
    external = (channels * height * width + network.manifest["external_bytes_per_inference"]
                + result_bytes)
    return {"host_writes": {k: v for k, v in writes.items() if v},
            "host_reads": {shapes[Memory.RESULTS][0]: logits},
            "external_bytes": external, "act_write_bits": act_write_bits(network)}


def act_write_bits(network):
    """The mean slot bits of a compiled network's activation writes (4 when it writes none)."""
    layers = [(layer["expected_counters"]["act_writes"], layer["act_bits_stored"])
              for layer in network.manifest["layers"] if not layer["raw"]]
    writes = sum(count for count, _ in layers)
    return sum(count * bits for count, bits in layers) / writes if writes else ACT_SLOT_BITS
