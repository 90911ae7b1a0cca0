"""A hypernetwork that generates large weight matrices in fixed-size chunks (METHOD.md §3, "for very large
parameters (ViT) generate in fixed-size chunks with a chunk embedding, tiled to size").

HyperNetwork (hypernet.py) has one head per parameter kind whose output *is* the kind's maximal tensor:
for ViT-base's 2496 x 624 MLP matrices that is 1.6 M outputs x hidden per head, 0.6 B parameters over the
six kinds. Here every kind's maximal matrix (R_max, C_max) is a grid of `chunk` x `chunk` tiles, each
tile with a learned position embedding, and one MLP trunk shared by all tiles, kinds and nodes maps
(node embedding, tile-position embedding) to a tile through the kind's head (hidden -> chunk^2):

    tile(node, kind, i, j) = head_kind( trunk([node_emb ; pos_emb[kind, i, j]]) )
    W(node, kind)[:r, :c]  = tiles of rows 0..ceil(r/chunk)-1 and columns 0..ceil(c/chunk)-1, tiled, cut to r x c

A parameter of shape (r, c) is the leading corner of its node's maximal matrix (AutoFormer's weight
entanglement): only the tiles that cover the corner are computed, and a tile does not depend on the
slice it serves, so a narrower layer's weight is exactly the corner of a wider one's (up to the Kaiming
gain of the real fan-in, below). Head parameters: chunk^2 x hidden per kind (64 x 64 x 128 = 0.5 M).

Scale, as in HyperNetwork: the trunk ends in a LayerNorm, heads start at N(0, 1/hidden) with zero bias,
and every generated matrix is multiplied by sqrt(2 / fan_in) of its real shape (fan_in = c). The
trunk's first layer is linear in [node ; pos], so it is applied to the node part once per parameter and
to the position part once per tile position, and summed (a broadcast instead of a (tiles x nodes)
concatenation).

`init="fan_in"` is HyperNetwork's ablation scheme here too: default nn.Linear heads, no trunk LayerNorm,
gain 1/sqrt(fan_in).

Only 2-D kinds (linear weights, (out, in)) are chunked; that is what the ViT space needs.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.hypernet import INITS
from pipeline.spaces.base import ParamSlot


class ChunkedHyperNetwork(nn.Module):
    def __init__(self, dim_in: int, hidden: int, layers: int, heads: dict[str, tuple[int, ...]],
                 chunk: int = 64, pos_dim: int = 32, init: str = "kaiming"):
        super().__init__()
        if layers < 1 or chunk < 1 or pos_dim < 1:
            raise ValueError(f"need layers, chunk, pos_dim >= 1, got {layers}, {chunk}, {pos_dim}")
        if init not in INITS:
            raise ValueError(f"hypernetwork init must be one of {INITS}, got {init!r}")
        self.init = init
        for kind, shape in heads.items():
            if len(shape) != 2:
                raise ValueError(f"chunked head {kind!r}: only 2-D (out, in) kinds are chunked, got shape "
                                 f"{tuple(shape)}")
        self.dim_in, self.chunk = dim_in, chunk
        self.head_shapes = {k: tuple(v) for k, v in heads.items()}
        # tile grid per kind and its block of rows in the position table
        self.grids: dict[str, tuple[int, int]] = {}
        self.pos_offset: dict[str, int] = {}
        total = 0
        for kind, (r, c) in self.head_shapes.items():
            self.grids[kind] = (math.ceil(r / chunk), math.ceil(c / chunk))
            self.pos_offset[kind] = total
            total += self.grids[kind][0] * self.grids[kind][1]
        self.pos_embed = nn.Parameter(torch.randn(total, pos_dim))
        self.first = nn.Linear(dim_in + pos_dim, hidden)
        rest: list[nn.Module] = [nn.ReLU()]
        for _ in range(layers - 1):
            rest += [nn.Linear(hidden, hidden), nn.ReLU()]
        if init == "kaiming":
            rest.append(nn.LayerNorm(hidden, elementwise_affine=False))
        self.rest = nn.Sequential(*rest)
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, chunk * chunk) for k in self.head_shapes})
        if init == "kaiming":
            for head in self.heads.values():
                nn.init.normal_(head.weight, std=1.0 / math.sqrt(hidden))
                nn.init.zeros_(head.bias)
        self._pos_cache: dict[tuple[str, int, int], torch.Tensor] = {}

    def positions(self, kind: str, rows: int, cols: int) -> torch.Tensor:
        """Rows of the position table for the tiles covering the leading (rows x cols) corner, row-major."""
        key = (kind, rows, cols)
        idx = self._pos_cache.get(key)
        if idx is None:
            R, C = self.head_shapes[kind]
            if rows > R or cols > C:
                raise ValueError(f"cannot slice a {(R, C)} {kind!r} head to shape {(rows, cols)}")
            gr, gc = math.ceil(rows / self.chunk), math.ceil(cols / self.chunk)
            grid_cols = self.grids[kind][1]
            idx = (torch.arange(gr)[:, None] * grid_cols + torch.arange(gc)[None, :]).reshape(-1)
            idx = self._pos_cache[key] = idx + self.pos_offset[kind]
        return idx

    def tiles(self, node_part: torch.Tensor, kind: str, rows: int, cols: int) -> torch.Tensor:
        """(n, gr*chunk, gc*chunk) tiled matrices covering the (rows x cols) corner, unscaled.
        node_part: (n, hidden) = the first layer applied to the nodes' embeddings (bias included)."""
        idx = self.positions(kind, rows, cols).to(node_part.device)
        pos_part = F.linear(self.pos_embed[idx], self.first.weight[:, self.dim_in:])   # (k, hidden)
        h = self.rest(node_part[:, None, :] + pos_part[None, :, :])                    # (n, k, hidden)
        out = self.heads[kind](h)                                                       # (n, k, chunk^2)
        n, ch = out.shape[0], self.chunk
        gr, gc = math.ceil(rows / ch), math.ceil(cols / ch)
        return out.view(n, gr, gc, ch, ch).permute(0, 1, 3, 2, 4).reshape(n, gr * ch, gc * ch)

    def node_part(self, emb: torch.Tensor) -> torch.Tensor:
        return F.linear(emb, self.first.weight[:, :self.dim_in], self.first.bias)

    def generate(self, node_emb: torch.Tensor, slots: Sequence[Sequence[ParamSlot]]) -> list[dict[str, torch.Tensor]]:
        """Weights for a batch of architectures (HyperNetwork.generate's interface).

        node_emb: (B, S, N, D); slots[b]: architecture b's parameter slots. One {name: tensor} per architecture.
        Slots of one (kind, shape) are generated together: one trunk pass over (slots x tiles).
        """
        groups: dict[tuple[str, tuple[int, ...]], list[tuple[int, ParamSlot]]] = defaultdict(list)
        for b, arch_slots in enumerate(slots):
            for slot in arch_slots:
                if slot.kind not in self.heads:
                    raise KeyError(f"no hypernetwork head for parameter kind {slot.kind!r}; heads: "
                                   f"{sorted(self.heads)}")
                if len(slot.shape) != 2:
                    raise ValueError(f"slot {slot.name!r}: chunked kinds are 2-D, got shape {tuple(slot.shape)}")
                groups[(slot.kind, tuple(slot.shape))].append((b, slot))
        out: list[dict[str, torch.Tensor]] = [{} for _ in slots]
        if not groups:
            return out
        flat = [(b, slot) for items in groups.values() for b, slot in items]
        dev = node_emb.device
        emb = node_emb[torch.tensor([b for b, _ in flat], device=dev),
                       torch.tensor([s.graph for _, s in flat], device=dev),
                       torch.tensor([s.node for _, s in flat], device=dev)]
        node_part = self.node_part(emb)
        start = 0
        for (kind, (rows, cols)), items in groups.items():
            part = node_part[start:start + len(items)]
            start += len(items)
            # Kaiming scale of the real fan-in, whatever the slice (see the module doc)
            gain = 2.0 if self.init == "kaiming" else 1.0
            w = self.tiles(part, kind, rows, cols)[:, :rows, :cols] * math.sqrt(gain / cols)
            for mat, (b, slot) in zip(w.unbind(0), items):
                out[b][slot.name] = mat
        return out
