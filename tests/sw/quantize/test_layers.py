"""sw/quantize/layers.py: the quantized layer's batch norm keeps PyTorch's
running statistics exactly, whatever the momentum."""

import pytest
import torch
from torch import nn

from sw.quantize.layers import update_running_statistics


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
@pytest.mark.parametrize("shape", [(8, 5, 4, 4), (16, 5)])
def test_running_statistics_follow_pytorch(momentum, shape):
    generator = torch.Generator().manual_seed(0)
    kind = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    reference, ours = kind(5, momentum=momentum).train(), kind(5, momentum=momentum)
    for step in range(4):
        y = torch.randn(shape, generator=generator) * (step + 1) + step
        reference(y)
        update_running_statistics(ours, y)
    assert torch.equal(ours.num_batches_tracked, reference.num_batches_tracked)
    assert torch.allclose(ours.running_mean, reference.running_mean, rtol=0, atol=1e-6)
    assert torch.allclose(ours.running_var, reference.running_var, rtol=0, atol=1e-6)
