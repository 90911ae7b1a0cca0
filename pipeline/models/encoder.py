"""The shared GCN that encodes a whole network as a sequence of cell graphs (METHOD.md §1-2).

Layer (Neural Predictor's bidirectional GCN): V' = ½·ReLU(Â V W⁺) + ½·ReLU(Âᵀ V W⁻), where Â is
E + I row-normalised and Âᵀ is Eᵀ + I row-normalised, dropout after each layer.

Cells are encoded in network order by the *same* GCN. Before cell i, the pooled embedding of cell
i−1, z(i−1), is injected into each of its nodes (z(0) = 0): `sum` h0 = embed(V_i) + z(i−1), or
`concat` h0 = W[embed(V_i); z(i−1)]. z(i) = mean over the cell's nodes; the architecture embedding is
the mean of the z(i). Padding cells (shorter sequences, see pipeline/data/graphs.py) pass z(i−1) on
unchanged and are left out of that mean.

Dropout masks can come from one random stream per architecture (`drop_seeds`): then an architecture's
embedding does not depend on which other architectures share its forward pass, so micro-batching and
the number of ranks change speed, not the result.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.graphs import GraphBatch


def normalised_adjacency(adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-normalised (E + I) and (Eᵀ + I) for a batch of (…, N, N) adjacency matrices."""
    eye = torch.eye(adj.shape[-1], dtype=adj.dtype, device=adj.device)
    fwd = adj + eye
    bwd = adj.transpose(-1, -2) + eye
    return fwd / fwd.sum(-1, keepdim=True), bwd / bwd.sum(-1, keepdim=True)


class BiGCNLayer(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        # W⁺ and W⁻ as one parameter: row block 0 is W⁺, block 1 is W⁻
        self.w = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, h: torch.Tensor, a_both: torch.Tensor) -> torch.Tensor:
        """h (B, N, D_in); a_both (2, B, N, N) = stacked (Â, Âᵀ-normalised), contiguous -> (B, N, D_out).

        ½·ReLU(Â V W⁺) + ½·ReLU(Âᵀ V W⁻) as two batched GEMMs that write direction-major output, so the
        adjacency product reads contiguous memory (a permuted view forced a copy of every activation:
        this layout made scoring NB201 ~3x faster on a CPU).
        """
        B, N, d_in = h.shape
        d = self.w.out_features // 2
        weight = self.w.weight.view(2, d, d_in).transpose(1, 2)             # (2, D_in, D)
        hw = torch.baddbmm(self.w.bias.view(2, 1, d), h.reshape(1, B * N, d_in).expand(2, -1, -1), weight)
        y = torch.matmul(a_both, hw.view(2, B, N, d)).clamp_min_(0)
        return (y[0] + y[1]).mul_(0.5)


class GraphSequenceEncoder(nn.Module):
    """Encodes (B, S) cell graphs in order; returns the architecture embedding (B, D), node
    embeddings (B, S, N, D) for the hypernetwork, and per-cell embeddings z (B, S, D)."""

    def __init__(self, vocab_size: int, hidden: int, layers: int, dropout: float, connectivity: str):
        super().__init__()
        if connectivity not in ("sum", "concat"):
            raise ValueError(f"connectivity must be 'sum' or 'concat', got {connectivity!r}")
        self.connectivity = connectivity
        self.hidden = hidden
        # One-hot node features through a linear map = an embedding; index vocab_size is padding.
        self.embed = nn.Embedding(vocab_size + 1, hidden, padding_idx=vocab_size)
        self.vocab_size = vocab_size
        self.inject = nn.Linear(2 * hidden, hidden) if connectivity == "concat" else None
        self.layers = nn.ModuleList(BiGCNLayer(hidden, hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)

    def dropout_masks(self, drop_seeds: torch.Tensor, S: int, N: int) -> torch.Tensor | None:
        """(B, S, layers, N, D) inverted-dropout masks, architecture b's drawn from its own seed."""
        p = self.dropout.p
        if not self.training or p == 0.0:
            return None
        shape = (S, len(self.layers), N, self.hidden)
        masks = [torch.rand(shape, generator=torch.Generator().manual_seed(int(seed))) >= p
                 for seed in drop_seeds.tolist()]
        return torch.stack(masks).to(self.embed.weight.dtype) / (1.0 - p)

    def forward(self, batch: GraphBatch, drop_seeds: torch.Tensor | None = None, keep_nodes: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """`drop_seeds` (B,): per-architecture dropout streams (training only); None: the global RNG.
        `keep_nodes=False` (scoring): no node embeddings are kept (they are only for the hypernetwork)."""
        types, adj = batch.node_types, batch.adj
        B, S, N = types.shape
        mask = (types >= 0).to(adj.dtype)                       # (B, S, N)
        real = batch.cell_mask                                  # (B, S)
        padded = not bool(real.all())
        # (S, 2, B, N, N): each cell's pair of normalised adjacencies contiguous for the layers' matmuls
        a_both = torch.stack(normalised_adjacency(adj)).permute(2, 0, 1, 3, 4).contiguous()
        x0 = self.embed(torch.where(types >= 0, types, self.vocab_size))  # (B, S, N, D)
        drop = self.dropout_masks(drop_seeds, S, N) if drop_seeds is not None else None
        if drop is not None:
            drop = drop.to(x0.device)
        z_prev = x0.new_zeros(B, self.hidden)
        nodes, cells = [], []
        for s in range(S):
            if self.inject is None:
                h = x0[:, s] + z_prev[:, None, :]
            else:
                h = self.inject(torch.cat([x0[:, s], z_prev[:, None, :].expand(B, N, self.hidden)], -1))
            for i, layer in enumerate(self.layers):
                h = layer(h, a_both[s])
                h = self.dropout(h) if drop is None else h * drop[:, s, i]
            m = mask[:, s, :, None]
            z_cell = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            z_prev = torch.where(real[:, s, None], z_cell, z_prev) if padded else z_cell
            if keep_nodes:
                nodes.append(h)
            cells.append(z_cell)
        z = torch.stack(cells, 1)
        node_emb = torch.stack(nodes, 1) if keep_nodes else None
        if not padded:
            return z.mean(1), node_emb, z
        w = real.to(z.dtype)[..., None]
        return (z * w).sum(1) / w.sum(1).clamp_min(1.0), node_emb, z * w
