"""NB201 target network (the benchmark's macro skeleton) whose conv weights the hypernetwork generates.

Two ways to run it, equal up to float rounding (tests/models/test_hypernet.py):
- `NB201TargetNet`: one architecture, an ordinary module run with `torch.func.functional_call`;
- `run_batched`: K architectures side by side as one grouped-convolution network (channels laid out
  arch-major, `groups=K`), so a micro-batch of 10 target networks costs ~25 kernel calls per cell
  instead of ~10x that. Each architecture keeps its own weights, images and BN statistics (BN
  statistics are per channel, and channels never mix across architectures).

BN never predicts statistics: it always normalises with the batch's own (training mode, no running
stats). Parameters no node owns (stem, BN affine of stem and head, classifier) are shared.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spaces.base import ParamSlot, TargetNet
from pipeline.spaces.nb201 import _RED_NODE, EDGES, Arch, NB201Space, _live_edges



def _bn(x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, training=True)


class NB201Shared(nn.Module):
    """Target parameters no encoded node owns: stem conv + BN affine, last BN affine, classifier."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        C = channels
        self.stem = nn.Conv2d(3, C, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(C, track_running_stats=False)
        self.last_bn = nn.BatchNorm2d(4 * C, track_running_stats=False)
        self.classifier = nn.Linear(4 * C, num_classes)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.last_bn(x))
        return self.classifier(x.mean((2, 3)))


class _Cell(nn.Module):
    """One NB201 cell restricted to its live edges: node j = sum of op(node i) over live edges (j<-i)."""

    def __init__(self, arch: Arch, C: int, live: tuple[bool, ...]):
        super().__init__()
        self.arch = arch
        self.live = live
        self.convs = nn.ModuleDict()
        for e, op in enumerate(arch):
            if live[e] and op in ("nor_conv_1x1", "nor_conv_3x3"):
                k = 1 if op == "nor_conv_1x1" else 3
                self.convs[str(e)] = nn.Conv2d(C, C, k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: dict[int, torch.Tensor] = {0: x}
        for e, ((dst, src), op) in enumerate(zip(EDGES, self.arch)):
            if not self.live[e]:
                continue
            h = nodes[src]
            if op == "skip_connect":
                y = h
            elif op == "avg_pool_3x3":
                y = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
            else:  # ReLU -> conv -> BN, as NB201's ReLUConvBN
                y = _bn(self.convs[str(e)](F.relu(h)))
            nodes[dst] = y if dst not in nodes else nodes[dst] + y
        return nodes[3] if 3 in nodes else torch.zeros_like(x)


class _Reduction(nn.Module):
    """NB201's residual reduction block (ResNet basic block, stride 2)."""

    def __init__(self, Cin: int, Cout: int):
        super().__init__()
        self.conv_a = nn.Conv2d(Cin, Cout, 3, stride=2, padding=1, bias=False)
        self.conv_b = nn.Conv2d(Cout, Cout, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(Cin, Cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _bn(self.conv_a(F.relu(x)))
        y = _bn(self.conv_b(F.relu(y)))
        return y + self.shortcut(F.avg_pool2d(x, 2))


class NB201TargetNet(TargetNet):
    """The architecture's own network: stem, 3 stages x `cells_per_stage` cells, two reductions.

    Target cell j of a stage takes its weights from encoded cell floor(j * N_enc / N_target) of that
    stage, so a shallow target (e.g. 1 cell per stage on a CPU) still draws on the whole encoding.
    """

    def __init__(self, arch: Arch, channels: int, cells_per_stage: int, num_classes: int,
                 space: NB201Space, device: Any = None):
        super().__init__()
        with torch.device(device or "cpu"):
            # compute only live edges (dead ones cannot change the output), whatever the encoding keeps
            live = _live_edges(arch)
            node_of_edge = {e: k + 1 for k, e in enumerate(space.graph_edges(arch))}
            C = channels
            self.shared = NB201Shared(C, num_classes)
            self.stages = nn.ModuleList()
            self.reductions = nn.ModuleList()
            self.param_slots: list[ParamSlot] = []
            for stage in range(3):
                Cs = C * 2 ** stage
                if stage > 0:
                    red = _Reduction(Cs // 2, Cs)
                    self.reductions.append(red)
                    graph = space.slot_of(stage, 0) - 1  # reduction graph precedes the stage's cells
                    for pname, node in _RED_NODE.items():
                        w = getattr(red, pname).weight
                        kind = "conv1x1" if w.shape[-1] == 1 else "conv3x3"
                        self.param_slots.append(ParamSlot(f"reductions.{stage - 1}.{pname}.weight", graph,
                                                          node, kind, tuple(w.shape)))
                cells = nn.ModuleList()
                for j in range(cells_per_stage):
                    cell = _Cell(arch, Cs, live)
                    cells.append(cell)
                    enc_cell = j * space.cells_per_stage // cells_per_stage
                    graph = space.slot_of(stage, enc_cell)
                    for e, conv in cell.convs.items():
                        kind = "conv1x1" if conv.weight.shape[-1] == 1 else "conv3x3"
                        self.param_slots.append(ParamSlot(f"stages.{stage}.{j}.convs.{e}.weight", graph,
                                                          node_of_edge[int(e)], kind, tuple(conv.weight.shape)))
                self.stages.append(cells)
        self.shared_names = [f"shared.{n}" for n, _ in self.shared.named_parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shared.stem_bn(self.shared.stem(x))
        for stage, cells in enumerate(self.stages):
            if stage > 0:
                x = self.reductions[stage - 1](x)
            for cell in cells:
                x = cell(x)
        return self.shared.head(x)


# ------------------------------------------------------------------------------------------------
# K target networks as one grouped network. Activations are (n, K*C, H, W): image i of every
# architecture's own batch, channels arch-major.

_KINDS = ("skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3")


def _grouped_bn(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                K: int = 1) -> torch.Tensor:
    if weight is not None:
        weight, bias = weight.repeat(K), bias.repeat(K)
    return F.batch_norm(x, None, None, weight, bias, training=True)


def _stack_weights(params: list[dict[str, torch.Tensor]], name: str, shape: tuple[int, ...],
                   like: torch.Tensor) -> torch.Tensor:
    """(K*C_out, C_in, k, k): each architecture's weight for `name`, zeros where it has none (or where
    its op on that edge is the other conv, whose weight has another shape)."""
    zeros = None
    parts = []
    for p in params:
        w = p.get(name)
        if w is None or tuple(w.shape) != shape:
            if zeros is None:
                zeros = like.new_zeros(shape)
            w = zeros
        parts.append(w)
    return torch.cat(parts, 0)


def run_batched(archs: list[Arch], params: list[dict[str, torch.Tensor]], images: torch.Tensor,
                cells_per_stage: int) -> torch.Tensor:
    """Logits (K, n, classes) of the K architectures' target networks on their own images (K, n, 3, H, W).

    params[k] holds architecture k's generated weights under NB201TargetNet's names plus the
    shared `shared.*` parameters (the same tensors for every k).
    """
    K, n = images.shape[:2]
    sh = params[0]
    x = images.transpose(0, 1).reshape(n, K * images.shape[2], *images.shape[3:])
    C = sh["shared.stem.weight"].shape[0]
    x = F.conv2d(x, sh["shared.stem.weight"].repeat(K, 1, 1, 1), padding=1, groups=K)
    x = _grouped_bn(x, sh["shared.stem_bn.weight"], sh["shared.stem_bn.bias"], K)
    live = torch.tensor([_live_edges(a) for a in archs], device=x.device)  # (K, 6)
    # mask[kind][e]: (K,) float, 1 where architecture k has `kind` on live edge e
    masks = {kind: torch.tensor([[a[e] == kind for e in range(6)] for a in archs], device=x.device) & live
             for kind in _KINDS}
    for stage in range(3):
        Cs = C * 2 ** stage
        if stage > 0:
            x = _batched_reduction(x, params, stage - 1, Cs // 2, Cs, K)
        for j in range(cells_per_stage):
            x = _batched_cell(x, params, masks, f"stages.{stage}.{j}.convs", Cs, K)
    x = F.relu(_grouped_bn(x, sh["shared.last_bn.weight"], sh["shared.last_bn.bias"], K))
    feats = x.mean((2, 3)).view(n, K, -1)
    logits = F.linear(feats, sh["shared.classifier.weight"], sh["shared.classifier.bias"])
    return logits.transpose(0, 1)


def _batched_cell(x: torch.Tensor, params: list[dict[str, torch.Tensor]], masks: dict[str, torch.Tensor],
                  prefix: str, C: int, K: int) -> torch.Tensor:
    n, _, H, W = x.shape
    nodes: dict[int, torch.Tensor] = {0: x}
    for e, (dst, src) in enumerate(EDGES):
        present = {kind: m[:, e] for kind, m in masks.items() if bool(m[:, e].any())}
        if not present:
            continue
        h = nodes[src]
        y = None
        relu_h = None
        for kind, m in present.items():
            if kind == "skip_connect":
                out = h
            elif kind == "avg_pool_3x3":
                out = F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False)
            else:
                k = 1 if kind == "nor_conv_1x1" else 3
                if relu_h is None:
                    relu_h = F.relu(h)
                w = _stack_weights(params, f"{prefix}.{e}.weight", (C, C, k, k), h)
                out = _grouped_bn(F.conv2d(relu_h, w, padding=k // 2, groups=K))
            # keep only the architectures that have this op on this (live) edge
            out = (out.view(n, K, C, H, W) * m.view(1, K, 1, 1, 1).to(out.dtype)).view(n, K * C, H, W)
            y = out if y is None else y + out
        nodes[dst] = y if dst not in nodes else nodes[dst] + y
    return nodes[3] if 3 in nodes else torch.zeros_like(x)


def _batched_reduction(x: torch.Tensor, params: list[dict[str, torch.Tensor]], r: int, Cin: int, Cout: int,
                       K: int) -> torch.Tensor:
    pre = f"reductions.{r}"
    wa = torch.cat([p[f"{pre}.conv_a.weight"] for p in params])
    wb = torch.cat([p[f"{pre}.conv_b.weight"] for p in params])
    ws = torch.cat([p[f"{pre}.shortcut.weight"] for p in params])
    y = _grouped_bn(F.conv2d(F.relu(x), wa, stride=2, padding=1, groups=K))
    y = _grouped_bn(F.conv2d(F.relu(y), wb, padding=1, groups=K))
    return y + F.conv2d(F.avg_pool2d(x, 2), ws, groups=K)
