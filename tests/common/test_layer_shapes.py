"""common/layer_shapes.py: the layer shapes the core runs, one rule for the
compiler and for training's check before any training."""

import pytest

from common.layer_shapes import conv_problem, pool_problem


@pytest.mark.parametrize("kernel,stride,padding", [
    (3, 1, 1), ((3, 3), (2, 2), (1, 1)), (1, 1, 0), ((16, 16), 1, 15), ((1, 16), 2, 0)])
def test_shapes_the_core_runs_pass(kernel, stride, padding):
    assert conv_problem(kernel, stride, padding) is None


@pytest.mark.parametrize("kernel,stride,padding,words", [
    (3, (1, 2), 1, "strides both axes alike, the model asks for stride [1, 2]"),
    (3, 3, 1, "stride 3 is not supported (limit: stride 1 or 2)"),
    ((1, 3), 1, (0, 1), "pads every side alike, the model asks for padding [0, 1]"),
    (3, 1, 16, "padding 16 exceeds the limit (PAD < 16)"),
    ((17, 3), 1, 1, "kernel 17x3 exceeds the 16x16 limit"),
])
def test_shapes_the_core_does_not_run_are_named(kernel, stride, padding, words):
    assert words in conv_problem(kernel, stride, padding)


def test_pooling_is_two_by_two_with_stride_two():
    assert pool_problem(2, None, 0) is None            # PyTorch's stride default: the window
    assert pool_problem((2, 2), (2, 2), (0, 0)) is None
    assert pool_problem([2, 2], [2, 2], [0, 0]) is None  # as a model file writes it
    for kernel, stride, padding in ((3, 2, 1), (2, 1, 0), (2, 2, 1), ((2, 3), None, 0)):
        problem = pool_problem(kernel, stride, padding)
        assert problem.startswith("the hardware pools 2x2 with stride 2 and no padding, the model asks for "
                                  "{'kernel_size': "), problem
