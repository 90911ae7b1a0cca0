"""The shared hypernetwork: node embedding -> that node's operation weights (METHOD.md §3).

One MLP trunk is shared by every node, cell and architecture. Each parameter kind (conv3x3, conv1x1,
...) has a fixed-width head that emits the kind's maximal tensor (e.g. C_max x C_max x 3 x 3), which
is sliced to the parameter's real shape (ppuda/GHN style). Which node owns which target parameter is
read off the target network's own `param_slots`, so a new space needs no weight bookkeeping here.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch
from torch import nn

from pipeline.spaces.base import ParamSlot


class HyperNetwork(nn.Module):
    def __init__(self, dim_in: int, hidden: int, layers: int, heads: dict[str, tuple[int, ...]]):
        super().__init__()
        trunk: list[nn.Module] = []
        d = dim_in
        for _ in range(layers):
            trunk += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.trunk = nn.Sequential(*trunk)
        self.head_shapes = {k: tuple(v) for k, v in heads.items()}
        self.heads = nn.ModuleDict({k: nn.Linear(d, math.prod(v)) for k, v in heads.items()})

    @staticmethod
    def slice_to(full: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Take the leading corner of a maximal tensor: full[:shape[0], :shape[1], ...]."""
        if len(shape) != full.dim() or any(s > f for s, f in zip(shape, full.shape)):
            raise ValueError(f"cannot slice a {tuple(full.shape)} head to shape {tuple(shape)}")
        return full[tuple(slice(0, s) for s in shape)]

    def generate(self, node_emb: torch.Tensor, slots: Sequence[Sequence[ParamSlot]]) -> list[dict[str, torch.Tensor]]:
        """Weights for a batch of architectures.

        node_emb: (B, S, N, D) node embeddings; slots[b]: the parameter slots of architecture b's
        target network. Returns one {param name: tensor} dict per architecture. All nodes of one
        kind go through the trunk and head in one matmul.
        """
        by_kind: dict[str, list[tuple[int, ParamSlot]]] = defaultdict(list)
        for b, arch_slots in enumerate(slots):
            for slot in arch_slots:
                by_kind[slot.kind].append((b, slot))
        out: list[dict[str, torch.Tensor]] = [{} for _ in slots]
        for kind, items in by_kind.items():
            if kind not in self.heads:
                raise KeyError(f"no hypernetwork head for parameter kind {kind!r}; heads: {sorted(self.heads)}")
            b_idx = torch.tensor([b for b, _ in items], device=node_emb.device)
            g_idx = torch.tensor([s.graph for _, s in items], device=node_emb.device)
            n_idx = torch.tensor([s.node for _, s in items], device=node_emb.device)
            emb = node_emb[b_idx, g_idx, n_idx]                    # (M, D)
            full = self.heads[kind](self.trunk(emb)).view(len(items), *self.head_shapes[kind])
            for row, (b, slot) in enumerate(items):
                w = self.slice_to(full[row], slot.shape)
                # He-style scale by the real fan-in keeps activations O(1) whatever the slice size
                fan_in = math.prod(slot.shape[1:])
                out[b][slot.name] = w * (1.0 / math.sqrt(fan_in))
        return out
