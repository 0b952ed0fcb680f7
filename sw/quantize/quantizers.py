"""Quantizers: learned step sizes (LSQ, Esser et al. 2020) with the
straight-through estimator; for weights also a paper-era rule, a step
recomputed from the weights' statistics at every forward and not learned.

Every rule lives here once:

* rounding of a real value to an integer code: `fixedpoint.round_half_up`
  (ties towards +infinity, the same rule as the integer requantization);
* the straight-through estimator (`round_ste`, `ste_replace`): the forward
  pass takes the rounded (or integer-computed) value, the backward pass the
  gradient of the unrounded surrogate;
* LSQ's gradient scaling of a step size (`grad_scale`), `1/sqrt(N * Qp)`;
* the weight step: learned (`step_rule="learned"`, LSQ) or, with
  `step_rule="statistics"`, `2 mean|w| / sqrt(Qp)` (LSQ's initial value)
  recomputed from the current weights at every forward, without gradient.

Weights are signed: a group of precision `p` and shift `e` takes the values
`q << e` with `q` in `[-2**(p-1), 2**(p-1) - 1]` (see `groups.py`).
Activations are unsigned: `[0, 2**a - 1]`; the clamp at zero is the ReLU (a
residual branch without ReLU: signed, `[-2**(a-1), 2**(a-1) - 1]`).
"""

import math

import torch
from torch import nn

from common import fixedpoint
from sw.quantize import groups

# A step size never goes below this (it would make every code saturate).
MIN_STEP = 1e-8
# How a weight quantizer gets its step: learned (LSQ) or from the weights'
# statistics at every forward (the paper-era setting: STE, no learned step).
STEP_RULES = ("learned", "statistics")


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return fixedpoint.round_half_up(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _GradScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class _Replace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, surrogate, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _ClampReplace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, surrogate, low, high, value):
        if ctx.needs_input_grad[0]:     # (not under no_grad: evaluation, calibration)
            ctx.save_for_backward((surrogate >= low) & (surrogate <= high))
        return value

    @staticmethod
    def backward(ctx, grad):
        inside, = ctx.saved_tensors
        return grad * inside, None, None, None


def round_ste(x):
    """Round half up; the gradient passes straight through."""
    return _RoundSTE.apply(x)


def grad_scale(x, scale):
    """`x` unchanged forward; its gradient multiplied by `scale` backward."""
    return _GradScale.apply(x, float(scale))


def ste_replace(surrogate, value):
    """Forward: exactly `value` (computed without gradient, e.g. in integers);
    backward: the gradient of `surrogate` (the straight-through estimator)."""
    return _Replace.apply(surrogate, value.detach().to(surrogate.dtype))


def clamp_ste(surrogate, low, high, value):
    """`ste_replace(surrogate.clamp(low, high), value)` in one step: forward
    `value`, backward the gradient of the clamp (passed where `low <=
    surrogate <= high`, as `torch.clamp`'s), without building the clamped
    tensor or its three-pass backward."""
    return _ClampReplace.apply(surrogate, low, high, value.detach().to(surrogate.dtype))


def step_size(step):
    """The step a learned step parameter stands for: its magnitude, at least
    MIN_STEP. SGD with momentum can carry a small step through zero in one
    update; the magnitude keeps it a step with a gradient, where clamping at
    MIN_STEP would hold it there with none (every code saturated for the
    rest of training). Positive steps are unchanged, gradient included."""
    return step.abs().clamp(min=MIN_STEP)


def signed_range(bits):
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def unsigned_range(bits):
    return 0, (1 << bits) - 1


class WeightQuantizer(nn.Module):
    """Signed weights in groups: per-layer fine step `step`, per-group
    precision `group_bits` and left shift `group_shift` (buffers, so a
    mixed-precision pass can change them without touching this code).

    The learned parameter is the step in units of `step_unit`: the first
    layer's weights carry the folded input normalisation (about 1/64 of the
    float weights), and a parameter of ordinary magnitude keeps its learning
    rate comparable to the other layers'.

    With `step_rule="statistics"` the step is not learned: every forward
    computes `2 mean|w| / sqrt(Qp)` from the weights it quantizes (`Qp` of
    `step_bits`, the precision the layer was built with, so a mixed-precision
    pass that changes `group_bits` does not move the step), without gradient,
    and stores it in `step`, so the export and every reader of `step` see the
    step the forward used."""

    def __init__(self, weight_shape, bits, group_size, step_unit=1.0, step_rule="learned"):
        super().__init__()
        self.weight_shape = tuple(weight_shape)
        self.group_size = int(group_size)
        self.step_bits = int(bits)
        self.step_rule = step_rule
        shape = groups.group_shape(weight_shape, group_size)
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("group_bits", torch.full(shape, int(bits), dtype=torch.int64))
        self.register_buffer("group_shift", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("step_unit", torch.tensor(float(step_unit)))

    @property
    def step_rule(self):
        return self._step_rule

    @step_rule.setter
    def step_rule(self, rule):
        if rule not in STEP_RULES:
            raise ValueError(f"step_rule must be one of {STEP_RULES}, got {rule!r}")
        self._step_rule = rule

    @property
    def max_bits(self):
        return int(self.group_bits.max())

    @torch.no_grad()
    def init_step(self, weight):
        """LSQ's initial step, 2 mean|w| / sqrt(Qp), for the widest groups."""
        qmax = signed_range(self.max_bits)[1]
        step = 2 * weight.abs().mean().item() / math.sqrt(qmax) / self.step_unit.item()
        self.step.fill_(max(step, MIN_STEP))

    @torch.no_grad()
    def statistics_step(self, weight):
        """The statistics rule's step (real units, no gradient): LSQ's initial
        value `2 mean|w| / sqrt(Qp)` for `step_bits`, on the current weights."""
        qmax = signed_range(self.step_bits)[1]
        step = 2 * weight.detach().abs().mean() / math.sqrt(qmax)
        return torch.clamp(step, min=MIN_STEP * float(self.step_unit))

    def _ranges(self, device):
        bits = groups.expand_to_weights(self.group_bits, self.weight_shape, self.group_size)
        shift = groups.expand_to_weights(self.group_shift, self.weight_shape, self.group_size)
        low = -torch.pow(2.0, (bits - 1).float())
        high = -low - 1
        unit = torch.pow(2.0, shift.float())
        return low.to(device), high.to(device), unit.to(device)

    def forward(self, weight):
        """Returns `(w_int, step)`: `w_int` holds the integer weights `q << e`
        (as floats, exactly), `step` the per-layer step (learned: with LSQ
        gradient scaling; statistics: a constant); the real weights are
        `w_int * step`."""
        if self.step_rule == "statistics":
            step = self.statistics_step(weight)
            with torch.no_grad():
                self.step.copy_(step / self.step_unit)
        else:
            qmax = signed_range(self.max_bits)[1]
            step = grad_scale(step_size(self.step), 1.0 / math.sqrt(weight.numel() * qmax))
            step = step * self.step_unit
        low, high, unit = self._ranges(weight.device)
        q = round_ste(torch.clamp(weight / (step * unit), low, high))
        return q * unit, step

    @torch.no_grad()
    def export(self, weight):
        """`(q, group_bits, group_shift)` as int64 tensors; `q` unshifted."""
        w_int, _ = self.forward(weight)
        _, _, unit = self._ranges(weight.device)
        q = (w_int / unit).to(torch.int64)
        return q, self.group_bits.clone(), self.group_shift.clone()


class ActivationQuantizer(nn.Module):
    """`bits`-bit activations with a learned per-layer step: unsigned after a
    ReLU, signed (two's complement) for a layer without one, whose output is
    only ever a residual branch (`fixedpoint.activation_range`)."""

    def __init__(self, bits, signed=False):
        super().__init__()
        self.bits = int(bits)
        self.signed = bool(signed)
        self.step = nn.Parameter(torch.tensor(1.0))

    @property
    def qmin(self):
        return fixedpoint.activation_range(self.bits, self.signed)[0]

    @property
    def qmax(self):
        return fixedpoint.activation_range(self.bits, self.signed)[1]

    @torch.no_grad()
    def init_step(self, x):
        """LSQ's initial step, 2 mean|x| / sqrt(Qp)."""
        self.step.fill_(max(2 * x.abs().mean().item() / math.sqrt(self.qmax), MIN_STEP))

    def scaled_step(self, features):
        """The step with LSQ's gradient scale for `features` values per sample."""
        return grad_scale(step_size(self.step), 1.0 / math.sqrt(features * self.qmax))

    def forward(self, x):
        """Returns `(codes, step)`: integer codes in `[qmin, qmax]` (as floats)
        and the step; the real activations are `codes * step`."""
        step = self.scaled_step(x[0].numel())
        codes = round_ste(torch.clamp(x / step, self.qmin, self.qmax))
        return codes, step
