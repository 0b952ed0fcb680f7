"""Quantized layers: a Conv2d or Linear, its batch norm, ReLU and max-pooling,
computed so that the fake-quant forward is bit-exact with the integer model.

Between layers the network passes integer activation codes (held exactly in
float tensors, so gradients flow) and their step. A layer:

1. quantizes its weights to integers (`WeightQuantizer`) and accumulates
   `acc = conv(codes, w_int)` in float. The operands are small integers, so
   the float sum is exact while `|acc| < 2**24`; where the shapes allow a
   larger accumulator the layer accumulates in float64 (exact below 2**53);
2. requantizes with the integer contract (`common.fixedpoint.requantize`) on the
   int64 accumulator, with the per-channel multiplier, per-layer shift and
   integer bias that the export writes, so the forward value is exactly the
   integer reference's;
3. takes its gradient from the real-valued surrogate
   `clamp(acc * r + c, 0, 2**a - 1)` (straight-through estimator), where
   `r = s_in s_w gamma / (sigma s_a)` and `c = (gamma (b - mu) / sigma + beta) / s_a`
   carry batch norm (batch statistics in training, running ones in eval);
4. max-pools the codes.

The last layer returns logits: `acc + bias_int` (integer bias added), scaled by
`s_in s_w` for the loss.
"""


import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common import fixedpoint
from sw.quantize.quantizers import ActivationQuantizer, WeightQuantizer, clamp_ste, ste_replace, step_size

# Integer bias range (it fits the compiler's 32-bit bias registers).
BIAS_MAX = (1 << 31) - 1
# Float32 holds every integer below this exactly.
FLOAT32_EXACT = 1 << 24
# The 32-bit integer carrier of requantization in training holds up to this.
INT32_MAX = (1 << 31) - 1



def batch_statistics(x):
    """Per-channel (dim 1) mean and biased variance of `x`, with gradient:
    the mean, then the mean of the centred squares. `Tensor.var` over the
    dims (0, 2, 3) of a map is about 4x slower on CPU; two passes keep the
    variance as accurate."""
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dim=dims, keepdim=True)
    centred = x - mean
    return mean.flatten(), (centred * centred).mean(dim=dims)


@torch.no_grad()
def update_running_statistics(bn, mean, var, count):
    """Update `bn`'s running mean and variance from a batch's `mean` and
    biased `var` over `count` values per channel, by PyTorch's own rule
    (`F.batch_norm` in training mode): the same momentum, unbiased running
    variance, and `momentum=None` as a cumulative average."""
    bn.num_batches_tracked += 1
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    unbiased = var.detach() * (count / max(count - 1, 1))
    bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
    bn.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


class QuantLayer(nn.Module):
    """One layer of the integer contract, wrapping the user's float modules."""

    def __init__(self, op, bn, pool, weight_bits, act_bits, group_size, input_bits,
                 flatten_input=False, input_norm=None, name="", relu=True, residual=False,
                 global_pool_area=None):
        super().__init__()
        self.op = op            # nn.Conv2d or nn.Linear (the user's module, trained in place)
        self.bn = bn            # nn.BatchNorm1d/2d or None
        self.pool = pool        # nn.MaxPool2d or None
        self.name = name
        self.is_conv = isinstance(op, nn.Conv2d)
        self.flatten_input = bool(flatten_input)
        # Global average pooling before a linear layer: the input map's H*W,
        # summed in integers; the 1/(H*W) lives in the accumulator's scale.
        self.global_pool_area = None if global_pool_area is None else int(global_pool_area)
        self.relu = bool(relu)           # False: signed output codes (a residual branch)
        self.residual = bool(residual)   # a second input added in requantization
        self.input_bits = int(input_bits)
        # Input normalisation folded into this layer: x_norm = x * scale - offset,
        # per input channel (conv) or per input feature (linear).
        step_unit = 1.0
        if input_norm is not None:
            scale, offset = input_norm
            step_unit = float(torch.as_tensor(scale, dtype=torch.float32).mean())
            self.register_buffer("input_scale", torch.as_tensor(scale, dtype=torch.float32))
            self.register_buffer("input_offset", torch.as_tensor(offset, dtype=torch.float32))
        else:
            self.input_scale = None
            self.input_offset = None
        self.weight_quantizer = WeightQuantizer(op.weight.shape, weight_bits, group_size, step_unit)
        self.act_quantizer = (ActivationQuantizer(act_bits, signed=not self.relu)
                              if act_bits is not None else None)

    @property
    def is_last(self):
        return self.act_quantizer is None

    # -- the float parameters with the input normalisation folded in --------
    def folded_weight_bias(self):
        weight = self.op.weight
        bias = self.op.bias if self.op.bias is not None else weight.new_zeros(weight.shape[0])
        if self.input_scale is None:
            return weight, bias
        shape = (1, -1, 1, 1) if self.is_conv else (1, -1)
        folded = weight * self.input_scale.reshape(shape)
        dims = tuple(range(1, weight.dim()))
        bias = bias - (weight * self.input_offset.reshape(shape)).sum(dim=dims)
        return folded, bias

    # -- accumulation --------------------------------------------------------
    def accumulator_bound(self):
        """Largest |acc| the shapes and precisions allow."""
        fan_in = self.op.weight[0].numel() * (self.global_pool_area or 1)
        quantizer = self.weight_quantizer
        weight_max = 1 << int((quantizer.group_bits - 1 + quantizer.group_shift).max())
        return fan_in * ((1 << self.input_bits) - 1) * weight_max

    def _linear_op(self, x, w):
        if self.is_conv:
            op = self.op
            return F.conv2d(x, w, None, op.stride, op.padding, op.dilation, op.groups)
        return F.linear(x, w)

    def accumulate(self, codes, w_int):
        """`(acc, exact)`: the float accumulator (with gradient) and the same
        values exactly, without gradient (float32 below 2**24, else float64),
        for the integer carrier the requantization picks."""
        if self.accumulator_bound() < FLOAT32_EXACT:
            acc = self._linear_op(codes, w_int)
            return acc, acc.detach()
        acc64 = self._linear_op(codes.double(), w_int.double())
        return acc64.to(codes.dtype), acc64.detach()

    def integer_carrier(self, bias_int, multiplier, shift, residual=None, residual_multiplier=None,
                        residual_shift=0):
        """The integer type that computes this layer's requantization exactly:
        int32 where `fixedpoint.requantize_sum_magnitude` proves every
        intermediate fits (most layers: 2-3x faster than int64 on a CPU,
        where a 64-bit multiply does not vectorise), else int64."""
        magnitude = fixedpoint.requantize_sum_magnitude(
            self.accumulator_bound(), int(bias_int.abs().max()), int(multiplier.abs().max()), shift,
            0 if residual is None else int(residual.detach().abs().max()),
            0 if residual_multiplier is None else int(residual_multiplier.abs().max()), residual_shift)
        return torch.int32 if magnitude <= INT32_MAX else torch.int64

    # -- batch norm and requantization parameters -----------------------------
    def _channel_shape(self):
        return (1, -1, 1, 1) if self.is_conv else (1, -1)

    def _bn_affine(self, stats=None):
        """`(g, mu, beta)`: BN as `g * (y - mu) + beta`, with the batch's
        `stats` `(mean, var, count)` in training (running statistics
        updated), the running ones otherwise."""
        bn = self.bn
        channels = self.op.weight.shape[0]
        if bn is None:
            one = self.op.weight.new_ones(channels)
            return one, torch.zeros_like(one), torch.zeros_like(one)
        if self.training and stats is not None:   # (sw/quantize/convert.py requires running stats)
            mean, var, count = stats
            update_running_statistics(bn, mean, var, count)
        else:
            mean, var = bn.running_mean, bn.running_var
        gamma = bn.weight if bn.affine else torch.ones_like(mean)
        beta = bn.bias if bn.affine else torch.zeros_like(mean)
        return gamma / torch.sqrt(var + bn.eps), mean, beta

    def _batch_statistics(self, acc, acc_scale, bias):
        """The batch's `(mean, var, count)` of `y = acc * acc_scale + bias`
        per channel, from the accumulator's own (y is never built: one pass
        less forward and backward; the same function of acc, steps and bias)."""
        mean, var = batch_statistics(acc)
        return mean * acc_scale + bias, var * acc_scale * acc_scale, acc.numel() // acc.shape[1]

    def integer_requant(self, r, c):
        """Per-channel multiplier, per-layer shift and integer bias for the
        real map `acc * r + c`: `(acc + bias) * multiplier >> shift`.

        A channel steeper than `2**a` codes per accumulator unit (`a` the
        output bits) is a step: its real map goes from 0 to the top code
        between two neighbouring accumulators. Such a channel (batch norm's
        variance near zero, a huge gamma, an activation step collapsed
        towards zero in training) does not set the layer's shift, so the
        other channels keep their precision, and its multiplier saturates at
        the 16-bit limit, still at least `2**(a+1)` codes per unit: still a
        step. Its bias is its real zero crossing, `c / r` rounded, so the
        saturated channel differs from its real map at no more than one
        accumulator value (where the real map passes through codes between 0
        and the top); training, export and the integer reference all take
        these integers, so they stay bit-exact with each other."""
        reals = r.detach().double().cpu().numpy()
        offset = c.detach().double().cpu().numpy()
        broken = np.flatnonzero(~(np.isfinite(reals) & np.isfinite(offset)))
        if broken.size:   # no integer stands for NaN: diverged training, not a degenerate channel
            channel = int(broken[0])
            raise ValueError(f"layer {self.name!r} channel {channel}: requantization scale "
                             f"{reals[channel]} and offset {offset[channel]} are not finite (NaN or "
                             f"infinite weights or batch-norm statistics: training diverged; lower "
                             f"the learning rate or go back to an earlier checkpoint)")
        multiplier, shift, saturated = fixedpoint.quantize_multipliers(
            reals, ceiling=float(1 << self.act_quantizer.bits))
        # The bias is the offset in accumulator units: divided by the scale
        # the multiplier gives the channel, or by its real scale where the
        # multiplier saturated (the saturated scale would move the step).
        scale = np.where(saturated, reals, multiplier / float(1 << shift))
        with np.errstate(divide="ignore", invalid="ignore"):
            bias = np.where(multiplier != 0, offset / scale, 0.0)
        bias = np.clip(fixedpoint.round_half_up(bias), -BIAS_MAX, BIAS_MAX).astype(np.int64)
        device = r.device
        return (torch.from_numpy(multiplier).to(device), shift, torch.from_numpy(bias).to(device))

    @staticmethod
    def integer_bias(bias_real):
        values = fixedpoint.round_half_up(bias_real.detach().double())
        return values.clamp(-BIAS_MAX, BIAS_MAX).to(torch.int64)

    # -- forward ---------------------------------------------------------------
    def _pool_input(self, codes, in_step):
        """Flatten, or sum over the map (global average pooling: the codes'
        sum is exact, and dividing the step by H*W makes it the mean)."""
        if self.global_pool_area is not None:
            if codes.dim() != 4 or codes.shape[2] * codes.shape[3] != self.global_pool_area:
                raise ValueError(f"layer {self.name}: global pooling of a {tuple(codes.shape[1:])} "
                                 f"input, expected {self.global_pool_area} pixels")
            return codes.sum(dim=(2, 3)), in_step / self.global_pool_area
        if self.flatten_input:
            return codes.flatten(1), in_step
        return codes, in_step

    def residual_requant(self, shift, step, residual_step, channels):
        """Multiplier and shift of the residual branch: its codes times
        `residual_step / step`, under the layer's `shift`."""
        ratio = (residual_step / step).detach().double().cpu().reshape(1).expand(channels)
        multiplier, residual_shift = fixedpoint.quantize_residual_multipliers(ratio.numpy(), shift)
        return torch.from_numpy(multiplier), residual_shift

    def forward(self, codes, in_step, residual=None):
        """`codes`: integer input codes (float tensor); `in_step`: their step;
        `residual`: `(codes, step)` of the branch added before the clamp (a
        residual layer only). Returns `(codes, step)` for a hidden layer,
        `(logits, logits_int)` for the last one."""
        codes, in_step = self._pool_input(codes, in_step)
        weight, bias = self.folded_weight_bias()
        w_int, w_step = self.weight_quantizer(weight)
        acc, exact = self.accumulate(codes, w_int)
        acc_scale = in_step * w_step
        shape = self._channel_shape()
        if self.is_last:
            bias_real = bias / acc_scale
            bias_int = self.integer_bias(bias_real)
            logits_int = exact.to(torch.int64) + bias_int.reshape(shape)
            surrogate = (acc + bias_real.reshape(shape)) * acc_scale
            logits = ste_replace(surrogate, logits_int.to(acc.dtype) * acc_scale.detach())
            return logits, logits_int
        step = self.act_quantizer.scaled_step(acc[0].numel())
        stats = (self._batch_statistics(acc, acc_scale, bias)
                 if self.training and self.bn is not None else None)
        g, mean, beta = self._bn_affine(stats)
        r = acc_scale * g / step
        c = (g * (bias - mean) + beta) / step
        multiplier, shift, bias_int = self.integer_requant(r, c)
        quantizer = self.act_quantizer
        real = torch.addcmul(c.reshape(shape), acc, r.reshape(shape))   # acc * r + c, one pass
        branch = {}
        if self.residual:
            res_codes, res_step = residual
            res_multiplier, res_shift = self.residual_requant(shift, step, res_step, len(r))
            branch = dict(residual=res_codes.detach(),
                          residual_multiplier=res_multiplier.to(acc.device).reshape(shape),
                          residual_shift=res_shift)
            real = real + res_codes * (res_step / step)
        carrier = self.integer_carrier(bias_int, multiplier, shift, **branch)
        if branch:
            branch.update(residual=branch["residual"].to(carrier),
                          residual_multiplier=branch["residual_multiplier"].to(carrier))
        codes_int = fixedpoint.requantize_sum(exact.to(carrier), bias_int.reshape(shape).to(carrier),
                                              multiplier.reshape(shape).to(carrier), shift,
                                              quantizer.bits, signed=quantizer.signed, **branch)
        out = clamp_ste(real, quantizer.qmin, quantizer.qmax, codes_int)
        if self.pool is not None:
            out = F.max_pool2d(out, self.pool.kernel_size, self.pool.stride, self.pool.padding)
        return out, step

    @torch.no_grad()
    def real_output(self, codes, in_step, residual=None):
        """The real activations before quantization, batch norm on the batch's
        own statistics (without updating the running ones): what calibration
        sets the initial activation step from."""
        codes, in_step = self._pool_input(codes, in_step)
        weight, bias = self.folded_weight_bias()
        w_int, w_step = self.weight_quantizer(weight)
        acc, _ = self.accumulate(codes, w_int)
        shape = self._channel_shape()
        y = acc * (in_step * w_step) + bias.reshape(shape)
        if self.bn is not None:
            mean, var = batch_statistics(y)
            bn = self.bn
            g = (bn.weight if bn.affine else 1.0) / torch.sqrt(var + bn.eps)
            y = (y - mean.reshape(shape)) * g.reshape(shape)
            if bn.affine:
                y = y + bn.bias.reshape(shape)
        if residual is not None:
            y = y + residual[0] * residual[1]
        return y.clamp(min=0) if self.relu else y

    # -- export ------------------------------------------------------------------
    @torch.no_grad()
    def export(self, in_step, residual_step=None):
        """The layer's integers (eval mode: running BN statistics), and the
        step of its output activations. Same functions as `forward`."""
        if self.global_pool_area is not None:
            in_step = in_step / self.global_pool_area
        weight, bias = self.folded_weight_bias()
        q, group_bits, group_shift = self.weight_quantizer.export(weight)
        _, w_step = self.weight_quantizer(weight)
        acc_scale = in_step * w_step
        arrays = {"weight": q, "weight_bits": group_bits, "weight_shift": group_shift}
        op = self.op
        fields = {
            "name": self.name,
            "kind": "conv2d" if self.is_conv else "linear",
            "in_channels": int(op.weight.shape[1]),
            "out_channels": int(op.weight.shape[0]),
            "flatten_input": self.flatten_input,
            "global_pool_input": self.global_pool_area is not None,
            "input_bits": self.input_bits,
            "weight_step": float(w_step),
        }
        if self.is_conv:
            fields.update(kernel_size=list(op.kernel_size), stride=list(op.stride),
                          padding=list(op.padding))
        if self.is_last:
            arrays["bias"] = self.integer_bias(bias / acc_scale)
            fields.update(act_bits=None, requant_shift=None, pool=None,
                          output_step=float(acc_scale))
            return fields, arrays, None
        step = step_size(self.act_quantizer.step)
        g, mean, beta = self._bn_affine()
        multiplier, shift, bias_int = self.integer_requant(acc_scale * g / step,
                                                           (g * (bias - mean) + beta) / step)
        arrays.update(bias=bias_int, requant_multiplier=multiplier)
        fields.update(act_signed=not self.relu, residual_shift=None)
        if self.residual:
            res_multiplier, res_shift = self.residual_requant(shift, step, residual_step, len(bias_int))
            arrays["residual_multiplier"] = res_multiplier
            fields["residual_shift"] = int(res_shift)
        pool = None
        if self.pool is not None:
            pool = {"kernel_size": list(_pair(self.pool.kernel_size)),
                    "stride": list(_pair(self.pool.stride)),
                    "padding": list(_pair(self.pool.padding))}
        fields.update(act_bits=self.act_quantizer.bits, requant_shift=int(shift), pool=pool,
                      output_step=float(step))
        return fields, arrays, step


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)
