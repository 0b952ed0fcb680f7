"""The user's own network: trace it, map it onto quantized layers, return the
network to retrain and export.

    qnet = quantize_network(model, parse_precision("w4a4,first=w8,last=w8"),
                            input_shape=(3, 32, 32), input_mean=..., input_std=...)

The network must be a chain (torch.fx traces it) of Conv2d / Linear layers,
each optionally followed by BatchNorm, then ReLU (every layer but the last:
activations are unsigned), then optionally MaxPool2d; Flatten (or
`x.view(x.size(0), -1)`) between the convolutions and the linear layers;
Dropout and Identity are dropped. A leading `Normalize` module (or
`input_mean`/`input_std`) gives the input normalisation, which is folded into
the first layer so the quantized network takes raw 0..255 pixels. Anything else
raises `UserError` naming the module and its position.

The quantized layers wrap the user's modules (their weights train in place);
batch norm after the last layer is folded into a copy of it.
"""

import copy

import torch
import torch.nn.functional as F
from torch import fx, nn

from common.errors import UserError
from sw.quantize.config import INPUT_BITS, PrecisionConfig
from sw.quantize.layers import QuantLayer
from sw.quantize.models import Normalize

_SUPPORTED = ("Conv2d, Linear, BatchNorm1d/2d, ReLU, MaxPool2d, Flatten, Dropout, Identity "
              "and a leading Normalize")


def _classify(node, modules):
    """The op kind of one traced node, or None for bookkeeping nodes."""
    if node.op == "call_module":
        module = modules[node.target]
        kinds = [(Normalize, "normalize"), (nn.Conv2d, "conv"), (nn.Linear, "linear"),
                 (nn.BatchNorm2d, "bn2d"), (nn.BatchNorm1d, "bn1d"), (nn.ReLU, "relu"),
                 (nn.MaxPool2d, "maxpool"), (nn.Flatten, "flatten"), (nn.Dropout, "skip"),
                 (nn.Identity, "skip")]
        for cls, kind in kinds:
            if type(module) is cls:
                return kind, module
        return None, module
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu):
            return "relu", None
        if node.target is torch.flatten:
            return "flatten", None
        if node.target in (F.dropout,):
            return "skip", None
        return None, None
    if node.op == "call_method":
        if node.target in ("relu",):
            return "relu", None
        if node.target in ("view", "reshape", "flatten"):
            return "flatten", None
        if node.target == "size":
            return "aux", None
        return None, None
    return None, None


def _describe(node, module):
    if node.op == "call_module":
        return f"`{node.target}` ({type(module).__name__})"
    if node.op == "call_function":
        return f"`{getattr(node.target, '__name__', node.target)}` (function)"
    return f"`.{node.target}()` (method)"


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping Normalize as one module."""

    def is_leaf_module(self, module, qualified_name):
        return isinstance(module, Normalize) or super().is_leaf_module(module, qualified_name)


def trace_chain(model):
    """The network as a list of `(position, kind, name, module)` in execution order."""
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # fx raises many types for untraceable code
        raise UserError(f"cannot trace the network with torch.fx ({type(error).__name__}: {error}); "
                        f"the flow takes chains of {_SUPPORTED}") from None
    modules = dict(model.named_modules())
    chain, previous, position = [], None, 0
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise UserError("the network must take one input (the image)")
            previous = node
            continue
        if node.op == "output":
            if node.args[0] is not previous:
                raise UserError("the network's output must be its last layer's output")
            continue
        kind, module = _classify(node, modules)
        if kind == "aux":
            continue
        position += 1
        where = f"at position {position} ({_describe(node, module)})"
        if kind is None:
            raise UserError(f"cannot map {where}: the flow takes {_SUPPORTED}")
        data_args = [a for a in node.args if isinstance(a, fx.Node) and
                     not (a.op == "call_method" and a.target == "size")]
        if not data_args or data_args[0] is not previous or len(data_args) > 1:
            raise UserError(f"cannot map {where}: the flow takes a plain chain of layers "
                            "(no branches, residual additions or concatenations)")
        if kind == "flatten" and node.op == "call_function":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                raise UserError(f"cannot map {where}: flatten must keep the batch axis (start_dim=1)")
        name = node.target if node.op == "call_module" else f"{node.target}"
        if not isinstance(name, str):
            name = getattr(name, "__name__", str(name))
        chain.append((position, kind, name, module, where))
        previous = node
    return chain


def _check_module(kind, module, where):
    if kind == "conv":
        if module.groups != 1 or tuple(module.dilation) != (1, 1) or module.padding_mode != "zeros" \
                or isinstance(module.padding, str):
            raise UserError(f"cannot map {where}: only Conv2d with groups=1, dilation=1 and "
                            "numeric zero padding is supported")
    if kind == "maxpool":
        if module.dilation not in (1, (1, 1)) or module.ceil_mode or module.return_indices:
            raise UserError(f"cannot map {where}: only MaxPool2d without dilation, ceil_mode "
                            "or return_indices is supported")
    if kind in ("bn1d", "bn2d") and not module.track_running_stats:
        raise UserError(f"cannot map {where}: batch norm needs running statistics to fold")


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
    """A chain of QuantLayers taking raw 0..255 pixels (uint8 or float)."""

    def __init__(self, layers, input_shape, precision):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.precision = precision

    def forward(self, x, return_codes=False):
        """Float logits for the loss (the integer logits times the last step).
        With `return_codes`, also the int64 codes after every layer and the
        integer logits."""
        codes = x.float()
        step = torch.ones((), device=codes.device)
        trace = []
        for layer in self.layers[:-1]:
            codes, step = layer(codes, step)
            if return_codes:
                trace.append(codes.detach().to(torch.int64))
        logits, logits_int = self.layers[-1](codes, step)
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
    """The quantized form of `model` (a chain of supported modules) for
    retraining and export. `input_shape` is `(C, H, W)` of one raw image.

    Without a leading `Normalize` module and without `input_mean`/`input_std`
    the network is taken to expect pixels / 255."""
    if not isinstance(precision, PrecisionConfig) or precision.is_float:
        raise UserError("quantize_network needs a quantized precision such as w4a4, not float")
    chain = trace_chain(model)
    if chain and chain[0][1] == "normalize":
        if input_mean is not None or input_std is not None:
            raise UserError("the network starts with Normalize: do not also pass input_mean/input_std")
        input_mean, input_std = chain[0][3].mean, chain[0][3].std
        chain = chain[1:]
    check_input_normalisation(input_mean, input_std)
    if input_mean is None:
        input_mean, input_std = 0.0, 1.0
    specs, pending_flatten = [], False
    for position, kind, name, module, where in chain:
        _check_module(kind, module, where)
        current = specs[-1] if specs else None
        if kind == "normalize":
            raise UserError(f"cannot map {where}: Normalize must be the network's first module")
        if kind == "skip":
            continue
        if kind in ("conv", "linear"):
            if current is not None and not current["relu"]:
                raise UserError(f"cannot map {where}: the layer before it (`{current['name']}`) has no "
                                "ReLU; activations between layers are unsigned, so every layer but "
                                "the last must end in ReLU")
            if kind == "conv" and (pending_flatten or (current and current["kind"] == "linear")):
                raise UserError(f"cannot map {where}: a convolution cannot follow a flatten or a linear layer")
            if kind == "linear" and current is not None and current["kind"] == "conv" and not pending_flatten:
                raise UserError(f"cannot map {where}: flatten the convolution output before a linear layer")
            specs.append({"kind": kind, "op": module, "name": name, "bn": None, "relu": False,
                          "pool": None, "flatten": pending_flatten, "where": where})
            pending_flatten = False
            continue
        if current is None:
            raise UserError(f"cannot map {where}: it comes before the first Conv2d or Linear layer")
        if kind in ("bn1d", "bn2d"):
            wanted = "bn2d" if current["kind"] == "conv" else "bn1d"
            if kind != wanted or current["bn"] is not None or current["relu"] or pending_flatten:
                raise UserError(f"cannot map {where}: batch norm must directly follow its "
                                "Conv2d (BatchNorm2d) or Linear (BatchNorm1d)")
            if module.num_features != current["op"].weight.shape[0]:
                raise UserError(f"cannot map {where}: batch norm size does not match `{current['name']}`")
            current["bn"] = module
        elif kind == "relu":
            if current["relu"] or current["pool"] is not None or pending_flatten:
                raise UserError(f"cannot map {where}: ReLU must follow a layer (and its batch norm), "
                                "before max-pooling")
            current["relu"] = True
        elif kind == "maxpool":
            if current["kind"] != "conv" or not current["relu"] or current["pool"] is not None:
                raise UserError(f"cannot map {where}: max-pooling must follow a convolution's ReLU "
                                "(Conv2d, BatchNorm2d, ReLU, MaxPool2d)")
            current["pool"] = module
        elif kind == "flatten":  # flattening a linear layer's output is a no-op
            pending_flatten = pending_flatten or current["kind"] == "conv"
    if not specs:
        raise UserError("the network has no Conv2d or Linear layer")
    last = specs[-1]
    if last["relu"] or last["pool"] is not None:
        raise UserError(f"cannot map the last layer {last['where']}: it must return logits, "
                        "without ReLU or pooling after it")
    if last["bn"] is not None:
        if last["kind"] != "linear":
            raise UserError(f"cannot map {last['where']}: batch norm after a last convolution")
        last["op"], last["bn"] = _fold_bn_into_linear(last["op"], last["bn"]), None
    if pending_flatten:
        raise UserError("the network ends with a flatten: it must end with a Linear or Conv2d layer")
    layers, input_bits = [], INPUT_BITS
    for index, spec in enumerate(specs):
        bits = precision.layer(index, spec["name"], len(specs))
        norm = _input_norm_for(spec["op"], input_mean, input_std, input_shape) if index == 0 else None
        layers.append(QuantLayer(spec["op"], spec["bn"], spec["pool"], bits.weight_bits,
                                 bits.act_bits, precision.group_size, input_bits,
                                 flatten_input=spec["flatten"], input_norm=norm, name=spec["name"]))
        input_bits = bits.act_bits
    network = QuantNetwork(layers, input_shape, precision)
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
    codes = images.float()
    step = torch.ones((), device=codes.device)
    for layer in network.layers[:-1]:
        if layer.flatten_input:
            codes = codes.flatten(1)
        weight, bias = layer.folded_weight_bias()
        w_int, w_step = layer.weight_quantizer(weight)
        acc, _ = layer.accumulate(codes, w_int)
        shape = layer._channel_shape()
        y = acc * (step * w_step) + bias.reshape(shape)
        if layer.bn is not None:
            dims = [d for d in range(y.dim()) if d != 1]
            mean, var = y.mean(dim=dims), y.var(dim=dims, unbiased=False)
            bn = layer.bn
            g = (bn.weight if bn.affine else 1.0) / torch.sqrt(var + bn.eps)
            y = (y - mean.reshape(shape)) * g.reshape(shape)
            if bn.affine:
                y = y + bn.bias.reshape(shape)
        layer.act_quantizer.init_step(y.clamp(min=0))
        codes, step = layer(codes, step)
    network.train(was_training)
    return network
