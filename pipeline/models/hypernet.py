"""The shared hypernetwork: node embedding -> that node's operation weights (METHOD.md §3).

One MLP trunk is shared by every node, cell and architecture. Each parameter kind (conv3x3, conv1x1,
...) has a fixed-width head that emits the kind's maximal tensor (e.g. C_max x C_max x 3 x 3), which
is sliced to the parameter's real shape (ppuda/GHN style). Which node owns which target parameter is
read off the target network's own `param_slots`, so a new space needs no weight bookkeeping here.

Scale at initialisation: the trunk ends in a LayerNorm (unit-RMS features), the heads start with
N(0, 1/hidden) weights and zero bias, and every generated tensor is multiplied by the Kaiming gain
sqrt(2 / fan_in) of its real shape. So generated weights start at Kaiming scale whatever the slice, and
they depend on the node embedding (not on a head bias shared by every architecture). Both matter because
a generated conv is followed by batch-statistics BN: its output ignores the weight's scale, but its
gradient is ∝ 1/‖w‖, so weights far below Kaiming scale inflate the auxiliary gradient into the GCN.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.spaces.base import ParamSlot


INITS = ("kaiming", "fan_in")


class HyperNetwork(nn.Module):
    """`init="kaiming"` is the scheme of the module doc; `"fan_in"` the earlier one, kept for the ablation:
    default nn.Linear heads, no trunk LayerNorm, generated tensors scaled by 1/sqrt(fan_in) (about 1/7 of
    Kaiming scale at init, dominated by the head bias)."""

    def __init__(self, dim_in: int, hidden: int, layers: int, heads: dict[str, tuple[int, ...]],
                 init: str = "kaiming"):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"hypernetwork init must be one of {INITS}, got {init!r}")
        self.init = init
        trunk: list[nn.Module] = []
        d = dim_in
        for _ in range(layers):
            trunk += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        if init == "kaiming":
            trunk.append(nn.LayerNorm(d, elementwise_affine=False))
        self.trunk = nn.Sequential(*trunk)
        self.head_shapes = {k: tuple(v) for k, v in heads.items()}
        self.heads = nn.ModuleDict({k: nn.Linear(d, math.prod(v)) for k, v in heads.items()})
        if init == "kaiming":
            for head in self.heads.values():
                nn.init.normal_(head.weight, std=1.0 / math.sqrt(d))
                nn.init.zeros_(head.bias)
        self._row_cache: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    @staticmethod
    def slice_to(full: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Take the leading corner of a maximal tensor: full[:shape[0], :shape[1], ...]."""
        if len(shape) != full.dim() or any(s > f for s, f in zip(shape, full.shape)):
            raise ValueError(f"cannot slice a {tuple(full.shape)} head to shape {tuple(shape)}")
        return full[tuple(slice(0, s) for s in shape)]

    def _rows(self, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Indices of the head outputs that form the leading `shape` corner of the maximal tensor."""
        key = (kind, shape)
        idx = self._row_cache.get(key)
        if idx is None:
            full = torch.arange(math.prod(self.head_shapes[kind])).view(self.head_shapes[kind])
            idx = self._row_cache[key] = self.slice_to(full, shape).reshape(-1)
        return idx

    def generate(self, node_emb: torch.Tensor, slots: Sequence[Sequence[ParamSlot]]) -> list[dict[str, torch.Tensor]]:
        """Weights for a batch of architectures.

        node_emb: (B, S, N, D) node embeddings; slots[b]: the parameter slots of architecture b's
        target network. Returns one {param name: tensor} dict per architecture.

        Slicing the head's output to a shape equals computing only the head rows of that corner, so
        each (kind, shape) group is one matmul with the gathered rows: no full C_max x C_max output is
        made for a small stage, and no slice is back-propagated into a full-size zero tensor.
        """
        groups: dict[tuple[str, tuple[int, ...]], list[tuple[int, ParamSlot]]] = defaultdict(list)
        for b, arch_slots in enumerate(slots):
            for slot in arch_slots:
                if slot.kind not in self.heads:
                    raise KeyError(f"no hypernetwork head for parameter kind {slot.kind!r}; heads: {sorted(self.heads)}")
                groups[(slot.kind, tuple(slot.shape))].append((b, slot))
        out: list[dict[str, torch.Tensor]] = [{} for _ in slots]
        if not groups:
            return out
        # one trunk pass over every slot's node embedding
        flat = [(key, b, slot) for key, items in groups.items() for b, slot in items]
        dev = node_emb.device
        emb = node_emb[torch.tensor([b for _, b, _ in flat], device=dev),
                       torch.tensor([s.graph for _, _, s in flat], device=dev),
                       torch.tensor([s.node for _, _, s in flat], device=dev)]
        hidden = self.trunk(emb)
        start = 0
        for (kind, shape), items in groups.items():
            h = hidden[start:start + len(items)]
            start += len(items)
            rows = self._rows(kind, shape).to(dev)
            head = self.heads[kind]
            # Kaiming scale of the real fan-in, whatever the slice size (see the module doc)
            gain = 2.0 if self.init == "kaiming" else 1.0
            w = F.linear(h, head.weight[rows], head.bias[rows]) * math.sqrt(gain / math.prod(shape[1:]))
            for row, (b, slot) in zip(w.view(len(items), *shape).unbind(0), items):
                out[b][slot.name] = row
        return out
