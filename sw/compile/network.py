"""Whole networks: a model file (docs/model_format.md) to what the core runs.

`compile_network` turns every layer of an integer model into a `LayerSpec`,
compiles each with `compile_layer` at its own place in the memories, and
groups the layers into *phases*: the layers whose weights, chunk descriptors,
weight pointers, parameters and program fit the on-chip memories together.
One phase is loaded once and runs every image. Several phases (a network
whose weights exceed the weight memory) are the external-memory model: the
host reloads each phase's static images for every image, and the manifest
counts those bytes.

Activations stay on chip: every layer's output has its own region of the
activation memory where all fit, so after a run every layer's output can be
read back and compared with the PyTorch integer reference; where they do
not, a map reuses the space of maps no later layer reads
(sw/compile/act_alloc.py), and only the layers whose output survives to the
end (`CompiledNetwork.checked`; the logits always) are compared. A layer
reads the region of the layer its `inputs` name (model file version 2), and
a residual layer its shortcut from the region of its second input: a graph
needs no copies.

A stride-2 convolution reads its input map parity-split (docs/isa.md,
"Activations"): the layer that produces it writes its output so
(`LayerSpec.split_output`), and for a first layer at stride 2 the host's
input image is (`CompiledLayer.input_image`). A map has one layout: one
that a stride-2 layer and a stride-1 layer or a residual shortcut (read in
column order) both read is refused. In ResNets a block's input is read
either at stride 1 by its first convolution and as the identity shortcut,
or at stride 2 by its first convolution and its projection, so both fit.
A torchvision Bottleneck (stride at its 3x3) reads a down-sampling block's
input with a 1x1 convolution at stride 1 and its projection at stride 2:
a 1x1 layer at stride 1 is pointwise, so it reads the split map in storage
order and its output, which the stride-2 3x3 reads, comes out split as it
is written (`LayerSpec.input_split`, `_choose_layouts`).

Two model-file conventions differ from the hardware's and are converted
here: a linear layer that flattens a (C, H, W) map is an H x W convolution
without padding on that map (same weights, same order), and one that pools
it globally (`global_pool_input`) a `LayerSpec` with `global_pool`, which
`compile_layer` runs as the H x W convolution whose weights are the same at
every position, stored once; and its groups,
runs of 16 flattened features, are regrouped into the hardware's groups of
16 channels at one kernel position, each taking the smallest shift and the
precision that holds all its members exactly.
"""

import dataclasses
import json
import math

import numpy as np

from common.errors import UserError
from common.layer_shapes import conv_problem, pool_problem
from hw.isa import GROUP_SIZE, RESULT_WIDTH, Memory
from sw.compile import encoding as enc
from sw.compile.act_alloc import ActMap, allocate
from sw.compile.golden import execute
from sw.compile.images import empty_images, merge_images, sparse
from sw.compile.layer import LayerSpec
from sw.compile.lower import Placement, SlotBits, compile_layer
from sw.compile.regroup import expand_groups, hardware_groups
from sw.compile.tap_packing import TapPacking, pack_taps
from sw.quantize.export import IMAGE, IMAGE_NAME, layer_sources

MANIFEST_VERSION = 1
# The memories a phase loads once for its layers (the program is the phase's own).
_STATIC = (Memory.CHUNKS, Memory.WPTR, Memory.PARAMS, Memory.WEIGHTS)



def layer_specs(header, arrays):
    """The model file's layers as LayerSpecs (docs/model_format.md): any
    graph whose layers read earlier ones."""
    specs = []
    shapes = {IMAGE: tuple(header["input"]["shape"])}
    readers = {}     # producer -> [(reader, stride; None for a shortcut)]
    group_size = int(header["group_size"])
    for index, ((source, residual), fields, layer) in enumerate(zip(layer_sources(header),
                                                                      header["layers"], arrays)):
        name = fields.get("name") or f"layer{index}"
        where = f"layers[{index}] ({name!r})"   # as the model file reader names it
        last = fields["act_bits"] is None
        shape = shapes[source]
        global_pool = bool(fields.get("global_pool_input"))
        if global_pool and len(shape) != 3:
            raise UserError(f"{where}: global pooling needs a (C, H, W) input, got {shape}")
        if source != IMAGE and specs[source].act_signed:
            raise UserError(f"{where}: reads the signed codes of {specs[source].label}; the PEs "
                            f"take unsigned activations (only a residual shortcut may be signed)")
        shortcut = _shortcut_fields(where, residual, specs, layer, fields)
        weights = layer["weight"].astype(np.int64)
        bits = layer["weight_bits"].astype(np.int64)
        shifts = layer["weight_shift"].astype(np.int64)
        pool = fields.get("pool")
        problem = pool and pool_problem(pool["kernel_size"], pool["stride"], pool["padding"])
        if problem:
            raise UserError(f"{where}: {problem}")
        kind, stride, padding, input_shape, values, precision, shift = _geometry_and_groups(
            where, fields, shape, weights, bits, shifts, group_size, global_pool)
        # LayerSpec takes the weights' values (q << e) and checks them against
        # their groups' precision and shift.
        spec = LayerSpec(
            kind=kind, weights=values, precision=np.asarray(precision), shift=np.asarray(shift),
            bias=layer["bias"].astype(np.int64),
            multiplier=(np.zeros(weights.shape[0], dtype=np.int64) if last
                        else layer["requant_multiplier"].astype(np.int64)),
            requant_shift=0 if last else int(fields["requant_shift"]),
            act_bits_in=int(fields["input_bits"]), act_bits_out=0 if last else int(fields["act_bits"]),
            padding=int(padding), stride=stride, pool=pool is not None, raw=last,
            input_shape=tuple(input_shape), name=name, index=index,
            act_signed=bool(fields.get("act_signed")) and not last, global_pool=global_pool,
            **shortcut)
        if residual is not None and tuple(specs[residual].output_shape) != spec.shortcut_shape:
            raise UserError(f"{where}: its shortcut {specs[residual].label} has shape "
                            f"{tuple(specs[residual].output_shape)}, its conv output "
                            f"{spec.shortcut_shape}")
        if source != IMAGE:
            readers.setdefault(source, []).append((index, stride))
        if residual is not None:
            readers.setdefault(residual, []).append((index, None))   # read in column order
        specs.append(spec)
        shapes[index] = tuple(spec.output_shape)
    _choose_layouts(specs, readers)
    return specs


def _shortcut_fields(where, residual, specs, layer, fields):
    """LayerSpec's residual fields for a layer that adds the output of layer
    `residual` (None: none)."""
    if residual is None:
        return {}
    if residual == IMAGE:
        raise UserError(f"{where}: adds the input image as its shortcut; the core adds "
                        f"4-bit activation codes of a layer's output")
    producer = specs[residual]
    return dict(residual_multiplier=layer["residual_multiplier"].astype(np.int64),
                residual_shift=int(fields["residual_shift"]),
                shortcut_bits=producer.act_bits_out, shortcut_signed=producer.act_signed)


def _geometry_and_groups(where, fields, shape, weights, bits, shifts, group_size, global_pool):
    """How the core runs a layer that reads a map of `shape`: (kind, stride,
    padding, input shape, the weights' values q << e in that kind's shape,
    the hardware groups' precision and shift). A linear layer on a (C, H, W)
    map runs as a convolution over the whole map."""
    values = weights << expand_groups(shifts, weights.shape, group_size)
    # Per-weight precisions and shifts from the model's groups (any size);
    # every hardware group below is built from these directly, once.
    weight_bits = expand_groups(bits, weights.shape, group_size)
    weight_shifts = expand_groups(shifts, weights.shape, group_size)
    all_8bit = bool((bits == 8).all())

    def groups_of(conv_shape):
        return hardware_groups(values.reshape(conv_shape),
                               None if all_8bit else weight_bits.reshape(conv_shape),
                               weight_shifts.reshape(conv_shape))

    if fields["kind"] == "conv2d":
        problem = conv_problem(fields["kernel_size"], fields["stride"], fields["padding"])
        if problem:
            raise UserError(f"{where}: {problem}")
        if len(shape) != 3:
            raise UserError(f"{where}: a convolution needs a (C, H, W) input, got {shape}")
        precision, shift = ((bits, shifts) if group_size == GROUP_SIZE
                            else groups_of(values.shape))
        return "conv", fields["stride"][0], fields["padding"][0], shape, values, precision, shift
    if fields["flatten_input"] and len(shape) == 3 and shape[1:] != (1, 1):
        conv_shape = (values.shape[0], *shape)
        precision, shift = groups_of(conv_shape)
        return "conv", 1, 0, shape, values.reshape(conv_shape), precision, shift
    input_shape = tuple(shape) if global_pool else (int(np.prod(shape)), 1, 1)
    if group_size == GROUP_SIZE:
        return "linear", 1, 0, input_shape, values, bits, shifts
    precision, shift = groups_of(values.shape + (1, 1))
    return "linear", 1, 0, input_shape, values, precision[:, 0, 0, :], shift[:, 0, 0, :]


def _choose_layouts(specs, readers):
    """Which maps are stored parity-split. A stride-2 layer reads its input
    parity-split, a stride-1 layer or a residual shortcut in column order,
    and a map has one layout. A pointwise layer (`LayerSpec.pointwise`: a
    bottleneck's 1x1 convolution) whose output is split takes either: from
    a column-order map it writes its output permuted (OUT_SPLIT), and a
    split map it reads in storage order, so its output comes out split as
    written (`input_split`). (A pointwise layer whose output is in column
    order cannot undo a split.) Decided from the last map back (a reader
    comes after what it reads), so a reader's own layout is known when its
    input's turn comes. The image's layout is the first layer's business."""
    for producer in sorted(readers, reverse=True):
        wants = {}
        for index, stride in readers[producer]:
            if stride == 2:
                wants.setdefault("split", index)
            elif not (stride is not None and specs[index].pointwise and specs[index].split_output):
                wants.setdefault("column", index)
        if "split" not in wants:
            continue
        if "column" in wants:
            raise UserError(f"{specs[wants['column']].label}: reads {specs[producer].label} in column "
                            f"order (at stride 1 or as a residual shortcut), which "
                            f"{specs[wants['split']].label} reads at stride 2 (parity-split); the "
                            f"core keeps one layout per map")
        specs[producer] = dataclasses.replace(specs[producer], split_output=True)
        for index, stride in readers[producer]:
            if stride == 1:      # a pointwise reader of split output: it passes the layout on
                specs[index] = dataclasses.replace(specs[index], input_split=True)


@dataclasses.dataclass
class Phase:
    layers: list            # indices into CompiledNetwork.layers
    images: dict            # static images: program, chunks, wptr, params, weights
    program: list


@dataclasses.dataclass
class CompiledNetwork:
    config: object
    specs: list             # LayerSpec per layer
    layers: list            # CompiledLayer per layer
    phases: list
    input_base: int
    input_base2: int | None
    manifest: dict
    input_packing: TapPacking | None = None
    # Per layer: its output survives to the end of a run (not overwritten by
    # a later map, sw/compile/act_alloc.py), so it can be compared.
    checked: list | None = None

    @property
    def image_shape(self):
        """(C, H, W) of one network input image (the first layer's own input
        is its patches when it is tap-packed)."""
        return tuple(self.manifest["input"]["shape"])

    def input_images(self, x):
        """Activation-memory images of one uint8 input image (C, H, W) (its
        patches when the first layer is tap-packed)."""
        x = np.asarray(x, dtype=np.int64)
        if self.input_packing is not None:
            x = self.input_packing.apply(x)
        return self.layers[0].input_image(x)

    def phase_images(self, index, x=None):
        images = self.phases[index].images
        if index == 0 and x is not None:
            images = merge_images(images, self.input_images(x))
        return images

    def run_golden(self, x):
        """Per-layer outputs (list of arrays; logits last; None for a layer
        whose output a later one overwrote, `checked`) and summed counters."""
        memories = None
        counters = {}
        for index in range(len(self.phases)):
            images = self.phase_images(index, x)
            if memories is not None:
                carried = {Memory.ACTIVATIONS: [sparse(bank) for bank in memories[Memory.ACTIVATIONS]],
                           Memory.RESULTS: [sparse(memories[Memory.RESULTS][0])]}
                images = merge_images(carried, images)
            execution = execute(self.config, images)
            if execution.error:
                raise RuntimeError(f"golden model stopped on a bad opcode at {execution.error_pc}")
            memories = execution.memories
            for key, value in execution.counters.items():
                counters[key] = counters.get(key, 0) + int(value)
        return [layer.decode_output(memories) if checked else None
                for layer, checked in zip(self.layers, self.checked)], counters


def compile_network(header, arrays, config, progress=None, pack_first_layer=True):
    """Compile a model file's (header, arrays) for `config`. `pack_first_layer`:
    run a small-channel first convolution on its image's patches
    (`sw/compile/tap_packing.py`) where that takes fewer chunks."""
    specs = layer_specs(header, arrays)
    packing = None
    if pack_first_layer:
        specs[0], packing = pack_taps(specs[0])
    sources = layer_sources(header)
    input_base, input_base2, out_bases, checked, allocation = _place_activations(specs, sources,
                                                                                 config)

    layers, phases = [], []
    phase_layers, bases = [], dict(chunk=0, wptr=0, param=0, weight=0, program=0)
    for index, spec in enumerate(specs):
        source, residual = sources[index]
        in_base = input_base if source == IMAGE else out_bases[source]
        in_base2 = input_base2 if source == IMAGE else None
        sc_base = out_bases[residual] if residual is not None else None
        for attempt in range(2):
            placement = Placement(in_base=in_base, in_base2=in_base2, out_base=out_bases[index],
                                  sc_base=sc_base,
                                  param_base=bases["param"], res_base=0,
                                  chunk_base=bases["chunk"], wptr_base=bases["wptr"],
                                  weight_base=bases["weight"])
            try:
                compiled = compile_layer(spec, config, placement)
            except UserError:
                if attempt == 1 or not phase_layers:
                    raise
                # Start a new phase: this layer's static data does not fit beside the others.
                phases.append(_phase(phase_layers, layers, config))
                phase_layers, bases = [], dict(chunk=0, wptr=0, param=0, weight=0, program=0)
                continue
            body = len(compiled.program) - 1
            if bases["program"] + body + 1 > config.program_depth:
                if attempt == 1 or not phase_layers:
                    raise UserError(f"{spec.label}: its program of {body + 1} instructions "
                                    f"does not fit the program memory ({config.program_depth})")
                phases.append(_phase(phase_layers, layers, config))
                phase_layers, bases = [], dict(chunk=0, wptr=0, param=0, weight=0, program=0)
                continue
            break
        layers.append(compiled)
        phase_layers.append(index)
        regions = compiled.manifest["regions"]
        bases["chunk"] = regions["chunks"]["base"] + regions["chunks"]["entries"]
        bases["wptr"] = regions["wptr"]["base"] + regions["wptr"]["entries"]
        bases["param"] = regions["params"]["base"] + regions["params"]["entries"]
        bases["weight"] = regions["weights"]["base"] + max(regions["weights"]["entries_per_bank"])
        bases["program"] += body
        if progress:
            progress(spec.name)
    phases.append(_phase(phase_layers, layers, config))
    network = CompiledNetwork(config, specs, layers, phases, input_base, input_base2, {}, packing,
                              checked)
    network.manifest = _manifest(network, header, out_bases, allocation)
    return network


def activation_maps(specs, sources, config):
    """The `ActMap`s of a network's activation memory (words per bank of
    `config`'s banks, in the slots `lower.SlotBits` gives), in the order
    they are written: the input map(s), then every non-raw layer's output,
    each with the last layer that reads it."""
    cols = config.cols
    last = {}
    for index, pair in enumerate(sources):
        for source in pair:
            if source is not None:
                last[source] = index
    first = specs[0]
    input_words = enc.map_words_per_bank(first.input_shape[1], first.input_shape[2],
                                         first.input_shape[0], cols, SlotBits.of(first, config).input)
    # An 8-bit image is two nibble maps, one after the other.
    maps = [ActMap("the input image", input_words * (2 if first.act_bits_in == 8 else 1),
                   IMAGE, last.get(IMAGE, IMAGE))]
    for index, spec in enumerate(specs):
        if not spec.raw:
            channels, height, width = spec.output_shape
            words = enc.map_words_per_bank(height, width, channels, cols, SlotBits.of(spec, config).output)
            maps.append(ActMap(spec.label, words, index, last.get(index, index)))
    return maps


def _place_activations(specs, sources, config):
    """(input_base, input_base2, out_bases, checked, allocation): the input
    map(s) and every non-raw layer's output in the activation memory
    (sw/compile/act_alloc.py); `checked[i]`: layer i's output survives to
    the end of a run (a raw layer's results always do)."""
    maps = activation_maps(specs, sources, config)
    allocation = allocate(maps, config.act_depth)
    bases = dict(zip((m.first for m in maps), allocation.bases))
    survives = dict(zip((m.first for m in maps), allocation.survives))
    first = specs[0]
    input_base2 = (bases[IMAGE] + maps[0].words // 2) if first.act_bits_in == 8 else None
    # A raw layer writes the result memory; its OUT_BASE is unused.
    out_bases = [bases.get(index, allocation.words) for index in range(len(specs))]
    checked = [spec.raw or survives[index] for index, spec in enumerate(specs)]
    return bases[IMAGE], input_base2, out_bases, checked, allocation


def _phase(indices, layers, config):
    static = [{mem: banks for mem, banks in layers[i].images.items() if mem in _STATIC}
              for i in indices]
    program = [word for i in indices for word in layers[i].program[:-1]] + [enc.encode_halt()]
    images = merge_images(*static) if static else empty_images(config)
    images[Memory.PROGRAM] = [dict(enumerate(program))]
    return Phase(list(indices), images, program)


def _image_bytes(images, config):
    shapes = config.memory_shapes()
    return sum(len(sparse(bank)) * math.ceil(shapes[mem][2] / 8)
               for mem, banks in images.items() for bank in banks)


def _manifest(network, header, out_bases, allocation):
    config = network.config
    static_bytes = [_image_bytes(phase.images, config) for phase in network.phases]
    sources = layer_sources(header)
    return {
        "version": MANIFEST_VERSION,
        "config": config.name,
        "model": header.get("metadata", {}),
        "input": header["input"],
        "input_packing": network.input_packing.describe() if network.input_packing else None,
        "phases": [{"layers": [network.specs[i].name for i in phase.layers],
                    "program_length": len(phase.program), "static_bytes": static_bytes[n]}
                   for n, phase in enumerate(network.phases)],
        # One phase: its images stay loaded. Several: every image reloads them all.
        "external_bytes_per_inference": sum(static_bytes) if len(network.phases) > 1 else 0,
        "external_bytes_once": static_bytes[0] if len(network.phases) == 1 else 0,
        # Words per bank: used, and what every map in its own region would need.
        "activation_words": {"used": allocation.words, "keep_all": allocation.keep_all_words,
                             "depth": config.act_depth, "reused": allocation.reused},
        "layers": [{
            "name": spec.name, "kind": spec.kind, "input_shape": list(spec.input_shape),
            "output_shape": list(spec.output_shape), "raw": spec.raw, "pool": spec.pool,
            "stride": spec.stride, "split_output": spec.split_output, "input_split": spec.input_split,
            "inputs": [IMAGE_NAME if source == IMAGE else network.specs[source].name
                       for source in sources[i] if source is not None],
            "residual": spec.residual, "act_signed": spec.act_signed,
            # Activation precision against what the memory keeps per value
            # (hw/isa.py, `slot_bits`: the precision with packed_activations,
            # else 4); a raw layer writes 32-bit results.
            "act_bits": spec.act_bits_out or None,
            "act_bits_stored": RESULT_WIDTH if spec.raw else SlotBits.of(spec, config).output,
            "out_base": out_bases[i], "checked": network.checked[i],
            "expected_counters": compiled.expected_counters,
            "precision_histogram": compiled.manifest.get("precision_histogram"),
        } for i, (spec, compiled) in enumerate(zip(network.specs, network.layers))],
    }


def manifest_json(network):
    return json.dumps(network.manifest, indent=1, sort_keys=True, default=int)
