"""Mixed-precision retraining (MPQ): an extra bit for weights that keep
switching, and a slower learning rate near quantization thresholds.

The integer contract (docs/model_format.md) is `w = (q << e) * s` per group
`(p, e)`, with one fine step `s` per layer. A middle layer starts on the
*coarse grid*: `p = b`, `e = 1` (levels `2q s`). A weight (or a whole group)
that keeps switching between two coarse levels moves to the *fine grid*:
`p = b + 1`, `e = 0` (levels `q s`): the same range, half the step, so the new
odd level lies exactly on the decision threshold between the two coarse levels
it switched between. First and last layers keep their own precision.

Pieces, each usable alone:

* `SwitchCounter`: per weight, the integer level between training steps;
  switches told apart as oscillation (back to the level it came from) and drift
  (anything else), with counts and an exponentially averaged oscillation
  frequency. `SwitchTracker` feeds one counter per layer from a forward hook on
  the weight quantizer (the levels the forward computes anyway).
* `FisherTracker`: per weight, the sum of squared gradients over the
  training steps (the diagonal of the empirical Fisher information).
* `assign_extra_bit`: moves the top-ranked weights, groups, chunks or whole
  layers (top fraction, or oscillation frequency threshold) to the fine grid.
  `MPQConfig.criterion` ranks them: oscillation frequency (`switching`, the
  paper's), Fisher information times the error the extra bit removes
  (`fisher`), or a seeded random order (`random`, the control).
* `ThresholdLR`: scales each weight's update (after any optimizer, SGD or Adam)
  by `rule(d)`, `d` the distance to the nearest decision threshold in steps.
* `OscillationFreezer`: Nagel et al. 2022's freezing, for comparison.
* `weight_storage_bits`: every bit the hardware stores for the weights of a
  model file, with metadata; `compression_vs_uniform_w4`.
* `retrain`: the QAT loop with all of the above, as `MPQConfig` says.
"""

import dataclasses
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import fixedpoint
from common.errors import UserError
from common.files import writing_file
from sw.quantize import data as data_module
from sw.quantize import groups
from sw.quantize.quantizers import STEP_RULES, signed_range, step_size

# The hardware's group (hw/config.py GROUP_SIZE) and its per-group tag:
# a 2-bit precision code and a 1-bit fold (the shift e of the coarse grid).
HW_GROUP_SIZE = groups.DEFAULT_GROUP_SIZE
TAG_BITS = 3
MULTIPLIER_BITS = 16      # requant_multiplier, per output channel
REQUANT_SHIFT_BITS = 6    # requant_shift, per layer


GRANULARITIES = ("weight", "group", "hardware", "chunk", "layer")
CRITERIA = ("switching", "fisher", "random")


@dataclasses.dataclass
class MPQConfig:
    base_bits: int = 2                 # coarse-grid precision of the middle layers
    extra_bit: bool = True             # upgrade oscillating weights to the fine grid
    # weight: per weight (model group_size 1); group: per model group of
    # `group_size`; hardware: per-weight model file, whole compiler groups
    # (16 channels at one kernel position, also in a flattening linear layer);
    # chunk: `chunk_rows` output channels' compiler groups at one position
    # together (the unit the array runs in one PE mode: one fine group makes
    # its whole chunk run in W4, docs/mpq.md); layer: whole layers (one
    # precision per layer, model groups of `group_size`), taken greedily in
    # order of score per weight, skipping a layer that no longer fits
    granularity: str = "weight"
    chunk_rows: int = 8                # the array's rows (hw/config.py default), for "chunk"
    budget: str = "global"             # global | per_layer: how `fraction` is shared out
    group_size: int = HW_GROUP_SIZE    # the group for granularity "group" and "layer"
    assign_at: tuple = (0.3, 0.6)      # fractions of the retraining steps
    select: str = "fraction"           # fraction | threshold
    fraction: float = 0.1              # of the middle layers' weights, in all (split over assign_at)
    threshold: float = 0.05            # oscillation frequency, for select="threshold"
    momentum: float = 0.98             # of the frequency's exponential average
    # What ranks the units: switching (oscillation frequency), fisher (sum of
    # squared gradients times the squared-error reduction of the extra bit),
    # random (seeded by `seed`: the control)
    criterion: str = "switching"
    # switching only: spend the whole budget. Units that oscillated come
    # first (by frequency), then the rest by switch count (drift included),
    # then in a random order seeded by `seed`. Off: a unit that never
    # oscillated is never upgraded, so the budget may stay unspent.
    fill: bool = False
    seed: int = 0                      # of the random criterion and of fill's last tie-break
    # learned (LSQ) or statistics (2 mean|w| / sqrt(Qp) at every forward, no
    # learned step: the paper-era quantizer), for every layer's weights
    weight_step: str = "learned"
    lr_rule: str | None = None         # None | linear | gauss
    lr_start: float = 0.0              # fraction of the steps after which the rule acts
    lr_min: float = 0.2                # the rule's scale at a threshold
    lr_width: float = 0.2              # distance (in steps) where the scale returns to 1
    freeze_threshold: float | None = None  # Nagel et al.: freeze above this frequency
    track: bool = True                 # run the switch tracker (needed by extra_bit and freezing)
    freeze_start: float = 0.0          # fraction of the steps after which freezing acts
    # Nagel et al.'s oscillation dampening: the loss gains `dampen` times the
    # squared distance of the middle layers' weights to their levels, the
    # weight rising from 0 at `dampen_start` of the steps to `dampen` at the
    # end along a half cosine (their schedule; 0.1 is their final weight)
    dampen: float = 0.0
    dampen_start: float = 0.0

    def __post_init__(self):
        if self.granularity not in GRANULARITIES:
            raise UserError(f"mpq: granularity must be weight, group, hardware, chunk or layer, got "
                            f"{self.granularity!r}")
        if self.budget not in ("global", "per_layer"):
            raise UserError(f"mpq: budget must be global or per_layer, got {self.budget!r}")
        if not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise UserError(f"mpq: chunk_rows must be a positive int, got {self.chunk_rows!r}")
        if self.select not in ("fraction", "threshold"):
            raise UserError(f"mpq: select must be fraction or threshold, got {self.select!r}")
        if self.criterion not in CRITERIA:
            raise UserError(f"mpq: criterion must be switching, fisher or random, got {self.criterion!r}")
        if self.select == "threshold" and (self.criterion != "switching" or self.granularity == "layer"):
            raise UserError("mpq: select=threshold takes the switching criterion below layer granularity")
        if self.granularity == "layer" and self.budget == "per_layer":
            raise UserError("mpq: granularity layer takes one global budget, not budget=per_layer")
        if not 0 <= self.fraction <= 1:
            raise UserError(f"mpq: fraction must lie in [0, 1], got {self.fraction!r}")
        if self.weight_step not in STEP_RULES:
            raise UserError(f"mpq: weight_step must be learned or statistics, got {self.weight_step!r}")
        if self.lr_rule not in (None, "linear", "gauss"):
            raise UserError(f"mpq: lr_rule must be linear, gauss or None, got {self.lr_rule!r}")
        if self.dampen < 0:
            raise UserError(f"mpq: dampen must be 0 or more, got {self.dampen!r}")
        for name in ("lr_start", "freeze_start", "dampen_start"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"mpq: {name} must lie in [0, 1), got {getattr(self, name)!r}")
        if self.base_bits + (1 if self.extra_bit else 0) not in (2, 3, 4, 8) or self.base_bits < 2:
            raise UserError(f"mpq: base_bits {self.base_bits} (+1) is not a weight precision")

    @property
    def quantizer_group_size(self):
        return self.group_size if self.granularity in ("group", "layer") else 1

    def precision(self, act_bits=4, edge="w8"):
        """The precision spec of the network before `prepare` (fine grid)."""
        return f"w{self.base_bits + 1}a{act_bits},first={edge},last={edge}"


def middle_layers(network):
    return list(network.layers[1:-1])


# -- the switching tracker ------------------------------------------------------------------------
class SwitchCounter:
    """Switch counts of integer levels over training steps, for one tensor.

    A switch back to the level the weight held before its previous switch is an
    oscillation (back and forth between the same two levels); any other switch
    is drift. `frequency` is the exponential average of oscillation events per
    step (momentum `momentum`)."""

    def __init__(self, shape, momentum=0.98, device="cpu"):
        self.momentum = float(momentum)
        self.level = None
        self.before = torch.full(shape, -(1 << 30), dtype=torch.int32, device=device)
        self.oscillations = torch.zeros(shape, dtype=torch.int32, device=device)
        self.drifts = torch.zeros(shape, dtype=torch.int32, device=device)
        self.frequency = torch.zeros(shape, dtype=torch.float32, device=device)
        self.steps = 0

    @torch.no_grad()
    def observe(self, levels):
        levels = levels.detach().to(torch.int32)
        if self.level is None:
            self.level = levels.clone()
            return
        moved = levels != self.level
        oscillated = moved & (levels == self.before)
        self.oscillations += oscillated
        self.drifts += moved & ~oscillated
        self.frequency.mul_(self.momentum).add_(oscillated.float(), alpha=1 - self.momentum)
        self.before = torch.where(moved, self.level, self.before)
        self.level = levels.clone()
        self.steps += 1

    def forget_levels(self):
        """After a grid change: the next observation only sets the level."""
        self.level = None
        self.before.fill_(-(1 << 30))

    @property
    def switches(self):
        return self.oscillations + self.drifts


class SwitchTracker:
    """One `SwitchCounter` per layer, fed in training mode by a forward hook on
    the layer's weight quantizer (its output holds the levels `q << e`)."""

    def __init__(self, layers, momentum=0.98):
        self.layers = list(layers)
        self.counters = []
        self._hooks = []
        for layer in self.layers:
            counter = SwitchCounter(tuple(layer.op.weight.shape), momentum, layer.op.weight.device)
            self.counters.append(counter)
            self._hooks.append(layer.weight_quantizer.register_forward_hook(self._hook(counter)))

    @staticmethod
    def _hook(counter):
        def hook(module, inputs, output):
            if module.training:
                counter.observe(output[0])
        return hook

    def remove(self):
        for hook in self._hooks:
            hook.remove()

    def summary(self):
        rows = []
        for layer, counter in zip(self.layers, self.counters):
            rows.append({"layer": layer.name, "weights": counter.oscillations.numel(),
                         "oscillations": int(counter.oscillations.sum()),
                         "drifts": int(counter.drifts.sum()),
                         "oscillating_weights": int((counter.oscillations > 0).sum()),
                         "steps": counter.steps})
        return rows


class FisherTracker:
    """Per weight of `layers`, the sum over training steps of the squared
    gradient of the loss (the diagonal of the empirical Fisher information,
    from the mini-batch gradient, as HAWQ's trace is per layer). `observe()`
    after each backward: one multiply-add per weight."""

    def __init__(self, layers):
        self.layers = list(layers)
        self.fisher = [torch.zeros_like(layer.op.weight, dtype=torch.float32) for layer in self.layers]
        self.steps = 0

    @torch.no_grad()
    def observe(self):
        for layer, total in zip(self.layers, self.fisher):
            grad = layer.op.weight.grad
            if grad is not None:
                total.addcmul_(grad, grad)
        self.steps += 1


@torch.no_grad()
def error_reduction(layer, base_bits):
    """Per weight of a middle layer: the squared quantization error on the
    coarse grid (`base_bits`, shift 1) minus that on the fine grid (one bit
    more, shift 0), in squared weight units, at the layer's current step.
    Never negative: the fine grid holds every coarse level."""
    weight, _ = layer.folded_weight_bias()
    quantizer = layer.weight_quantizer
    step = step_size(quantizer.step) * quantizer.step_unit
    u = weight.detach() / step
    low, high = signed_range(base_bits)
    coarse = 2 * fixedpoint.round_half_up(torch.clamp(u / 2, low, high))   # as WeightQuantizer rounds
    low, high = signed_range(base_bits + 1)
    fine = fixedpoint.round_half_up(torch.clamp(u, low, high))
    return ((u - coarse) ** 2 - (u - fine) ** 2).clamp(min=0) * step ** 2


def fisher_scores(layers, fisher, base_bits):
    """Per weight: accumulated Fisher information times the error reduction
    of the extra bit (the loss increase the extra bit avoids, to second order)."""
    return [total * error_reduction(layer, base_bits) for layer, total in zip(layers, fisher.fisher)]


# -- groups of per-weight values -------------------------------------------------------------------
def per_group(per_weight, group_size, reduce="sum"):
    """Reduce a per-weight tensor (weight layout) to the group layout of
    `groups.group_shape` (groups along the input channel)."""
    shape = tuple(per_weight.shape)
    x = per_weight.permute(0, 2, 3, 1) if per_weight.dim() == 4 else per_weight
    count = math.ceil(shape[1] / group_size)
    pad = count * group_size - shape[1]
    fill = 0 if reduce == "sum" else float("-inf")
    x = F.pad(x.float(), (0, pad), value=fill)
    x = x.reshape(*x.shape[:-1], count, group_size)
    return x.sum(-1) if reduce == "sum" else x.max(-1).values


def chunk_reduce(grouped, rows, reduce="sum"):
    """Reduce a group-layout tensor over runs of `rows` output channels (the
    first axis, padded to a multiple of `rows`): the compiler's chunks."""
    outputs = grouped.shape[0]
    count = math.ceil(outputs / rows)
    fill = 0 if reduce == "sum" else float("-inf")
    padded = torch.full((count * rows,) + tuple(grouped.shape[1:]), fill, dtype=torch.float32,
                        device=grouped.device)
    padded[:outputs] = grouped.float()
    padded = padded.reshape(count, rows, *grouped.shape[1:])
    return padded.sum(1) if reduce == "sum" else padded.max(1).values


def group_members(weight_shape, group_size):
    """Number of weights in each group (group layout)."""
    return per_group(torch.ones(weight_shape), group_size, "sum")


def hardware_shape(layer, previous_channels):
    """The weight shape the compiler groups by: conv weights as they are; a
    linear layer that flattens a (C, H, W) map as an (O, C, H, W) kernel."""
    shape = tuple(layer.op.weight.shape)
    if len(shape) == 2 and layer.flatten_input and previous_channels and shape[1] % previous_channels == 0:
        side = shape[1] // previous_channels
        return (shape[0], previous_channels, side, 1)
    return shape


def _to_group_layout(per_weight, weight_shape):
    """A per-weight tensor in the group layout of group_size 1."""
    return per_weight.permute(0, 2, 3, 1) if len(weight_shape) == 4 else per_weight


# -- the extra bit ------------------------------------------------------------------------------------
@torch.no_grad()
def prepare(network, config):
    """Put the middle layers on the coarse grid (`p = b`, `e = 1`)."""
    for layer in middle_layers(network):
        quantizer = layer.weight_quantizer
        quantizer.group_bits.fill_(config.base_bits)
        quantizer.group_shift.fill_(1)


@torch.no_grad()
def upgrade_hardware(quantizer, weight_shape, hw_shape, selected):
    """Compiler groups `selected` (bool, group layout of `hw_shape` at 16) of
    a per-weight quantizer to the fine grid."""
    per_weight = groups.expand_to_weights(selected.long(), hw_shape, HW_GROUP_SIZE).bool()
    per_weight = per_weight.reshape(weight_shape)
    upgrade(quantizer, _to_group_layout(per_weight, weight_shape))


def upgrade(quantizer, selected):
    """Groups `selected` (bool, group layout) to the fine grid."""
    fine = quantizer.group_bits[selected & (quantizer.group_shift > 0)]
    quantizer.group_bits[selected & (quantizer.group_shift > 0)] = fine + 1
    quantizer.group_shift[selected] = 0


def fine_weights(layer):
    """How many of a layer's weights are on the fine grid (shift 0)."""
    quantizer = layer.weight_quantizer
    fine = groups.expand_to_weights((quantizer.group_shift == 0).long(), quantizer.weight_shape,
                                    quantizer.group_size)
    return int(fine.sum())


def _criterion_scores(layers, counters, config, fisher):
    """Per layer, the per-weight score the criterion ranks by (zeros for
    random: its scores are drawn per unit)."""
    if config.criterion == "switching":
        if counters is None:
            raise UserError("mpq: the switching criterion needs the switch counters (track=True)")
        return [counter.frequency for counter in counters]
    if config.criterion == "fisher":
        if fisher is None:
            raise UserError("mpq: the fisher criterion needs a FisherTracker (retrain makes one)")
        return fisher_scores(layers, fisher, config.base_bits)
    return [torch.zeros(layer.weight_quantizer.weight_shape) for layer in layers]


def _ranking(scores, ties, generator):
    """Unit order, best first: by score, then (when `ties` is given) by tie
    score, then by a random draw from `generator`."""
    if ties is None:
        return torch.argsort(scores, descending=True, stable=True)
    order = torch.randperm(len(scores), generator=generator)
    order = order[torch.argsort(ties[order], descending=True, stable=True)]
    return order[torch.argsort(scores[order], descending=True, stable=True)]


@dataclasses.dataclass
class LayerUnits:
    """One layer's units as `assign_extra_bit` ranks them: per unit its
    score, weight count, whether it is still coarse and (fill) its switch
    count; `hardware`: the compiler-group weight shape where a per-weight
    quantizer is scored by compiler groups; `chunk`: (rows, outputs) where
    the units are whole chunks."""
    index: int
    score: torch.Tensor
    members: torch.Tensor
    coarse: torch.Tensor
    ties: torch.Tensor | None
    hardware: tuple | None = None
    chunk: tuple | None = None


def _layer_units(index, layers, per_weight, counters, config, draws):
    """Score layer `index`'s units (`config.granularity`'s) for
    `assign_extra_bit`: the sum of the members' per-weight scores (their
    maximum for select=threshold); a layer's score is per weight."""
    layer = layers[index]
    quantizer = layer.weight_quantizer
    size, shape = quantizer.group_size, quantizer.weight_shape
    device = quantizer.group_shift.device
    coarse = quantizer.group_shift > 0
    mode = "max" if config.select == "threshold" else "sum"
    fill = config.fill and config.criterion == "switching"
    rows = hardware = chunk = None
    if config.granularity in ("hardware", "chunk") and size == 1:
        # score whole compiler groups; a group is coarse while any member is
        previous = layers[index - 1].op.weight.shape[0] if index > 0 else None
        shape = hardware = hardware_shape(layer, previous)
        coarse_weights = coarse.permute(0, 3, 1, 2) if coarse.dim() == 4 else coarse
        coarse = per_group(coarse_weights.reshape(shape).float(), HW_GROUP_SIZE, "sum") > 0
        size = HW_GROUP_SIZE
        rows = config.chunk_rows if config.granularity == "chunk" else None

    def pooled(values, reduce):
        grouped = per_group(values.reshape(shape), size, reduce).to(device)
        return chunk_reduce(grouped, rows, reduce) if rows else grouped

    score = pooled(per_weight[index], mode)
    ties = pooled(counters[index].switches.float(), "sum") if fill else None
    members = group_members(shape, size).to(device)
    if rows:
        # whole chunks: `rows` consecutive output channels' groups at one
        # position (the compiler's channel tile), scored and chosen together
        members = chunk_reduce(members, rows, "sum")
        coarse = chunk_reduce(coarse.float(), rows, "sum") > 0
        chunk = (rows, int(shape[0]))
    if config.granularity == "layer":
        # one unit per layer, ranked by its score per weight
        weights = members.sum()
        score = (score.sum() / weights).reshape(1)
        ties = ties.sum().reshape(1) if fill else None
        members, coarse = weights.reshape(1), coarse.any().reshape(1)
    if config.criterion == "random":
        score = torch.rand(score.shape, generator=draws).to(device)
    return LayerUnits(index, score, members, coarse, ties, hardware, chunk)


def _upgrade_units(layer, units, chosen, granularity):
    """Move `units`' `chosen` (bool, the units' layout) to the fine grid;
    returns the number of weights moved."""
    quantizer = layer.weight_quantizer
    if granularity == "layer":
        if not chosen.any():
            return 0
        before = fine_weights(layer)
        upgrade(quantizer, torch.ones_like(quantizer.group_shift, dtype=torch.bool))
        return fine_weights(layer) - before
    if units.chunk:
        rows, outputs = units.chunk
        chosen = chosen.repeat_interleave(rows, dim=0)[:outputs]
    if units.hardware:
        before = int((quantizer.group_shift == 0).sum())
        upgrade_hardware(quantizer, tuple(layer.op.weight.shape), units.hardware, chosen)
        return int((quantizer.group_shift == 0).sum()) - before
    upgrade(quantizer, chosen)
    return int(units.members[chosen].sum())


def _take_within_budget(pool, budget, config, draws):
    """The units of `pool` (a list of `LayerUnits`, flattened in order) to
    upgrade: in rank order while their weights fit `budget` (whole layers
    greedily, skipping one that no longer fits); already fine units never.
    Returns the chosen flat indices and the flat scores."""
    fill = config.fill and config.criterion == "switching"
    scores = torch.cat([torch.where(u.coarse, u.score, torch.full_like(u.score, -1.0)).flatten()
                        for u in pool]).cpu()
    sizes = torch.cat([u.members.flatten() for u in pool]).double().cpu()
    ties = torch.cat([u.ties.flatten() for u in pool]).cpu() if fill else None
    order = _ranking(scores, ties, draws)
    if config.granularity == "layer":
        take, left = [], budget
        for unit in order.tolist():
            if scores[unit] >= 0 and sizes[unit] <= left + 1e-9:
                take.append(unit)
                left -= float(sizes[unit])
        take = torch.tensor(take, dtype=torch.long)
    else:
        take = order[torch.cumsum(sizes[order], 0) <= budget + 1e-9]
    # The switching criterion without fill upgrades only units that
    # oscillated; the others spend the budget.
    positive_only = config.criterion == "switching" and not fill
    return (take[scores[take] > 0] if positive_only else take[scores[take] >= 0]), scores


@torch.no_grad()
def assign_extra_bit(layers, counters, config, fraction=None, fisher=None, stats=None):
    """Move the top-ranked coarse units of `layers` to the fine grid; returns
    the number of weights upgraded.

    The unit is `config.granularity`'s (weight, model group, compiler group,
    chunk or layer); `config.criterion` ranks them (switching: `counters`'
    oscillation frequency; fisher: `fisher`'s squared gradients times the
    error reduction; random: seeded by `config.seed`). With `select ==
    "fraction"`, units are taken in rank order until the fine weights of the
    pool reach `fraction` (default `config.fraction`) of its weights, already
    fine ones included (so successive calls with a growing fraction spend one
    budget); layers are taken greedily, skipping one that no longer fits.
    With `select == "threshold"`, the groups whose largest member frequency
    passes `config.threshold`. `stats`, a dict, receives the counts of units
    chosen and of chosen units whose own score is positive (for switching:
    that oscillated)."""
    per_weight = _criterion_scores(layers, counters, config, fisher)
    # one generator for the random scores, then the rankings' tie-breaks
    draws = torch.Generator().manual_seed(int(config.seed))
    candidates = [_layer_units(index, layers, per_weight, counters, config, draws)
                  for index in range(len(layers))]
    upgraded = 0
    if config.select == "threshold":
        for units in candidates:
            chosen = units.coarse & (units.score > config.threshold)
            upgraded += _upgrade_units(layers[units.index], units, chosen, config.granularity)
        return upgraded
    share = config.fraction if fraction is None else fraction
    # One budget over all layers, or (budget="per_layer") the same share of
    # every layer: the global one spends the bits where the criterion ranks
    # highest, the per-layer one keeps every layer's fine share bounded, and
    # so its share of W4 chunks (cycles and weight reads, docs/energy.md).
    pools = [candidates] if config.budget == "global" else [[units] for units in candidates]
    chosen_units = scored_units = 0
    for pool in pools:
        total = sum(int(units.members.sum()) for units in pool)
        already = sum(fine_weights(layers[units.index]) for units in pool)
        take, scores = _take_within_budget(pool, share * total - already, config, draws)
        chosen_units += len(take)
        scored_units += int((scores[take] > 0).sum())
        chosen_flat = torch.zeros(len(scores), dtype=torch.bool)
        chosen_flat[take] = True
        start = 0
        for units in pool:
            count = units.score.numel()
            chosen = chosen_flat[start:start + count].reshape(units.score.shape).to(units.score.device)
            start += count
            upgraded += _upgrade_units(layers[units.index], units, chosen, config.granularity)
    if stats is not None:
        stats.update(units=chosen_units, scored_units=scored_units)
    return upgraded


# -- the threshold-aware learning rate --------------------------------------------------------------
def threshold_distance(u, low, high):
    """Distance (in steps) of `u` (weights in units of their step) to the
    nearest decision threshold of the levels `low..high`."""
    inside = 0.5 - (u - torch.floor(u + 0.5)).abs()
    outside = F.relu(u - (high + 0.5)) + F.relu((low - 0.5) - u)
    return torch.where(outside > 0, outside, inside)


def lr_scale(distance, rule, lr_min, width):
    """The update scale at `distance` (steps) from a threshold."""
    if rule == "linear":   # lr_min + (1 - lr_min) * min(distance / width, 1), distance >= 0
        return (distance * ((1 - lr_min) / width)).add_(lr_min).clamp_(max=1.0)
    if rule == "gauss":
        return 1 - (1 - lr_min) * torch.exp(-0.5 * (distance / width) ** 2)
    raise UserError(f"mpq: unknown lr_rule {rule!r}")


class ThresholdLR:
    """Scales each weight's update by `lr_scale(distance to threshold)`.
    Works on the update itself (weights after minus before the optimizer
    step), so SGD, momentum and Adam are treated alike."""

    def __init__(self, layers, rule, lr_min, width):
        self.layers = list(layers)
        self.rule, self.lr_min, self.width = rule, lr_min, width
        self._before = None

    @torch.no_grad()
    def scales(self):
        result = []
        for layer in self.layers:
            quantizer = layer.weight_quantizer
            weight, _ = layer.folded_weight_bias()
            low, high, unit = quantizer._ranges(weight.device)
            step = step_size(quantizer.step) * quantizer.step_unit
            u = weight / (step * unit)
            result.append(lr_scale(threshold_distance(u, low, high), self.rule, self.lr_min, self.width))
        return result

    @torch.no_grad()
    def before_step(self):
        self._before = [(layer.op.weight.detach().clone(), scale)
                        for layer, scale in zip(self.layers, self.scales())]

    @torch.no_grad()
    def after_step(self):
        for layer, (before, scale) in zip(self.layers, self._before):
            weight = layer.op.weight
            weight.copy_(before.lerp_(weight, scale))      # before + scale * (weight - before)
        self._before = None


def dampening_loss(layers):
    """Nagel et al. 2022's oscillation dampening term: over `layers`' weights,
    the squared distance of each weight (clipped to its grid's range) to its
    quantized value, which is held constant, so the gradient pulls a weight
    towards the centre of its level instead of across a threshold."""
    total = 0.0
    for layer in layers:
        quantizer = layer.weight_quantizer
        weight, _ = layer.folded_weight_bias()
        with torch.no_grad():
            w_int, step = quantizer(weight)
            low, high, unit = quantizer._ranges(weight.device)
            target, low, high = w_int * step, low * unit * step, high * unit * step
        clipped = torch.maximum(torch.minimum(weight, high), low)
        total = total + ((clipped - target) ** 2).sum()
    return total


class OscillationFreezer:
    """Nagel et al. 2022: a weight whose oscillation frequency passes
    `threshold` is frozen at its current integer level (its latent weight is
    held at that level's centre) for the rest of retraining."""

    def __init__(self, layers, counters, threshold):
        self.layers, self.counters, self.threshold = list(layers), counters, threshold
        self.masks = [torch.zeros_like(layer.op.weight, dtype=torch.bool) for layer in self.layers]
        self.values = [torch.zeros_like(layer.op.weight) for layer in self.layers]

    @torch.no_grad()
    def after_step(self):
        for layer, counter, mask, value in zip(self.layers, self.counters, self.masks, self.values):
            new = (counter.frequency > self.threshold) & ~mask
            if new.any() and counter.level is not None:
                quantizer = layer.weight_quantizer
                step = step_size(quantizer.step) * quantizer.step_unit
                value[new] = counter.level[new].to(value.dtype) * step
                mask |= new
            if mask.any():
                layer.op.weight[mask] = value[mask]

    def frozen(self):
        return sum(int(mask.sum()) for mask in self.masks)


# -- the retraining loop --------------------------------------------------------------------------------
RETRAIN_STATE_FORMAT = "mpq-retrain-state"


def _counter_state(counter):
    return {name: getattr(counter, name) for name in
            ("level", "before", "oscillations", "drifts", "frequency", "steps")}


def _load_counter_state(counter, state):
    for name, value in state.items():
        setattr(counter, name, value)


class _Retraining:
    """What `retrain` carries from step to step: the optimizer and schedule,
    the trackers `config` asks for, the step count and the assignments; and
    how all of it is saved after an epoch and loaded to continue."""

    def __init__(self, network, config, opt, scheduler, total_steps, settings):
        self.network, self.config, self.opt, self.scheduler = network, config, opt, scheduler
        self.settings, self.total_steps = settings, total_steps
        self.layers = layers = middle_layers(network)
        self.tracker = SwitchTracker(layers, config.momentum) if config.track else None
        self.counters = self.tracker.counters if self.tracker else None
        self.lr_rule = (ThresholdLR(layers, config.lr_rule, config.lr_min, config.lr_width)
                        if config.lr_rule else None)
        self.freezer = (OscillationFreezer(layers, self.counters, config.freeze_threshold)
                        if config.freeze_threshold is not None and self.tracker else None)
        self.fisher = FisherTracker(layers) if config.extra_bit and config.criterion == "fisher" else None
        ranks = self.tracker is not None or config.criterion != "switching"
        self.assign_steps = sorted({max(1, int(round(f * total_steps))) for f in config.assign_at}) \
            if config.extra_bit and ranks else []
        self.share = config.fraction / max(1, len(self.assign_steps))
        self.step, self.upgraded, self.history, self.assignments, self.epoch = 0, 0, [], [], 0

    def train_step(self, images, labels):
        """One optimizer step, with the trackers, the learning-rate rule (from
        `lr_start` of the steps on), dampening and freezing (from their
        starts) and any assignment due."""
        loss = F.cross_entropy(self.network(images), labels)
        weight = self.dampening_weight()
        if weight:
            loss = loss + weight * dampening_loss(self.layers)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.fisher:
            self.fisher.observe()
        damped = self.lr_rule is not None and self.step >= self.config.lr_start * self.total_steps
        if damped:
            self.lr_rule.before_step()
        self.opt.step()
        if damped:
            self.lr_rule.after_step()
        if self.freezer and self.step >= self.config.freeze_start * self.total_steps:
            self.freezer.after_step()
        self.scheduler.step()
        self.step += 1
        if self.step in self.assign_steps:
            self.assign()

    def dampening_weight(self):
        """The dampening loss's weight at this step: 0 before `dampen_start`,
        then rising along a half cosine to `dampen` at the last step."""
        start = self.config.dampen_start * self.total_steps
        if not self.config.dampen or self.step < start:
            return 0.0
        progress = (self.step - start) / max(1.0, self.total_steps - start)
        return self.config.dampen * (1 - math.cos(math.pi * progress)) / 2

    def assign(self):
        """The extra bit, up to this assignment's share of the budget; levels
        are forgotten so that a move to the fine grid is not a switch."""
        stats = {}
        fraction = self.share * (self.assign_steps.index(self.step) + 1)
        count = assign_extra_bit(self.layers, self.counters, self.config, fraction, fisher=self.fisher,
                                 stats=stats)
        self.upgraded += count
        self.assignments.append(dict(stats, step=self.step, fraction=fraction, upgraded_weights=count))
        for counter in self.counters or []:
            counter.forget_levels()

    def save(self, path):
        with writing_file(path) as temporary:
            torch.save({
                "format": RETRAIN_STATE_FORMAT, "settings": self.settings, "epoch": self.epoch,
                "network": self.network.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": torch.get_rng_state(),
                "counters": [_counter_state(c) for c in self.counters] if self.tracker else None,
                "fisher": self.fisher.fisher if self.fisher else None,
                "fisher_steps": self.fisher.steps if self.fisher else 0,
                "freezer": (self.freezer.masks, self.freezer.values) if self.freezer else None,
                "step": self.step, "upgraded": self.upgraded, "history": self.history,
                "assignments": self.assignments}, temporary)

    def load(self, path, device):
        state = torch.load(path, map_location=device, weights_only=False)
        if state.get("format") != RETRAIN_STATE_FORMAT or state.get("settings") != self.settings:
            raise UserError(f"{path} holds the state of a different retraining; remove it "
                            "to start this one over")
        self.network.load_state_dict(state["network"])
        self.opt.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        for counter, saved in zip(self.counters or [], state["counters"] or []):
            _load_counter_state(counter, saved)
        if self.fisher:
            self.fisher.fisher, self.fisher.steps = state["fisher"], state["fisher_steps"]
        if self.freezer:
            self.freezer.masks, self.freezer.values = state["freezer"]
        self.step, self.upgraded, self.history, self.assignments, self.epoch = (
            state["step"], state["upgraded"], state["history"], state["assignments"], state["epoch"])


# MPQConfig's fields added after retraining states were first saved: at
# their defaults a config is the one it was before they existed, so they stay
# out of a state's settings and a state saved before them still continues.
LATER_FIELDS = ("freeze_start", "dampen", "dampen_start")


def _settings_config(config):
    fields = dataclasses.asdict(config)
    for name in LATER_FIELDS:
        if fields[name] == MPQConfig.__dataclass_fields__[name].default:
            del fields[name]
    return fields


def retrain(network, dataset, config, epochs, lr, batch_size=64, seed=0, optimizer="sgd",
            weight_decay=5e-4, device="cpu", progress=None, evaluate_each_epoch=True,
            state_path=None, stop=None, on_step=None):
    """QAT of `network` (quantized and calibrated) as `config` says. The caller
    has called `prepare` if the middle layers should start on the coarse grid.

    `state_path`: after every epoch, everything needed to continue (network,
    optimizer, schedule, trackers, step) is written there atomically, and a
    call that finds the file continues after its last epoch, with the same
    result as an uninterrupted run. `stop()`, asked after every epoch, ends
    the call early (`"stopped": True`; continue later from `state_path`).
    `progress(entry)` after every epoch, `on_step()` after every step.

    Returns a dict: per-epoch seconds (and fake-quant accuracy unless
    `evaluate_each_epoch` is off), switch summary, upgraded and frozen weight
    counts, the assignments, and the tracker (for histograms)."""
    from sw.quantize.train import TrainConfig, _optimizer, _schedule, evaluate
    device = torch.device(device)
    network.to(device)
    train_config = TrainConfig(optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size,
                               weight_decay=weight_decay)
    opt = _optimizer(train_config, network)
    steps_per_epoch = math.ceil(len(dataset.train_y) / batch_size)
    settings = {"config": _settings_config(config), "epochs": epochs, "lr": lr, "batch_size": batch_size,
                "seed": seed, "optimizer": optimizer, "weight_decay": weight_decay,
                "train_images": len(dataset.train_y)}
    run = _Retraining(network, config, opt, _schedule(train_config, opt, steps_per_epoch),
                      epochs * steps_per_epoch, settings)
    torch.manual_seed(seed)
    if state_path is not None and os.path.isfile(state_path):
        run.load(state_path, device)
    stopped = False
    for epoch in range(run.epoch, epochs):
        network.train()
        began = time.time()
        for images, labels in data_module.epoch_batches(dataset, batch_size, epoch, seed):
            run.train_step(images.to(device).float(), labels.to(device))
            if on_step:
                on_step()
        entry = {"epoch": epoch + 1, "seconds": time.time() - began}
        if evaluate_each_epoch:
            _, entry["fake_quant_accuracy"] = evaluate(network, dataset, device)
        run.history.append(entry)
        run.epoch = epoch + 1
        # Also after the last epoch: a run that dies while exporting or scoring
        # resumes with no epoch trained again.
        if state_path is not None:
            run.save(state_path)
        if progress:
            progress(entry)
        if stop is not None and epoch + 1 < epochs and stop():
            stopped = True
            break
    if run.tracker:
        run.tracker.remove()
    network.eval()
    return {"history": run.history, "upgraded_weights": run.upgraded,
            "frozen_weights": run.freezer.frozen() if run.freezer else 0, "assignments": run.assignments,
            "switches": run.tracker.summary() if run.tracker else None, "tracker": run.tracker,
            "fisher": run.fisher, "stopped": stopped}


# -- compression accounting ------------------------------------------------------------------------------
def weight_storage_bits(header, arrays):
    """Every bit the hardware stores for the weights of a model file, and the
    ideal per-weight storage for reference. Returns a dict:

    * `hardware`: per hardware group of 16 (the compiler's regrouping, each
      group at the precision that holds all its members), 16 lanes at that
      precision (a short group is padded: the weight memory row is 16 wide),
      plus a `TAG_BITS` tag per group (precision code and fold), plus the
      per-layer scales (a 16-bit requant multiplier per output channel and a
      6-bit requant shift per hidden layer; the integer bias is not counted:
      every precision has it alike);
    * `ideal`: each weight at its own precision, a 1-bit coarse/fine flag per
      model-file group (per weight when `group_size` is 1) in layers that mix
      grids, and the same scales;
    * `per_layer`: hardware bits and mean precision per layer;
    * `weights`: the weight count."""
    from sw.compile.network import layer_specs
    specs = layer_specs(header, arrays)
    group_size = int(header["group_size"])
    hardware = ideal = weights = 0
    per_layer = []
    for fields, layer, spec in zip(header["layers"], arrays, specs):
        precision = np.asarray(spec.precision)
        groups_count = precision.size
        scales = 0 if fields["act_bits"] is None else (
            MULTIPLIER_BITS * int(fields["out_channels"]) + REQUANT_SHIFT_BITS)
        layer_hw = int(precision.sum()) * HW_GROUP_SIZE + TAG_BITS * groups_count + scales
        bits = groups.expand_to_weights(torch.from_numpy(layer["weight_bits"].astype(np.int64)),
                                        layer["weight"].shape, group_size)
        shifts = layer["weight_shift"]
        mixed = len({(int(b), int(e)) for b, e in zip(layer["weight_bits"].flat, shifts.flat)}) > 1
        layer_ideal = int(bits.sum()) + (layer["weight_bits"].size if mixed else 0) + scales
        hardware += layer_hw
        ideal += layer_ideal
        weights += bits.numel()
        per_layer.append({"name": fields["name"], "weights": bits.numel(),
                          "hardware_bits": layer_hw, "ideal_bits": layer_ideal,
                          "mean_bits": float(bits.float().mean()),
                          "hardware_groups": groups_count,
                          "hardware_mean_bits": float(precision.mean())})
    return {"hardware": hardware, "ideal": ideal, "weights": weights, "per_layer": per_layer,
            "average_bits": sum(p["mean_bits"] * p["weights"] for p in per_layer) / weights,
            "hardware_average_bits": hardware / weights}


def uniform_like(header, arrays, bits=4):
    """The same network with its middle layers at uniform `bits` (zero
    weights: only the storage is meant), first and last layers as they are."""
    header = dict(header, layers=[dict(layer) for layer in header["layers"]], group_size=HW_GROUP_SIZE)
    result = []
    for index, layer in enumerate(arrays):
        shape = layer["weight"].shape
        group_dims = groups.group_shape(shape, HW_GROUP_SIZE)
        layer = dict(layer)
        first_or_last = index in (0, len(arrays) - 1)
        value = int(layer["weight_bits"].max()) if first_or_last else bits
        layer["weight"] = np.zeros(shape, dtype=np.int8)
        layer["weight_bits"] = np.full(group_dims, value, dtype=np.uint8)
        layer["weight_shift"] = np.zeros(group_dims, dtype=np.uint8)
        result.append(layer)
    return header, result


def compression_vs_uniform_w4(header, arrays):
    """Uniform W4 hardware bits over this model's hardware bits (same rules,
    same first and last layers)."""
    mpq = weight_storage_bits(header, arrays)
    uniform = weight_storage_bits(*uniform_like(header, arrays, 4))
    return uniform["hardware"] / mpq["hardware"], mpq, uniform


# -- one call: from a float checkpoint to a retrained MPQ network ---------------------------------------
def network_from_float(float_checkpoint, dataset, config, seed=0, act_bits=4, edge="w8", device="cpu"):
    """The quantized network of `config` (middle layers on the coarse grid
    when the extra bit is on, weight steps by `config.weight_step`), from a
    float training checkpoint, calibrated."""
    from sw.quantize.train import TrainConfig, _initial_network, load_checkpoint, model_spec
    spec = load_checkpoint(float_checkpoint)["spec"]
    base = f"w{config.base_bits}a{act_bits},first={edge},last={edge}"
    train_config = TrainConfig(model=spec["model"], dataset=spec["dataset"], width=spec["width"],
                               precision=config.precision(act_bits, edge) if config.extra_bit else base,
                               group_size=config.quantizer_group_size, init=str(float_checkpoint),
                               seed=seed, device=str(device))
    torch.manual_seed(seed)
    network = _initial_network(train_config, dataset, model_spec(train_config, dataset), torch.device(device))
    use_weight_step(network, config.weight_step)
    if config.extra_bit:
        prepare(network, config)
    return network


def use_weight_step(network, rule):
    """Every weight quantizer of `network` takes its step by `rule`:
    `learned` (LSQ) or `statistics` (from the weights at every forward; the
    calibration's initial step is the same formula, so nothing jumps)."""
    for layer in network.layers:
        layer.weight_quantizer.step_rule = rule


# The demo's setting (sim/demo.py): per hardware group, 2-bit base + extra bit,
# learning-rate rule after the last assignment.
DEMO_CONFIG = MPQConfig(base_bits=2, granularity="group", fraction=0.10, lr_rule="linear",
                        lr_start=0.6)
