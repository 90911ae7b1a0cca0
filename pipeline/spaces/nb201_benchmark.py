"""The NAS-Bench-201 benchmark network as ordinary modules, randomly initialised (zero-cost proxies).

The network NAS-Bench-201 trained (Dong & Yang 2020, `TinyNetwork` + `InferCell`), which NASLib's
discretised NB201 graph reproduces and NAS-Bench-Suite-Zero scored:

    stem: conv3x3(3 -> C) + BN
    3 stages of N cells (C, 2C, 4C channels); between stages a ResNet basic block with stride 2:
        ReLU-conv3x3/s2-BN -> ReLU-conv3x3-BN, plus the shortcut avgpool2x2/s2 -> conv1x1 (no BN)
    head: BN + ReLU, global average pool, linear

A cell has 4 nodes; node j = sum over edges (j<-i) of op(node i), the cell's output is node 3. Ops:
`nor_conv_kxk` = ReLU-conv-BN, `avg_pool_3x3` (stride 1, padding excluded from the average), `skip_connect`
= identity, `none` = zeros (kept in the graph, as NAS-Bench-201 does, so dead ops still cost). Convs have
no bias; BN modules are regular ones (affine, running statistics), PyTorch's default initialisation
everywhere: what "an untrained network" means to the proxies.

Its parameter count equals `NB201Space.cost(arch)["params"]` (tests/zero_cost/test_zc_benchmark_net.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from pipeline.spaces.nb201 import EDGES, OPS


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class Zero(nn.Module):
    """The `none` op: zeros shaped like the input (x * 0 keeps the autograd graph, as the benchmark's op does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(op: str, channels: int) -> nn.Module:
    if op == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if op == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "skip_connect":
        return nn.Identity()
    if op == "none":
        return Zero()
    raise ValueError(f"unknown NB201 op {op!r}; ops: {', '.join(OPS)}")


class Cell(nn.Module):
    """A 4-node cell; `edges[e]` is the op on EDGES[e] = (dst, src)."""

    def __init__(self, arch: Sequence[str], channels: int):
        super().__init__()
        self.edges = nn.ModuleList(make_op(op, channels) for op in arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for dst in (1, 2, 3):
            nodes.append(sum(op(nodes[src]) for op, (d, src) in zip(self.edges, EDGES) if d == dst))
        return nodes[3]


class ResNetBasicBlock(nn.Module):
    """The fixed reduction block between stages (stride 2, channels doubled)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(kernel_size=2, stride=2),
                                        nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NB201BenchmarkNet(nn.Module):
    """`forward(x)` -> logits; `forward_features(x)` -> the feature map entering the global pool (Zen-NAS)."""

    def __init__(self, arch: Sequence[str], num_classes: int, channels: int = 16, cells_per_stage: int = 5):
        super().__init__()
        C = channels
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        for stage in range(3):
            if stage > 0:
                layers.append(ResNetBasicBlock(C, 2 * C))
                C *= 2
            layers.extend(Cell(arch, C) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C), nn.ReLU(inplace=False))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.lastact(self.cells(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.forward_features(x)).flatten(1))
