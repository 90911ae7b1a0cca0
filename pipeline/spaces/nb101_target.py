"""The NAS-Bench-101 network, as a target network (generated weights) and as the benchmark network.

The benchmark's skeleton (nasbench `model_builder`): stem conv3x3-BN-ReLU (128 channels), 3 stacks of 3
cells, a 2x2 max-pool (stride 2) before stacks 2 and 3 with the channel count doubled by the next cell,
global average pool, linear classifier. Inside a cell (`build_module`), vertex channels follow
`vertex_channels`: interior vertices sum their inputs (a predecessor wider than the vertex is truncated to
its first channels; the cell input always enters through a 1x1 conv-BN-ReLU projection to the vertex's
width), the output concatenates the vertices that feed it and adds a projection of the input when the
input feeds the output directly (or is the projection alone when nothing else feeds it).

Two flavours of one module:
- `NB101TargetNet` (hypernetwork target): every conv of a cell is a parameter slot; BN normalises with
  the batch's own statistics and has no affine in the cells (vertex widths differ from cell to cell, so
  no fixed-shape shared affine fits them; NB201's target does the same); stem, stem BN affine and
  classifier live in the shared module (`NB101Shared`).
- `NB101BenchmarkNet`: the ordinary network with its own randomly initialised parameters and BN with
  running statistics (TF's momentum 0.997 = PyTorch momentum 0.003), parameter for parameter the
  benchmark's `trainable_parameters`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spaces.base import ParamSlot, TargetNet
from pipeline.spaces.nb101_cell import KERNEL, Cell, vertex_channels


class BatchStatNorm(nn.Module):
    """BN without parameters or running statistics: normalise with the batch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, None, None, training=True)


def _benchmark_bn(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.003)


def _batch_stat_bn(channels: int) -> nn.Module:
    return BatchStatNorm()


class NB101CellModule(nn.Module):
    """One cell from in_channels to out_channels (nasbench `build_module`)."""

    def __init__(self, cell: Cell, in_channels: int, out_channels: int, make_bn: Callable[[int], nn.Module]):
        super().__init__()
        self.cell = cell
        n = len(cell.ops)
        self.ch = vertex_channels(cell, in_channels, out_channels)
        self.preds = [[s for s, d in cell.edges if d == t] for t in range(n)]
        # keyed by vertex index: proj[t] = input -> vertex t (t = n-1: the output), convs[t] = vertex t's op
        self.proj = nn.ModuleDict()
        self.proj_bn = nn.ModuleDict()
        self.convs = nn.ModuleDict()
        self.conv_bn = nn.ModuleDict()
        for t in range(1, n):
            if 0 in self.preds[t]:
                self.proj[str(t)] = nn.Conv2d(in_channels, self.ch[t], 1, bias=False)
                self.proj_bn[str(t)] = make_bn(self.ch[t])
        for t in range(1, n - 1):
            k = KERNEL.get(cell.ops[t])
            if k:
                self.convs[str(t)] = nn.Conv2d(self.ch[t], self.ch[t], k, padding=k // 2, bias=False)
                self.conv_bn[str(t)] = make_bn(self.ch[t])

    def _project(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return F.relu(self.proj_bn[str(t)](self.proj[str(t)](x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.cell.ops)
        tensors = [x]
        for t in range(1, n - 1):
            ins = [tensors[s][:, :self.ch[t]] for s in self.preds[t] if s > 0]
            if 0 in self.preds[t]:
                ins.append(self._project(x, t))
            h = ins[0] if len(ins) == 1 else torch.stack(ins).sum(0)
            if self.cell.ops[t] == "maxpool3x3":
                h = F.max_pool2d(h, 3, stride=1, padding=1)
            else:
                h = F.relu(self.conv_bn[str(t)](self.convs[str(t)](h)))
            tensors.append(h)
        feeding = [tensors[s] for s in self.preds[n - 1] if s > 0]
        if not feeding:  # input -> output only
            return self._project(x, n - 1)
        out = feeding[0] if len(feeding) == 1 else torch.cat(feeding, 1)
        if 0 in self.preds[n - 1]:
            out = out + self._project(x, n - 1)
        return out


class NB101Shared(nn.Module):
    """What no encoded node owns: stem conv + its BN (affine), classifier."""

    def __init__(self, channels: int, final_channels: int, num_classes: int, stem_bn: nn.Module):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = stem_bn
        self.classifier = nn.Linear(final_channels, num_classes)


def shared_for_target(channels: int, stacks: int, num_classes: int) -> NB101Shared:
    return NB101Shared(channels, channels * 2 ** (stacks - 1), num_classes,
                       nn.BatchNorm2d(channels, track_running_stats=False))


class NB101Net(nn.Module):
    """Stem, `stacks` stacks of `cells_per_stack` cells (channels C * 2^s), max-pool between stacks, GAP,
    classifier."""

    def __init__(self, cell: Cell, channels: int, stacks: int, cells_per_stack: int, shared: NB101Shared,
                 make_bn: Callable[[int], nn.Module]):
        super().__init__()
        self.shared = shared
        self.stacks = nn.ModuleList()
        cin = channels
        for s in range(stacks):
            cout = channels * 2 ** s
            cells = nn.ModuleList()
            for _ in range(cells_per_stack):
                cells.append(NB101CellModule(cell, cin, cout, make_bn))
                cin = cout
            self.stacks.append(cells)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.shared.stem_bn(self.shared.stem(x)))
        for s, cells in enumerate(self.stacks):
            if s > 0:  # TF 'same' 2x2/2 pooling: odd sides keep their last row/column
                x = F.max_pool2d(x, 2, stride=2, ceil_mode=True)
            for cell in cells:
                x = cell(x)
        return self.shared.classifier(x.mean((2, 3)))


class NB101TargetNet(NB101Net, TargetNet):
    """The target network; `graph_of(s, j)` is the encoded graph whose nodes own target stack s, cell j
    (the space maps a shallow target onto the whole encoding). Each vertex owns its conv (`conv3x3` /
    `conv1x1`) and the projection that feeds it (`proj1x1`, a head of its own; the output vertex owns the
    input -> output projection): a projection's width and role are the vertex's, while the input node
    would hand every projection of the cell the same head output."""

    def __init__(self, cell: Cell, channels: int, stacks: int, cells_per_stack: int, num_classes: int,
                 graph_of: Callable[[int, int], int], device: Any = None):
        with torch.device(device or "cpu"):
            super().__init__(cell, channels, stacks, cells_per_stack,
                             shared_for_target(channels, stacks, num_classes), _batch_stat_bn)
        self.param_slots: list[ParamSlot] = []
        for s, cells in enumerate(self.stacks):
            for j, module in enumerate(cells):
                graph = graph_of(s, j)
                for t, conv in module.proj.items():
                    self.param_slots.append(ParamSlot(f"stacks.{s}.{j}.proj.{t}.weight", graph, int(t), "proj1x1",
                                                      tuple(conv.weight.shape)))
                for t, conv in module.convs.items():
                    k = KERNEL[cell.ops[int(t)]]
                    self.param_slots.append(ParamSlot(f"stacks.{s}.{j}.convs.{t}.weight", graph, int(t),
                                                      f"conv{k}x{k}", tuple(conv.weight.shape)))


class NB101BenchmarkNet(NB101Net):
    """The benchmark network with its own parameters (benchmark BN); see the module doc."""

    def __init__(self, cell: Cell, num_classes: int, channels: int = 128, stacks: int = 3,
                 cells_per_stack: int = 3):
        shared = NB101Shared(channels, channels * 2 ** (stacks - 1), num_classes, _benchmark_bn(channels))
        super().__init__(cell, channels, stacks, cells_per_stack, shared, _benchmark_bn)
