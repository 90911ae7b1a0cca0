"""DARTS networks: the skeleton plan, the target network (generated weights), the benchmark network, cost.

Skeleton (DARTS' NetworkCIFAR): stem conv3x3 (3 -> 3C) + BN; L cells, reductions at L/3 and 2L/3 (channels
double there, inputs 0/1 of a reduction cell's ops have stride 2); each cell preprocesses its inputs
c_{k-2}, c_{k-1} with ReLU-conv1x1-BN (FactorizedReduce for c_{k-2} when the previous cell reduced) and
outputs the concat of its 4 nodes (4C channels); global average pool + linear classifier. Ops as DARTS'
OPS: sep_conv = (ReLU, depthwise kxk, pointwise, BN) twice; dil_conv = ReLU, depthwise kxk dilation 2,
pointwise, BN; skip_connect = identity, or FactorizedReduce at stride 2; pools 3x3 (avg without padding).

`DartsTargetNet` is run with `functional_call`: every conv weight is generated for the encoded node that owns
it (preprocessing convs: the cell's input nodes; op weights: the op node), the stem, its BN affine and the
classifier are `shared.`. BN inside cells is batch-statistics only and has no affine (as DARTS' search
network), so nothing arch-specific is left ungenerated. A sep conv's two depthwise (and two pointwise)
layers are one (2C, ...) tensor split in halves, FactorizedReduce's two 1x1 convs one (C, C_in) tensor:
each node owns one tensor per head kind. (Both cell inputs are always read: node 0 takes inputs 0 and 1.)

`DartsBenchmarkNet` is the ordinary DARTS network (nn.Conv2d / nn.BatchNorm2d with affine and running
statistics, DARTS' default init; no auxiliary head), for zero-cost proxies; with the same weights and
`pool_bn=False` the target network computes the same function (tests/spaces/test_darts.py).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spaces.base import ParamSlot, TargetNet
from pipeline.spaces.darts import Arch, Cell, cell_kinds, op_node

STEM_MULTIPLIER = 3
KERNEL = {"sep_conv_3x3": 3, "sep_conv_5x5": 5, "dil_conv_3x3": 3, "dil_conv_5x5": 5}


@dataclass(frozen=True)
class CellPlan:
    """One cell of the skeleton: channels of its inputs and ops, and spatial sides."""

    kind: str            # normal | reduce
    reduction_prev: bool  # c_{k-2} is one reduction behind: FactorizedReduce preprocessing
    c_prev_prev: int
    c_prev: int
    c: int               # channels of each op (the cell outputs 4c)
    side_in: int         # side of the preprocessed inputs
    side_out: int        # side of the nodes and the output


def network_plan(channels: int, cells: int, image_size: int) -> list[CellPlan]:
    """The cells of DARTS' NetworkCIFAR of `channels` initial channels and `cells` cells."""
    plans = []
    c_pp = c_p = STEM_MULTIPLIER * channels
    c = channels
    side_p = image_size  # side of c_{k-1}; c_{k-2} is preprocessed to it (FactorizedReduce after a reduction)
    reduction_prev = False
    for kind in cell_kinds(cells):
        if kind == "reduce":
            c *= 2
        side_out = (side_p + 1) // 2 if kind == "reduce" else side_p  # 3x3 / 1x1 stride-2 output side
        plans.append(CellPlan(kind, reduction_prev, c_pp, c_p, c, side_p, side_out))
        c_pp, c_p, side_p = c_p, 4 * c, side_out
        reduction_prev = kind == "reduce"
    return plans


def _stride(kind: str, inp: int) -> int:
    return 2 if kind == "reduce" and inp < 2 else 1


# -- cost --------------------------------------------------------------------------------------------

def _op_cost(op: str, c: int, side: int, stride: int) -> tuple[int, int]:
    """(params, multiply-adds) of one op of width c whose output side is `side` (BN affine counted)."""
    hw = side * side
    if op.startswith("sep_conv"):
        k = KERNEL[op]
        return 2 * (c * k * k + c * c + 2 * c), 2 * (c * k * k + c * c) * hw
    if op.startswith("dil_conv"):
        k = KERNEL[op]
        return c * k * k + c * c + 2 * c, (c * k * k + c * c) * hw
    if op == "skip_connect" and stride == 2:
        return c * c + 2 * c, c * c * hw  # FactorizedReduce(c, c)
    return 0, 0  # identity, pools (DARTS' final network has no BN after pools)


def count_cost(arch: Arch, channels: int, cells: int, classes: int, image_size: int) -> dict[str, float]:
    """Params (M; BN affine included) and conv + linear multiply-adds (M, batch 1; BN, ReLU, pools and
    additions not counted) of DartsBenchmarkNet, i.e. without DARTS' auxiliary head (training only)."""
    stem_c = STEM_MULTIPLIER * channels
    params = 3 * stem_c * 9 + 2 * stem_c
    flops = 3 * stem_c * 9 * image_size * image_size
    genotype = dict(zip(("normal", "reduce"), arch))
    c_out = stem_c
    for plan in network_plan(channels, cells, image_size):
        c, hw_in = plan.c, plan.side_in * plan.side_in
        for c_in in (plan.c_prev_prev, plan.c_prev):  # ReLUConvBN or FactorizedReduce: same count
            params += c * c_in + 2 * c
            flops += c * c_in * hw_in
        for node in genotype[plan.kind]:
            for inp, op in node:
                stride = _stride(plan.kind, inp)
                p, f = _op_cost(op, c, plan.side_out, stride)
                params += p
                flops += f
        c_out = 4 * c
    params += c_out * classes + classes
    flops += c_out * classes
    return {"params": params / 1e6, "flops": flops / 1e6}


# -- target network ----------------------------------------------------------------------------------

def _bn(x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, training=True)


def _factorized_reduce(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """DARTS' FactorizedReduce: two stride-2 1x1 convs, the second shifted by one pixel, concatenated."""
    half = weight.shape[0] // 2
    return torch.cat([F.conv2d(x, weight[:half], stride=2), F.conv2d(x[:, :, 1:, 1:], weight[half:], stride=2)], 1)


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class _Preprocess(nn.Module):
    """ReLU -> conv1x1 -> BN, or ReLU -> FactorizedReduce -> BN."""

    def __init__(self, c_in: int, c_out: int, factorized: bool):
        super().__init__()
        self.factorized = factorized
        self.weight = _param(c_out, c_in, 1, 1)

    def slots(self) -> list[tuple[str, str]]:
        return [("weight", "conv1x1")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return _bn(_factorized_reduce(x, self.weight) if self.factorized else F.conv2d(x, self.weight))


class _Op(nn.Module):
    def __init__(self, op: str, c: int, stride: int, pool_bn: bool):
        super().__init__()
        self.op, self.c, self.stride, self.pool_bn = op, c, stride, pool_bn
        if op.startswith(("sep_conv", "dil_conv")):
            k = KERNEL[op]
            layers = 2 if op.startswith("sep_conv") else 1
            self.dw = _param(layers * c, 1, k, k)
            self.pw = _param(layers * c, c, 1, 1)
        elif op == "skip_connect" and stride == 2:
            self.weight = _param(c, c, 1, 1)

    def slots(self) -> list[tuple[str, str]]:
        if hasattr(self, "dw"):
            k = KERNEL[self.op]
            return [("dw", f"dw{k}x{k}"), ("pw", "pw1x1")]
        return [("weight", "conv1x1")] if hasattr(self, "weight") else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op, c, s = self.op, self.c, self.stride
        if op == "skip_connect":
            return x if s == 1 else _bn(_factorized_reduce(F.relu(x), self.weight))
        if op in ("max_pool_3x3", "avg_pool_3x3"):
            y = (F.max_pool2d(x, 3, s, 1) if op == "max_pool_3x3"
                 else F.avg_pool2d(x, 3, s, 1, count_include_pad=False))
            return _bn(y) if self.pool_bn else y
        k = KERNEL[op]
        if op.startswith("dil_conv"):
            y = F.conv2d(F.relu(x), self.dw, stride=s, padding=k - 1, dilation=2, groups=c)
            return _bn(F.conv2d(y, self.pw))
        y = F.conv2d(F.relu(x), self.dw[:c], stride=s, padding=k // 2, groups=c)
        y = F.relu(_bn(F.conv2d(y, self.pw[:c])))
        y = F.conv2d(y, self.dw[c:], padding=k // 2, groups=c)
        return _bn(F.conv2d(y, self.pw[c:]))


class _TargetCell(nn.Module):
    def __init__(self, cell: Cell, plan: CellPlan, pool_bn: bool):
        super().__init__()
        self.cell = cell
        self.pre0 = _Preprocess(plan.c_prev_prev, plan.c, plan.reduction_prev)
        self.pre1 = _Preprocess(plan.c_prev, plan.c, False)
        self.ops = nn.ModuleList(_Op(op, plan.c, _stride(plan.kind, inp), pool_bn)
                                 for node in cell for inp, op in node)

    def owned(self) -> list[tuple[nn.Module, str, int]]:
        """(module, its name in the cell, node index in the cell graph) of every weight-holding part."""
        return [(self.pre0, "pre0", 0), (self.pre1, "pre1", 1)] + \
            [(m, f"ops.{k}", op_node(k // 2, k % 2)) for k, m in enumerate(self.ops)]

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for j, ((a, _), (b, _)) in enumerate(self.cell):
            states.append(self.ops[2 * j](states[a]) + self.ops[2 * j + 1](states[b]))
        return torch.cat(states[2:], 1)


class DartsShared(nn.Module):
    """Target parameters no encoded node owns: stem conv + BN affine, classifier."""

    def __init__(self, channels: int, cells: int, num_classes: int):
        super().__init__()
        stem_c = STEM_MULTIPLIER * channels
        self.stem = nn.Conv2d(3, stem_c, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_c, track_running_stats=False)
        self.classifier = nn.Linear(4 * network_plan(channels, cells, 32)[-1].c, num_classes)


class DartsTargetNet(TargetNet):
    """The architecture's target network (target_channels, target_cells); target cell i takes its weights
    from encoded cell `space.encoded_cell_of(i)` (same kind), so a shallow target uses the whole encoding."""

    def __init__(self, arch: Arch, space: Any, num_classes: int, device: Any = None):
        super().__init__()
        s = space.settings
        with torch.device(device or "cpu"):
            self.shared = DartsShared(s.target_channels, s.target_cells, num_classes)
            genotype = dict(zip(("normal", "reduce"), arch))
            self.cells = nn.ModuleList()
            self.param_slots: list[ParamSlot] = []
            for i, plan in enumerate(network_plan(s.target_channels, s.target_cells, 32)):
                cell = _TargetCell(genotype[plan.kind], plan, s.pool_bn)
                self.cells.append(cell)
                graph = space.encoded_cell_of(i)
                for module, name, node in cell.owned():
                    for pname, kind in module.slots():
                        shape = tuple(getattr(module, pname).shape)
                        self.param_slots.append(ParamSlot(f"cells.{i}.{name}.{pname}", graph, node, kind, shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.shared.stem_bn(self.shared.stem(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.shared.classifier(s1.mean((2, 3)))


# -- benchmark network (ordinary modules, for zero-cost proxies) ------------------------------------

def _relu_conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=nn.Conv2d(c_in, c_out, 1, bias=False),
                                     bn=nn.BatchNorm2d(c_out)))


class FactorizedReduce(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], 1))


def benchmark_op(op: str, c: int, stride: int) -> nn.Module:
    """DARTS' OPS[op](c, stride, affine=True)."""
    if op == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    if op == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    k = KERNEL[op]
    if op.startswith("dil_conv"):
        return nn.Sequential(OrderedDict(
            relu=nn.ReLU(), dw=nn.Conv2d(c, c, k, stride, k - 1, dilation=2, groups=c, bias=False),
            pw=nn.Conv2d(c, c, 1, bias=False), bn=nn.BatchNorm2d(c)))
    return nn.Sequential(OrderedDict(
        relu1=nn.ReLU(), dw1=nn.Conv2d(c, c, k, stride, k // 2, groups=c, bias=False),
        pw1=nn.Conv2d(c, c, 1, bias=False), bn1=nn.BatchNorm2d(c),
        relu2=nn.ReLU(), dw2=nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False),
        pw2=nn.Conv2d(c, c, 1, bias=False), bn2=nn.BatchNorm2d(c)))


class _BenchmarkCell(nn.Module):
    def __init__(self, cell: Cell, plan: CellPlan):
        super().__init__()
        self.cell = cell
        self.pre0 = (FactorizedReduce(plan.c_prev_prev, plan.c) if plan.reduction_prev
                     else _relu_conv_bn(plan.c_prev_prev, plan.c))
        self.pre1 = _relu_conv_bn(plan.c_prev, plan.c)
        self.ops = nn.ModuleList(benchmark_op(op, plan.c, _stride(plan.kind, inp)) for node in cell for inp, op in node)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for j, ((a, _), (b, _)) in enumerate(self.cell):
            states.append(self.ops[2 * j](states[a]) + self.ops[2 * j + 1](states[b]))
        return torch.cat(states[2:], 1)


class DartsBenchmarkNet(nn.Module):
    """DARTS' NetworkCIFAR (no auxiliary head, no drop path) with its own randomly initialised parameters."""

    def __init__(self, arch: Arch, channels: int, cells: int, num_classes: int):
        super().__init__()
        stem_c = STEM_MULTIPLIER * channels
        self.stem = nn.Conv2d(3, stem_c, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(stem_c)
        genotype = dict(zip(("normal", "reduce"), arch))
        plans = network_plan(channels, cells, 32)
        self.cells = nn.ModuleList(_BenchmarkCell(genotype[p.kind], p) for p in plans)
        self.classifier = nn.Linear(4 * plans[-1].c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem_bn(self.stem(x))
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(s1.mean((2, 3)))
