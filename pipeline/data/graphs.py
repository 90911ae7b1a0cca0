"""Architectures -> dense padded tensors of their cell-graph sequences, batched with torch-geometric.

Each architecture is a sequence of S cell graphs. Many graphs repeat (an NB201 network repeats one
cell 15 times; the reduction blocks are shared by every architecture), so the unique graphs are
collated once (a PyG-style flat batch) and densified with `to_dense_batch` / `to_dense_adj`;
an architecture is then a row of S graph ids. Selecting a minibatch is an index, so scoring the whole
NB201 space needs no per-step Python graph building.

Dense because cells are tiny (<= ~12 nodes): batched matmuls beat scatter-based message passing by an
order of magnitude on a CPU, and the GCN layer stays the formula in METHOD.md §2.

Sequences may differ in length (ViT depth, MobileNetV3 stages): shorter ones are padded at the end with
an empty graph (every node PAD), and `GraphBatch.cell_mask` marks the real cells. The encoder carries the
context z through padding cells and leaves them out of the architecture embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
from torch_geometric.utils import to_dense_adj, to_dense_batch

from pipeline.spaces.base import CellGraph, SearchSpace

PAD = -1  # node type of padding nodes


@dataclass
class GraphTable:
    """Unique graphs as dense tensors, and each architecture as a row of graph ids."""

    node_types: torch.Tensor  # (G, N) long, PAD for padding nodes
    adj: torch.Tensor         # (G, N, N) float 0/1, adj[g, i, j] = 1 for edge i -> j
    arch_graphs: torch.Tensor  # (P, S) long graph ids

    @property
    def num_archs(self) -> int:
        return self.arch_graphs.shape[0]

    def select(self, arch_idx: torch.Tensor) -> "GraphBatch":
        ids = self.arch_graphs[arch_idx]  # (B, S)
        return GraphBatch(self.node_types[ids], self.adj[ids])


@dataclass
class GraphBatch:
    node_types: torch.Tensor  # (B, S, N)
    adj: torch.Tensor         # (B, S, N, N)

    @property
    def mask(self) -> torch.Tensor:
        return self.node_types != PAD

    @property
    def cell_mask(self) -> torch.Tensor:
        """(B, S) True for real cells, False for the padding at the end of shorter sequences."""
        return (self.node_types != PAD).any(-1)


def collate_graphs(graphs: Sequence[CellGraph]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch a list of cell graphs into dense (G, N) node types and (G, N, N) adjacency.

    The flat node list, batch vector and offset edge index are what `Batch.from_data_list` would build,
    made in one pass without a `Data` object per graph (that made building 20,000 DARTS cells ~2x slower);
    torch-geometric's `to_dense_batch` / `to_dense_adj` densify them.
    """
    sizes = torch.tensor([len(g.node_types) for g in graphs], dtype=torch.long)
    offsets = torch.cumsum(sizes, 0) - sizes
    x = torch.tensor([t for g in graphs for t in g.node_types], dtype=torch.long)
    batch = torch.repeat_interleave(torch.arange(len(graphs)), sizes)
    counts = torch.tensor([len(g.edges) for g in graphs], dtype=torch.long)
    edges = torch.tensor([e for g in graphs for e in g.edges], dtype=torch.long).reshape(-1, 2)
    edge_index = (edges + torch.repeat_interleave(offsets, counts)[:, None]).t().contiguous()
    types, _ = to_dense_batch(x, batch, fill_value=PAD, batch_size=len(graphs))
    adj = to_dense_adj(edge_index, batch, max_num_nodes=types.shape[1], batch_size=len(graphs))
    return types, adj


def build_graph_table(space: SearchSpace, archs: Sequence[Hashable], scope: str = "global") -> GraphTable:
    """Encode `archs` with `space.encode(arch, scope)` and collate the unique graphs once."""
    index: dict[CellGraph, int] = {}
    rows = []
    for arch in archs:
        seq = space.encode(arch, scope)
        if not seq:
            raise ValueError(f"space {space.name!r} encoded {space.to_str(arch)!r} as an empty sequence")
        rows.append([index.setdefault(g, len(index)) for g in seq])
    types, adj = collate_graphs(list(index))
    longest = max(len(r) for r in rows)
    if any(len(r) < longest for r in rows):  # pad with one empty graph (id G), see the module doc
        empty = len(index)
        types = torch.cat([types, torch.full((1, types.shape[1]), PAD, dtype=types.dtype)])
        adj = torch.cat([adj, adj.new_zeros(1, *adj.shape[1:])])
        rows = [r + [empty] * (longest - len(r)) for r in rows]
    return GraphTable(types, adj, torch.tensor(rows, dtype=torch.long))
