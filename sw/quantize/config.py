"""Per-layer precision as data.

A precision configuration is written as a short string or a JSON file:

* `float`: no quantization (float pre-training);
* `w4a4`: every layer 4-bit weights, 4-bit activations;
* `w4a4,first=w8,last=w8`: the same with 8-bit weights in the first and last
  layers. A key is `first`, `last`, a layer index (0-based, in execution order)
  or a layer name (the module's qualified name); a value is `wN`, `aN` or
  `wNaM`. Later keys override earlier ones.
* A path to a JSON file `{"weight_bits": 4, "act_bits": 4, "group_size": 16,
  "overrides": {"first": {"weight_bits": 8}}}`.
"""

import dataclasses
import json
import os
import re

from common.errors import UserError
from sw.quantize.groups import DEFAULT_GROUP_SIZE

WEIGHT_BITS = (2, 3, 4, 8)
ACT_BITS = (2, 3, 4, 8)
INPUT_BITS = 8  # the network input: raw uint8 pixels


@dataclasses.dataclass(frozen=True)
class LayerPrecision:
    weight_bits: int
    act_bits: int | None  # None for the last layer (it returns logits)


@dataclasses.dataclass
class PrecisionConfig:
    weight_bits: int | None = 4  # None: float
    act_bits: int | None = 4
    group_size: int = DEFAULT_GROUP_SIZE
    overrides: dict = dataclasses.field(default_factory=dict)

    @property
    def is_float(self):
        return self.weight_bits is None

    def __post_init__(self):
        if self.is_float:
            return
        _check_bits("weight_bits", self.weight_bits, WEIGHT_BITS)
        _check_bits("act_bits", self.act_bits, ACT_BITS)
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise UserError(f"precision: group_size must be a positive integer, got {self.group_size!r}")
        for key, value in self.overrides.items():
            if not isinstance(value, dict) or set(value) - {"weight_bits", "act_bits"}:
                raise UserError(f"precision: override {key!r} must set weight_bits and/or act_bits")
            if "weight_bits" in value:
                _check_bits(f"override {key} weight_bits", value["weight_bits"], WEIGHT_BITS)
            if "act_bits" in value:
                _check_bits(f"override {key} act_bits", value["act_bits"], ACT_BITS)

    def check_layer_keys(self, names):
        """Refuse an override whose key names no layer of a network whose
        layers, in execution order, are `names`: a mistyped index or name
        would otherwise leave its layer at the default precision unnoticed."""
        valid = {"first", "last", *map(str, range(len(names))), *names}
        unknown = [key for key in self.overrides if key not in valid]
        if unknown:
            raise UserError(f"precision: {unknown[0]!r} names no layer of this network; its {len(names)} "
                            f"layers are 0..{len(names) - 1} (first, last) or by name: {', '.join(names)}")

    def layer(self, index, name, count):
        """Precision of layer `index` (named `name`) of `count` layers."""
        weight_bits, act_bits = self.weight_bits, self.act_bits
        keys = {str(index), name}
        if index == 0:
            keys.add("first")
        if index == count - 1:
            keys.add("last")
        for key, value in self.overrides.items():
            if key in keys:
                weight_bits = value.get("weight_bits", weight_bits)
                act_bits = value.get("act_bits", act_bits)
        return LayerPrecision(weight_bits, None if index == count - 1 else act_bits)

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        return cls(**data)

    def describe(self):
        if self.is_float:
            return "float"
        text = f"w{self.weight_bits}a{self.act_bits}"
        for key, value in self.overrides.items():
            part = "".join(f"{k[0]}{v}" for k, v in value.items())
            text += f",{key}={part}"
        return text


def _check_bits(what, value, allowed):
    if value not in allowed:
        raise UserError(f"precision: {what} must be one of {allowed}, got {value!r}")


_BITS = re.compile(r"^(?:w(\d+))?(?:a(\d+))?$")


def _parse_bits(text, where):
    match = _BITS.match(text)
    if not text or not match:
        raise UserError(f"precision: cannot read {text!r} in {where!r}; write e.g. w4a4, w8 or a4")
    result = {}
    if match.group(1):
        result["weight_bits"] = int(match.group(1))
    if match.group(2):
        result["act_bits"] = int(match.group(2))
    return result


def parse_precision(spec, group_size=DEFAULT_GROUP_SIZE):
    """A PrecisionConfig from a string like `w4a4,first=w8,last=w8`, `float`
    or a JSON file path."""
    if isinstance(spec, PrecisionConfig):
        return spec
    spec = str(spec).strip()
    if spec == "float":
        return PrecisionConfig(weight_bits=None, act_bits=None, group_size=group_size)
    if spec.endswith(".json") or os.path.isfile(spec):
        try:
            with open(spec) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"precision: cannot read {spec}: {error}") from None
        if not isinstance(data, dict):
            raise UserError(f"precision: {spec} must hold a JSON object")
        data.setdefault("group_size", group_size)
        try:
            return PrecisionConfig(**data)
        except TypeError as error:
            raise UserError(f"precision: {spec}: {error}") from None
    head, *rest = spec.split(",")
    default = _parse_bits(head, spec)
    if set(default) != {"weight_bits", "act_bits"}:
        raise UserError(f"precision: {spec!r} must start with both bit widths, e.g. w4a4")
    overrides = {}
    for item in rest:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"precision: cannot read {item!r} in {spec!r}; write LAYER=wNaM")
        overrides.setdefault(key.strip(), {}).update(_parse_bits(value.strip(), spec))
    return PrecisionConfig(group_size=group_size, overrides=overrides, **default)
