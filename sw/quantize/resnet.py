"""Residual networks for CIFAR-10: MLPerf Tiny's ResNet-8 and He et al.'s
ResNet-20, built from torchvision's BasicBlock layout (`conv1`, `bn1`,
`relu`, `conv2`, `bn2`, `downsample`, `out += identity`), so they take the same
conversion path (sw/quantize/graph.py) as a user's torchvision-style network.
"""

from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: two 3x3 convolutions, the first with the
    block's stride, and a shortcut (`downsample`, a 1x1 projection, where the
    shape changes)."""

    def __init__(self, in_channels, channels, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def _projection(in_channels, channels, stride, batch_norm):
    """The 1x1 stride-`stride` shortcut where a block changes shape."""
    if batch_norm:
        return nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(channels))
    return nn.Conv2d(in_channels, channels, 1, stride=stride)


class CifarResNet(nn.Module):
    """A 3x3 stem, stacks of BasicBlocks (the first of each later stack with
    stride 2), global average pooling, one linear classifier."""

    def __init__(self, stacks, blocks, num_classes=10, in_channels=3, projection_bn=True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stacks[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stacks[0])
        self.relu = nn.ReLU(inplace=True)
        layers, channels = [], stacks[0]
        for index, width in enumerate(stacks):
            stride = 1 if index == 0 else 2
            stack = []
            for block in range(blocks):
                block_stride = stride if block == 0 else 1
                downsample = None
                if block_stride != 1 or channels != width:
                    downsample = _projection(channels, width, block_stride, projection_bn)
                stack.append(BasicBlock(channels, width, block_stride, downsample))
                channels = width
            layers.append(nn.Sequential(*stack))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


def _widths(width):
    return [max(1, int(round(c * width))) for c in (16, 32, 64)]


def resnet8(width=1.0, num_classes=10, in_channels=3):
    """MLPerf Tiny's image-classification reference (ResNet-8 on CIFAR-10):
    stem 16, one block per stack of 16/32/64 filters, 1x1 stride-2
    projections without batch norm (as in the reference's Keras model)."""
    return CifarResNet(_widths(width), 1, num_classes, in_channels, projection_bn=False)


def resnet20(width=1.0, num_classes=10, in_channels=3):
    """He et al.'s CIFAR ResNet-20: three stacks of three blocks, 16/32/64
    filters, projection shortcuts with batch norm (option B)."""
    return CifarResNet(_widths(width), 3, num_classes, in_channels, projection_bn=True)
