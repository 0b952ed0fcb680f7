"""The integer reference: inference from a model file with int64 tensors only.

This is the ground truth for the compiler and the RTL. No float tensor appears
in the forward pass: convolutions are im2col plus int64 matrix products,
requantization (with a residual branch where the layer has one) is
`common.fixedpoint.requantize_sum`, max-pooling works on the codes, global
average pooling is an integer sum (its 1/(H*W) is in the multiplier).
"""

import numpy as np
import torch
import torch.nn.functional as F

from common import fixedpoint
from common.errors import UserError
from sw.quantize import groups
from sw.quantize.export import IMAGE, layer_sources, read_model_file


class IntegerLayer:
    def __init__(self, fields, arrays, group_size):
        self.fields = fields
        self.kind = fields["kind"]
        weight = torch.from_numpy(arrays["weight"].astype(np.int64))
        shift = groups.expand_to_weights(torch.from_numpy(arrays["weight_shift"].astype(np.int64)),
                                         weight.shape, group_size)
        self.weight = weight << shift                                  # q << e
        self.matrix = self.weight.reshape(self.weight.shape[0], -1).t().contiguous()
        self.bias = torch.from_numpy(arrays["bias"].astype(np.int64))
        self.is_last = fields["act_bits"] is None
        if not self.is_last:
            self.multiplier = torch.from_numpy(arrays["requant_multiplier"].astype(np.int64))
            self.shift = fields["requant_shift"]
            self.act_bits = fields["act_bits"]
            self.signed = bool(fields.get("act_signed", False))
            self.residual_shift = fields.get("residual_shift")
            if self.residual_shift is not None:
                self.residual_multiplier = torch.from_numpy(
                    arrays["residual_multiplier"].astype(np.int64))
        self.pool = fields.get("pool")

    def accumulate(self, x):
        if self.fields.get("global_pool_input"):
            x = x.sum(dim=(2, 3))
        if self.fields["flatten_input"]:
            x = x.flatten(1)
        if self.kind == "linear":
            return x @ self.matrix
        (kh, kw), (sh, sw), (ph, pw) = (self.fields["kernel_size"], self.fields["stride"],
                                        self.fields["padding"])
        x = F.pad(x, (pw, pw, ph, ph))
        patches = x.unfold(2, kh, sh).unfold(3, kw, sw)            # (N, C, OH, OW, kh, kw)
        n, _, oh, ow = patches.shape[:4]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, -1)
        acc = patches @ self.matrix                                  # (N*OH*OW, O)
        return acc.reshape(n, oh, ow, -1).permute(0, 3, 1, 2)

    def __call__(self, x, residual=None):
        acc = self.accumulate(x)
        shape = (1, -1, 1, 1) if acc.dim() == 4 else (1, -1)
        if self.is_last:
            return acc + self.bias.reshape(shape)
        branch = {}
        if self.residual_shift is not None:
            branch = dict(residual=residual, residual_shift=self.residual_shift,
                          residual_multiplier=self.residual_multiplier.reshape(shape))
        codes = fixedpoint.requantize_sum(acc, self.bias.reshape(shape),
                                          self.multiplier.reshape(shape), self.shift,
                                          self.act_bits, signed=self.signed, **branch)
        if self.pool is not None:
            codes = F.max_pool2d(codes, self.pool["kernel_size"], self.pool["stride"],
                                 self.pool["padding"])
        return codes


class IntegerModel:
    """Runs a model file on uint8 images `(N, C, H, W)`; returns int64 logits."""

    def __init__(self, header, arrays):
        self.header = header
        self.input_shape = tuple(header["input"]["shape"])
        self.layers = [IntegerLayer(fields, layer_arrays, header["group_size"])
                       for fields, layer_arrays in zip(header["layers"], arrays)]
        self.sources = layer_sources(header)

    @classmethod
    def load(cls, path):
        return cls(*read_model_file(path))

    def __call__(self, images, return_codes=False):
        if images.dtype != torch.uint8:
            raise UserError(f"the integer model takes uint8 images, got {images.dtype}")
        if tuple(images.shape[1:]) != self.input_shape:
            raise UserError(f"the model takes images of shape {self.input_shape}, got "
                            f"{tuple(images.shape[1:])}")
        outputs = {IMAGE: images.to(torch.int64)}
        trace = []
        for index, (layer, (source, residual)) in enumerate(zip(self.layers, self.sources)):
            x = layer(outputs[source], outputs[residual] if residual is not None else None)
            outputs[index] = x
            if return_codes and not layer.is_last:
                trace.append(x)
        return (x, trace) if return_codes else x

    def accuracy(self, images, labels, batch_size=100, progress=False):
        """Top-1 accuracy on `images`; `progress`: a bar, or a line every
        few seconds when stderr is not a terminal (minutes on 10,000 images)."""
        from common.progress import Progress

        correct = 0
        bar = Progress("integer inference", len(labels), "image", leave=False) if progress else None
        try:
            for start in range(0, len(labels), batch_size):
                logits = self(images[start:start + batch_size])
                correct += (logits.argmax(1) == labels[start:start + batch_size]).sum().item()
                if bar:
                    bar.update(len(logits))
        finally:
            if bar:
                bar.close()
        return correct / len(labels)
