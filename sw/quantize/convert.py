"""The user's own network: trace it, map it onto quantized layers, return the
network to retrain and export.

    qnet = quantize_network(model, parse_precision("w4a4,first=w8,last=w8"),
                            input_shape=(3, 32, 32), input_mean=..., input_std=...)

`sw/quantize/graph.py` traces the network (torch.fx) and groups it into
layers: Conv2d / Linear, each optionally followed by BatchNorm, a residual add,
ReLU and MaxPool2d; flatten or global average pooling before linear layers.
Plain chains (VGG) and residual networks (ResNet-8/20, torchvision's
BasicBlock with `downsample`) take the same path; anything else raises
`UserError` naming the module. A leading `Normalize` module (or
`input_mean`/`input_std`) gives the input normalisation, which is folded into
the first layer so the quantized network takes raw 0..255 pixels.

The quantized layers wrap the user's modules (their weights train in place);
batch norm after the last layer is folded into a copy of it.
"""

import copy

import torch
from torch import nn

from common.errors import UserError
from sw.quantize.config import INPUT_BITS, PrecisionConfig
from sw.quantize.graph import IMAGE, plan_layers
from sw.quantize.layers import QuantLayer


def _fold_bn_into_linear(linear, bn):
    """A copy of `linear` with the eval-mode batch norm after it folded in."""
    folded = copy.deepcopy(linear)
    with torch.no_grad():
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
            1 / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias if bn.affine else torch.zeros_like(gain)
        bias = linear.bias if linear.bias is not None else torch.zeros_like(gain)
        if folded.bias is None:
            folded.bias = nn.Parameter(torch.zeros_like(gain))
        folded.weight.mul_(gain.reshape(-1, *([1] * (linear.weight.dim() - 1))))
        folded.bias.copy_((bias - bn.running_mean) * gain + shift)
    return folded


class QuantNetwork(nn.Module):
    """A graph of QuantLayers taking raw 0..255 pixels (uint8 or float).

    `sources[i]` is `(input, residual)` of layer `i`: the index of the layer
    whose output it reads (`graph.IMAGE` for the image) and of the layer whose
    output it adds before its clamp (or None). Every source comes before the
    layer that reads it; the last layer returns the logits."""

    def __init__(self, layers, input_shape, precision, sources=None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.precision = precision
        self.sources = (list(sources) if sources is not None
                        else [(i - 1 if i else IMAGE, None) for i in range(len(layers))])

    def run(self, x):
        """Yields `(index, layer, output)` layer by layer, where `output` is
        `(codes, step)` for a hidden layer and `(logits, logits_int)` for the
        last one."""
        outputs = {IMAGE: (x.float(), torch.ones((), device=x.device))}
        for index, (layer, (source, residual)) in enumerate(zip(self.layers, self.sources)):
            codes, step = outputs[source]
            output = layer(codes, step, outputs[residual] if residual is not None else None)
            outputs[index] = output
            yield index, layer, output

    def forward(self, x, return_codes=False):
        """Float logits for the loss (the integer logits times the last step).
        With `return_codes`, also the int64 codes after every hidden layer
        and the integer logits."""
        trace = []
        for _, layer, output in self.run(x):
            if return_codes and not layer.is_last:
                trace.append(output[0].detach().to(torch.int64))
        logits, logits_int = output
        if return_codes:
            return logits, trace, logits_int
        return logits


def _input_norm_for(first_op, mean, std, input_shape):
    """`(scale, offset)` folding `(x / 255 - mean) / std` into the first layer."""
    channels = input_shape[0]
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
    if mean.numel() == 1:
        mean = mean.expand(channels)
    if std.numel() == 1:
        std = std.expand(channels)
    if mean.numel() != channels or std.numel() != channels:
        raise UserError(f"input normalisation has {mean.numel()} means and {std.numel()} stds "
                        f"for {channels} input channels")
    scale = 1.0 / (255.0 * std)
    offset = mean / std
    if isinstance(first_op, nn.Linear):  # per input feature, in (C, H, W) order
        per_channel = int(torch.tensor(input_shape[1:]).prod()) if len(input_shape) > 1 else 1
        scale = scale.repeat_interleave(per_channel)
        offset = offset.repeat_interleave(per_channel)
    return scale, offset


def check_input_normalisation(mean, std):
    """Refuse normalisation constants in pixel units. `(x / 255 - mean) / std`
    takes fractions of 255 (0.4914, not 125.3); with pixel-unit constants
    the normalised input is almost the same for every pixel (about -2 on
    CIFAR-10), and the network cannot learn, with no error anywhere. A pixel
    fraction's mean lies in [0, 1] and its std in (0, 0.5], so anything
    above 1 is pixel units."""
    if (mean is None) != (std is None):
        raise UserError("give both input_mean and input_std (fractions of 255), or neither")
    if mean is None:
        return
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    std = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    if not (torch.isfinite(mean).all() and torch.isfinite(std).all()) or (std <= 0).any():
        raise UserError(f"input normalisation needs finite means and positive stds, got "
                        f"mean {mean.tolist()}, std {std.tolist()}")
    if (mean.abs() > 1).any() or (std > 1).any():
        def listed(values):
            return "[" + ", ".join(f"{value:.4g}" for value in values.tolist()) + "]"
        raise UserError(f"input normalisation mean {listed(mean)}, std {listed(std)} looks like pixel "
                        f"units; it is in fractions of 255: divide by 255 (mean {listed(mean / 255)}, "
                        f"std {listed(std / 255)})")


def quantize_network(model, precision, input_shape, input_mean=None, input_std=None):
    """The quantized form of `model` for retraining and export. `input_shape`
    is `(C, H, W)` of one raw image.

    Without a leading `Normalize` module and without `input_mean`/`input_std`
    the network is taken to expect pixels / 255."""
    if not isinstance(precision, PrecisionConfig) or precision.is_float:
        raise UserError("quantize_network needs a quantized precision such as w4a4, not float")
    plans, normalize = plan_layers(model, input_shape)
    if normalize is not None:
        if input_mean is not None or input_std is not None:
            raise UserError("the network starts with Normalize: do not also pass input_mean/input_std")
        input_mean, input_std = normalize.mean, normalize.std
    check_input_normalisation(input_mean, input_std)
    if input_mean is None:
        input_mean, input_std = 0.0, 1.0
    last = plans[-1]
    if last.bn is not None:
        if last.kind != "linear":
            raise UserError(f"cannot map {last.where}: batch norm after a last convolution")
        last.op, last.bn = _fold_bn_into_linear(last.op, last.bn), None
    precision.check_layer_keys([plan.name for plan in plans])
    layers, act_bits = [], []
    for index, plan in enumerate(plans):
        bits = precision.layer(index, plan.name, len(plans))
        norm = _input_norm_for(plan.op, input_mean, input_std, input_shape) if index == 0 else None
        layers.append(QuantLayer(plan.op, plan.bn, plan.pool, bits.weight_bits,
                                 bits.act_bits, precision.group_size,
                                 INPUT_BITS if plan.input == IMAGE else act_bits[plan.input],
                                 flatten_input=plan.flatten, input_norm=norm, name=plan.name,
                                 relu=plan.relu or index == len(plans) - 1,
                                 residual=plan.residual is not None,
                                 global_pool_area=plan.global_pool_area))
        act_bits.append(bits.act_bits)
    network = QuantNetwork(layers, input_shape, precision,
                           [(plan.input, plan.residual) for plan in plans])
    for layer in layers:
        weight, _ = layer.folded_weight_bias()
        layer.weight_quantizer.init_step(weight.detach())
    return network


@torch.no_grad()
def calibrate(network, images):
    """Initial activation steps from one batch of raw images (LSQ's rule on the
    real pre-quantization activations), layer by layer."""
    was_training = network.training
    network.eval()
    outputs = {IMAGE: (images.float(), torch.ones((), device=images.device))}
    for index, (layer, (source, residual)) in enumerate(zip(network.layers, network.sources)):
        codes, step = outputs[source]
        branch = outputs[residual] if residual is not None else None
        if not layer.is_last:
            layer.act_quantizer.init_step(layer.real_output(codes, step, branch))
        outputs[index] = layer(codes, step, branch)
    network.train(was_training)
    return network


@torch.no_grad()
def reestimate_batch_norm(network, batches):
    """Batch norm's running statistics recomputed for the network as it now
    quantizes: every running mean and variance reset, then the cumulative
    average over `batches` (raw image tensors; forward in training mode,
    without gradient; nothing else changes). Weights that oscillate across
    a quantization threshold until the last steps leave running statistics
    that average several states of the weights; re-estimated, they are the
    final state's (Nagel et al. 2022, "Overcoming oscillations in
    quantization-aware training")."""
    norms = [layer.bn for layer in network.layers if layer.bn is not None]
    momenta = [bn.momentum for bn in norms]
    was_training = network.training
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    network.train()
    try:
        for images in batches:
            network(images.float())
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        network.train(was_training)
    return network

