"""RAFT feature and context encoders.

Module and attribute names follow the published RAFT layout so the official
checkpoints load with strict key matching (e.g. ``fnet.layer2.0.downsample.0``).
"""

from __future__ import annotations

import torch
from torch import nn


def make_norm(kind: str, channels: int, groups: int = 8) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # affine=False: no parameters in the checkpoint
    if kind == "none":
        return nn.Sequential()
    raise ValueError(f"unknown norm {kind!r}")


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with a skip; used by the large encoder."""

    def __init__(self, in_planes: int, planes: int, norm_fn: str, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm_fn, planes, planes // 8)
        self.norm2 = make_norm(norm_fn, planes, planes // 8)
        self.downsample = None
        if stride != 1:
            # The reference registers this norm both as ``norm3`` and inside ``downsample``;
            # the checkpoints therefore carry both key sets for batch norm.
            self.norm3 = make_norm(norm_fn, planes, planes // 8)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class BottleneckBlock(nn.Module):
    """1×1 → 3×3 → 1×1 bottleneck; used by the small encoder."""

    def __init__(self, in_planes: int, planes: int, norm_fn: str, stride: int = 1):
        super().__init__()
        mid = planes // 4
        self.conv1 = nn.Conv2d(in_planes, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, planes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.norm1 = make_norm(norm_fn, mid, mid // 8 or 1)
        self.norm2 = make_norm(norm_fn, mid, mid // 8 or 1)
        self.norm3 = make_norm(norm_fn, planes, planes // 8)
        self.downsample = None
        if stride != 1:
            self.norm4 = make_norm(norm_fn, planes, planes // 8)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride), self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return self.relu(x + y)


class _Encoder(nn.Module):
    """Stem at 1/2, three stages ending at 1/8 resolution, 1×1 projection."""

    block: type[nn.Module]
    widths: tuple[int, int, int, int]

    def __init__(self, output_dim: int, norm_fn: str, dropout: float = 0.0):
        super().__init__()
        stem, w1, w2, w3 = self.widths
        self.norm_fn = norm_fn
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3)
        self.norm1 = make_norm(norm_fn, stem, 8)
        self.relu1 = nn.ReLU(inplace=True)
        self.in_planes = stem
        self.layer1 = self._stage(w1, 1)
        self.layer2 = self._stage(w2, 2)
        self.layer3 = self._stage(w3, 2)
        self.conv2 = nn.Conv2d(w3, output_dim, 1)
        self.dropout = nn.Dropout2d(p=dropout) if dropout > 0 else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _stage(self, planes: int, stride: int) -> nn.Sequential:
        blocks = nn.Sequential(self.block(self.in_planes, planes, self.norm_fn, stride),
                               self.block(planes, planes, self.norm_fn, 1))
        self.in_planes = planes
        return blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.conv2(x)
        if self.dropout is not None and self.training:
            x = self.dropout(x)
        return x


class BasicEncoder(_Encoder):
    block = ResidualBlock
    widths = (64, 64, 96, 128)


class SmallEncoder(_Encoder):
    block = BottleneckBlock
    widths = (32, 32, 64, 96)
