"""The user's network as a graph of accelerator layers (torch.fx).

`plan_layers(model, input_shape)` traces the network and groups its nodes into
layers: a Conv2d or Linear, then in this order what the layer's requantization
and pooling unit does, each optional:

* batch norm (folded into the requantization);
* a residual add of one other tensor (`out + shortcut`, `out += identity`,
  `torch.add`): the shortcut is another layer's output, added in the
  requantization with its own multiplier (docs/model_format.md);
* ReLU (the clamp at zero; without it the output codes are signed and may only
  be a residual shortcut, e.g. a projection's Conv2d + BatchNorm2d);
* max-pooling (convolutions only, after the ReLU).

Between layers: `flatten` (`nn.Flatten`, `torch.flatten(x, 1)`,
`x.view(x.size(0), -1)`), and global average pooling before a linear layer
(`nn.AdaptiveAvgPool2d(1)`, `F.adaptive_avg_pool2d(x, 1)`, `x.mean((2, 3))`,
`torch.mean(x, dim=[-2, -1])`, an `AvgPool2d` over the whole map). Dropout,
Identity and `.contiguous()` are dropped; a leading `Normalize` gives the
input normalisation. Anything else raises `UserError` naming the module and
saying what is supported.

The result is a list of `LayerPlan`s in an order where every layer's inputs
come first (a torchvision BasicBlock computes its `downsample` after `conv2`;
the plan puts it before the layer that adds it).
"""

import dataclasses
import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from common.errors import UserError
from common.layer_shapes import conv_problem, pool_problem
from sw.quantize.models import Normalize

SUPPORTED = ("Conv2d (groups=1), Linear, BatchNorm1d/2d, ReLU, MaxPool2d, residual add, "
             "global average pooling (AdaptiveAvgPool2d(1), mean over H and W), Flatten, "
             "Dropout, Identity and a leading Normalize")
IMAGE = -1              # the input index of a layer that reads the image

_MODULE_KINDS = [(Normalize, "normalize"), (nn.Conv2d, "conv"), (nn.Linear, "linear"),
                 (nn.BatchNorm2d, "bn2d"), (nn.BatchNorm1d, "bn1d"), (nn.ReLU, "relu"),
                 (nn.MaxPool2d, "maxpool"), (nn.Flatten, "flatten"), (nn.Dropout, "skip"),
                 (nn.Identity, "skip"), (nn.AdaptiveAvgPool2d, "adaptive_avg"),
                 (nn.AvgPool2d, "avgpool")]
_FUNCTION_KINDS = {F.relu: "relu", torch.relu: "relu", torch.flatten: "flatten",
                   F.dropout: "skip", operator.add: "add", operator.iadd: "add",
                   torch.add: "add", torch.mean: "mean", F.adaptive_avg_pool2d: "adaptive_avg",
                   F.avg_pool2d: "avgpool", operator.getitem: "aux", getattr: "aux"}
_METHOD_KINDS = {"relu": "relu", "relu_": "relu", "view": "flatten", "reshape": "flatten",
                 "flatten": "flatten", "size": "aux", "dim": "aux", "contiguous": "skip",
                 "add": "add", "add_": "add", "mean": "mean"}


_STEP_NAMES = {"acc": "convolution", "bn": "batch norm", "add": "residual add", "relu": "ReLU",
               "pool": "max-pooling"}


@dataclasses.dataclass
class LayerPlan:
    """One accelerator layer: its modules and where its inputs come from."""
    name: str
    kind: str                      # "conv" or "linear"
    op: nn.Module
    where: str                     # for messages
    input: int = IMAGE             # index into the plan's layers, or IMAGE
    residual: int | None = None    # the layer whose output is added before the clamp
    bn: nn.Module | None = None
    relu: bool = False
    pool: nn.Module | None = None
    flatten: bool = False
    global_pool_area: int | None = None
    stage: str = "acc"             # acc -> bn -> add -> relu -> pool, as fused so far
    closed: bool = False           # read by another layer: nothing more fuses into it
    consumers: int = 0


@dataclasses.dataclass(frozen=True)
class _Value:
    """What a traced tensor is: the image or a layer's output at a stage,
    possibly flattened or globally pooled."""
    layer: int                     # IMAGE or an index into the layers
    stage: str = "out"
    view: str = "map"              # "map", "flat" or "pooled"
    area: int | None = None        # H*W summed by global pooling
    map_hw: tuple | None = None    # (H, W) of the map a flatten or a global pooling took


class _Tracer(fx.Tracer):
    """torch.fx's tracer, keeping Normalize as one module."""

    def is_leaf_module(self, module, qualified_name):
        return isinstance(module, Normalize) or super().is_leaf_module(module, qualified_name)


def trace(model, input_shape):
    """The fx graph of `model` with every node's output shape."""
    try:
        graph = _Tracer().trace(model)
        module = fx.GraphModule(model, graph)
    except Exception as error:  # fx raises many types for untraceable code
        raise UserError(f"cannot trace the network with torch.fx ({type(error).__name__}: "
                        f"{error}); the flow takes {SUPPORTED}") from None
    was_training = model.training
    model.eval()
    try:
        image = torch.zeros((1, *input_shape))
        # A plain run first, to name the step that fails: ShapeProp prints a
        # traceback of its own and buries the user's error in node metadata.
        _NamingInterpreter(module).run(image)
        ShapeProp(module).propagate(image)
    except _StepFailed as failed:  # the user's network rejects the shape
        raise UserError(f"the network does not run on the data set's {tuple(input_shape)} images: "
                        f"{failed.where} fails ({type(failed.error).__name__}: {failed.error}); "
                        f"does it expect another image size or channel count?") from None
    except Exception as error:  # noqa: BLE001 - ShapeProp failing where the plain run did not
        raise UserError(f"cannot follow the shapes through the network on a {tuple(input_shape)} "
                        f"input ({type(error).__name__}: {error})") from None
    finally:
        model.train(was_training)
    return module


class _StepFailed(Exception):
    def __init__(self, where, error):
        super().__init__(where)
        self.where, self.error = where, error


class _NamingInterpreter(fx.Interpreter):
    """Runs the graph; an error names the step that raised it."""

    def run_node(self, node):
        try:
            return super().run_node(node)
        except Exception as error:  # noqa: BLE001 - any error of the user's code
            module = self.module.get_submodule(node.target) if node.op == "call_module" else None
            raise _StepFailed(_describe(node, module), error) from None


def _classify(node, modules):
    if node.op == "call_module":
        module = modules[node.target]
        for cls, kind in _MODULE_KINDS:
            if type(module) is cls:
                return kind, module
        return None, module
    if node.op == "call_function":
        return _FUNCTION_KINDS.get(node.target), None
    if node.op == "call_method":
        return _METHOD_KINDS.get(node.target), None
    return None, None


def _describe(node, module):
    if node.op == "call_module":
        return f"`{node.target}` ({type(module).__name__})"
    if node.op == "call_function":
        return f"`{getattr(node.target, '__name__', node.target)}` (function)"
    return f"`.{node.target}()` (method)"


def _shape(node):
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Planner:
    """Walks the traced nodes in order, fusing each into a layer or a value."""

    def __init__(self, module):
        self.modules = dict(module.named_modules())
        self.graph = module.graph
        self.layers = []
        self.values = {}            # fx.Node -> _Value
        self.normalize = None
        self.used_modules = set()
        self.output = None

    def fail(self, where, message):
        raise UserError(f"cannot map {where}: {message}")

    def run(self):
        position = 0
        for node in self.graph.nodes:
            if node.op == "placeholder":
                if self.values:
                    raise UserError("the network must take one input (the image)")
                self.values[node] = _Value(IMAGE)
                continue
            if node.op == "output":
                self._output(node)
                continue
            kind, module = _classify(node, self.modules)
            inputs = [a for a in node.all_input_nodes if a in self.values]
            if not inputs and node.op != "call_module":
                continue            # constants: no tensor of ours
            if kind == "aux":
                if node.meta.get("tensor_meta") is not None:   # e.g. x[:, :8]: a tensor op
                    kind = None
                else:
                    continue        # sizes and shapes (x.size(0), x.shape)
            position += 1
            where = f"position {position} ({_describe(node, module)})"
            if kind is None:
                self.fail(where, f"the flow takes {SUPPORTED}")
            if node.op == "call_module":
                if node.target in self.used_modules and kind in ("conv", "linear", "bn1d", "bn2d"):
                    self.fail(where, "the module is called twice; every layer needs its own")
                self.used_modules.add(node.target)
            self.values[node] = getattr(self, f"_{kind}")(node, module, inputs, where)
        return self.layers

    # -- helpers --

    def _one_input(self, node, inputs, where):
        if len(inputs) != 1:
            self.fail(where, "it takes more than one tensor; only the residual add joins branches")
        return self.values[inputs[0]]

    def _advance(self, value, stage, allowed, where, what):
        """Fuse one more step (`stage`) into the layer producing `value`."""
        if value.layer == IMAGE:
            self.fail(where, f"{what} must follow a Conv2d or Linear layer")
        layer = self.layers[value.layer]
        if value.view != "map" or value.stage != layer.stage:
            self.fail(where, f"{what} must directly follow `{layer.name}` and the steps fused into "
                             "it (the network branches, flattens or pools first)")
        if layer.closed:
            self.fail(where, f"the output of `{layer.name}` is already read by another layer "
                             f"before this {what}; the flow fuses a layer's {what} into it, so "
                             "branches must start after it")
        if layer.stage not in allowed:
            self.fail(where, f"{what} cannot come after `{layer.name}`'s "
                             f"{_STEP_NAMES[layer.stage]}; the order "
                             "is Conv2d/Linear, BatchNorm, residual add, ReLU, MaxPool2d")
        layer.stage = stage
        return dataclasses.replace(value, stage=stage)

    def _read(self, value, where, as_residual=False):
        """A layer reads `value`: its producer is final from now on."""
        if value.layer == IMAGE:
            return
        layer = self.layers[value.layer]
        if value.stage != layer.stage:
            self.fail(where, f"it reads the output of `{layer.name}` before its "
                             f"{_STEP_NAMES[layer.stage]}, which another branch fuses into it; a "
                             "layer's batch norm, residual add, ReLU and pooling are part of it, "
                             "so branches must start after them")
        layer.closed = True
        layer.consumers += 1
        if not layer.relu and not as_residual:
            self.fail(where, f"it reads `{layer.name}`, whose output has no ReLU (signed codes); "
                             "the accelerator's layers take unsigned activations, so a layer "
                             "without ReLU can only be the shortcut of a residual add or the last "
                             "layer")

    # -- the node kinds --

    def _normalize(self, node, module, inputs, where):
        value = self._one_input(node, inputs, where)
        if value != _Value(IMAGE) or self.normalize is not None or self.layers:
            self.fail(where, "Normalize must be the network's first module")
        self.normalize = module
        return value

    def _skip(self, node, module, inputs, where):
        return self._one_input(node, inputs, where)

    def _new_layer(self, node, module, inputs, where, kind):
        value = self._one_input(node, inputs, where)
        if kind == "conv":
            if (module.groups != 1 or tuple(module.dilation) != (1, 1)
                    or module.padding_mode != "zeros" or isinstance(module.padding, str)):
                self.fail(where, "only Conv2d with groups=1 (no grouped or depthwise "
                                 "convolution), dilation=1 and numeric zero padding is supported")
            problem = conv_problem(module.kernel_size, module.stride, module.padding)
            if problem:
                self.fail(where, problem)
            if value.view != "map":
                self.fail(where, "a convolution cannot follow a flatten or a global pooling")
            if value.layer != IMAGE and self.layers[value.layer].kind == "linear":
                self.fail(where, "a convolution cannot follow a linear layer")
        else:
            producer = None if value.layer == IMAGE else self.layers[value.layer]
            if value.view == "map" and (producer is None or producer.kind == "conv"):
                self.fail(where, "flatten (or globally pool) the map before a linear layer")
            # The core runs a linear layer on a flattened or pooled H x W map
            # as an H x W convolution (pooled: one round per position).
            problem = value.map_hw and conv_problem(value.map_hw, 1, 0)
            if problem:
                how = "flattened" if value.view == "flat" else "globally pooled"
                advice = ("start with a convolution and pool its map" if value.layer == IMAGE
                          else "pool the map smaller before it")
                self.fail(where, f"a linear layer on a {how} {value.map_hw[0]}x{value.map_hw[1]} map "
                                 f"runs as a convolution over the map: {problem}; {advice}")
        self._read(value, where)
        plan = LayerPlan(name=str(node.target), kind=kind, op=module, where=where,
                         input=value.layer, flatten=value.view == "flat",
                         global_pool_area=value.area if value.view == "pooled" else None)
        self.layers.append(plan)
        return _Value(len(self.layers) - 1, stage="acc")

    def _conv(self, node, module, inputs, where):
        return self._new_layer(node, module, inputs, where, "conv")

    def _linear(self, node, module, inputs, where):
        return self._new_layer(node, module, inputs, where, "linear")

    def _batch_norm(self, node, module, inputs, where, kind):
        value = self._one_input(node, inputs, where)
        if not module.track_running_stats:
            self.fail(where, "batch norm needs running statistics to fold")
        result = self._advance(value, "bn", ("acc",), where, "batch norm")
        layer = self.layers[value.layer]
        if kind != layer.kind or module.num_features != layer.op.weight.shape[0]:
            self.fail(where, f"batch norm must match its layer `{layer.name}` (BatchNorm2d after "
                             "Conv2d, BatchNorm1d after Linear, same channels)")
        layer.bn = module
        return result

    def _bn2d(self, node, module, inputs, where):
        return self._batch_norm(node, module, inputs, where, "conv")

    def _bn1d(self, node, module, inputs, where):
        return self._batch_norm(node, module, inputs, where, "linear")

    def _relu(self, node, module, inputs, where):
        value = self._one_input(node, inputs, where)
        result = self._advance(value, "relu", ("acc", "bn", "add"), where, "ReLU")
        self.layers[value.layer].relu = True
        return result

    def _maxpool(self, node, module, inputs, where):
        value = self._one_input(node, inputs, where)
        if (module.dilation not in (1, (1, 1)) or module.ceil_mode or module.return_indices):
            self.fail(where, "only MaxPool2d without dilation, ceil_mode or return_indices is "
                             "supported")
        problem = pool_problem(module.kernel_size, module.stride, module.padding)
        if problem:
            self.fail(where, problem)
        if value.layer != IMAGE and self.layers[value.layer].kind != "conv":
            self.fail(where, "max-pooling follows a convolution")
        result = self._advance(value, "pool", ("relu",), where, "max-pooling")
        self.layers[value.layer].pool = module
        return result

    def _add(self, node, module, inputs, where):
        if node.op == "call_function" and node.target is torch.add and \
                node.kwargs.get("alpha", 1) != 1:
            self.fail(where, "torch.add with alpha is not supported")
        operands = [a for a in node.args if isinstance(a, fx.Node)]
        if len(operands) != 2 or any(a not in self.values for a in operands):
            self.fail(where, "the residual add takes two tensors of the network (not a constant)")
        if _shape(operands[0]) != _shape(operands[1]):
            self.fail(where, f"the branches have shapes {_shape(operands[0])} and "
                             f"{_shape(operands[1])}; a residual add needs equal shapes")
        values = [self.values[a] for a in operands]

        def open_branch(value):
            if value.layer == IMAGE or value.view != "map":
                return False
            layer = self.layers[value.layer]
            return not layer.closed and value.stage == layer.stage and layer.stage in ("acc", "bn")

        main = next((v for v in values if open_branch(v)), None)
        if main is None:
            self.fail(where, "a residual add needs one branch that ends in a Conv2d (and its batch "
                             "norm) without ReLU, into which the add is fused")
        shortcut = values[1] if main is values[0] else values[0]
        if shortcut.layer == IMAGE or shortcut.view != "map":
            self.fail(where, "the shortcut of a residual add must be a layer's output (not the "
                             "image, flattened or pooled)")
        self._read(shortcut, where, as_residual=True)
        result = self._advance(main, "add", ("acc", "bn"), where, "residual add")
        self.layers[main.layer].residual = shortcut.layer
        return result

    def _flatten(self, node, module, inputs, where):
        value = self._one_input(node, inputs, where)
        if node.op == "call_function":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            if start != 1:
                self.fail(where, "flatten must keep the batch axis (start_dim=1)")
        shape = _shape(node)
        if shape is not None and len(shape) != 2:
            self.fail(where, f"a reshape to {shape}; only flattening to (batch, features) is "
                             "supported")
        if value.view == "pooled" or (value.layer != IMAGE and
                                      self.layers[value.layer].kind == "linear"):
            return value            # already one value per feature
        source = _shape(inputs[0])
        return dataclasses.replace(value, view="flat", map_hw=(
            (int(source[2]), int(source[3])) if source is not None and len(source) == 4 else None))

    def _global_pool(self, node, inputs, where):
        value = self._one_input(node, inputs, where)
        shape = _shape(inputs[0])
        if value.layer == IMAGE or value.view != "map" or shape is None or len(shape) != 4:
            self.fail(where, "global average pooling takes a convolution's output map")
        return dataclasses.replace(value, view="pooled", area=int(shape[2] * shape[3]),
                                   map_hw=(int(shape[2]), int(shape[3])))

    def _adaptive_avg(self, node, module, inputs, where):
        size = module.output_size if module is not None else (
            node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size"))
        if size not in (1, (1, 1), [1, 1]):
            self.fail(where, f"adaptive average pooling to {size}; only global pooling "
                             "(output size 1) is supported")
        return self._global_pool(node, inputs, where)

    def _avgpool(self, node, module, inputs, where):
        shape, out = _shape(inputs[0]), _shape(node)
        if shape is None or out is None or len(out) != 4 or tuple(out[2:]) != (1, 1) or (
                module is not None and module.padding not in (0, (0, 0))):
            self.fail(where, "average pooling is supported only over the whole map (global "
                             "average pooling)")
        return self._global_pool(node, inputs, where)

    def _mean(self, node, module, inputs, where):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        shape = _shape(inputs[0])
        rank = len(shape) if shape is not None else 4
        dims = dims if isinstance(dims, (tuple, list)) else [dims]
        if sorted(d % rank if isinstance(d, int) else d for d in dims) != [2, 3] or rank != 4:
            self.fail(where, f"a mean over {dims}; only the mean over H and W (global average "
                             "pooling, dims (2, 3)) is supported")
        return self._global_pool(node, inputs, where)

    def _output(self, node):
        result = node.args[0]
        if not isinstance(result, fx.Node) or result not in self.values:
            raise UserError("the network must return one tensor (the logits)")
        value = self.values[result]
        if value.layer == IMAGE or value.view != "map":
            raise UserError("the network must end with a Linear or Conv2d layer")
        layer = self.layers[value.layer]
        if value.stage != layer.stage or layer.closed or layer.stage not in ("acc", "bn") or \
                layer.residual is not None:
            raise UserError(f"cannot map the last layer `{layer.name}` ({layer.where}): it must "
                            "return logits, without ReLU, pooling or a residual add after it")
        self.output = value.layer


def _execution_order(layers, output):
    """Indices with every layer after its inputs, the output last; otherwise
    the network's own order."""
    order, placed = [], set()
    pending = [i for i in range(len(layers)) if i != output]
    while pending:
        for i in pending:
            needs = {layers[i].input, layers[i].residual} - {IMAGE, None}
            if needs <= placed:
                order.append(i)
                placed.add(i)
                pending.remove(i)
                break
        else:  # cannot happen: a traced graph has no cycles
            raise UserError("the network's layers form a cycle")
    return order + [output]


def plan_layers(model, input_shape):
    """`(layers, normalize)`: the network's `LayerPlan`s in execution order
    (inputs refer to positions in that list) and its leading Normalize module
    (or None)."""
    planner = _Planner(trace(model, input_shape))
    layers = planner.run()
    if not layers:
        raise UserError("the network has no Conv2d or Linear layer")
    if planner.output is None:
        raise UserError("the network returns nothing")
    for index, layer in enumerate(layers):
        if index != planner.output and layer.consumers == 0:
            raise UserError(f"the output of `{layer.name}` ({layer.where}) is never used")
    readers = [layer.name for layer in layers if layer.input == IMAGE]
    if len(readers) != 1:
        raise UserError(f"the image feeds {len(readers)} layers ({', '.join(readers)}); the flow "
                        "takes one first layer")
    order = _execution_order(layers, planner.output)
    position = {old: new for new, old in enumerate(order)}
    plans = []
    for old in order:
        layer = layers[old]
        layer.input = IMAGE if layer.input == IMAGE else position[layer.input]
        layer.residual = None if layer.residual is None else position[layer.residual]
        plans.append(layer)
    if plans[0].input != IMAGE:
        raise UserError("the first layer in execution order does not read the image")
    return plans, planner.normalize
