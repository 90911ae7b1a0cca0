"""The shared GCN that encodes a whole network as a sequence of cell graphs (METHOD.md §1-2).

Layer (Neural Predictor's bidirectional GCN): V' = ½·ReLU(Â V W⁺) + ½·ReLU(Âᵀ V W⁻), where Â is
E + I row-normalised and Âᵀ is Eᵀ + I row-normalised, dropout after each layer.

Cells are encoded in network order by the *same* GCN. Before cell i, the pooled embedding of cell
i−1, z(i−1), is injected into each of its nodes (z(0) = 0): `sum` h0 = embed(V_i) + z(i−1), or
`concat` h0 = W[embed(V_i); z(i−1)]. z(i) = mean over the cell's nodes; the architecture embedding is
the mean of the z(i).
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
        # W⁺ and W⁻ as one matmul (half the kernel launches on the small per-cell tensors)
        self.w = nn.Linear(dim_in, 2 * dim_out)

    def forward(self, h: torch.Tensor, a_both: torch.Tensor) -> torch.Tensor:
        """h (B, N, D_in); a_both (2, B, N, N) = stacked (Â, Âᵀ-normalised) -> (B, N, D_out)."""
        B, N, _ = h.shape
        hw = self.w(h).view(B, N, 2, -1).permute(2, 0, 1, 3)  # (2, B, N, D): W⁺ and W⁻ halves
        # both directions in one matmul; mean over the pair = ½·ReLU(ÂVW⁺) + ½·ReLU(ÂᵀVW⁻)
        return F.relu(a_both @ hw).mean(0)


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

    def forward(self, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        types, adj = batch.node_types, batch.adj
        B, S, N = types.shape
        mask = (types >= 0).to(adj.dtype)                       # (B, S, N)
        a_both = torch.stack(normalised_adjacency(adj))          # (2, B, S, N, N)
        x0 = self.embed(torch.where(types >= 0, types, self.vocab_size))  # (B, S, N, D)
        z_prev = x0.new_zeros(B, self.hidden)
        nodes, cells = [], []
        for s in range(S):
            if self.inject is None:
                h = x0[:, s] + z_prev[:, None, :]
            else:
                h = self.inject(torch.cat([x0[:, s], z_prev[:, None, :].expand(B, N, self.hidden)], -1))
            for layer in self.layers:
                h = self.dropout(layer(h, a_both[:, :, s]))
            m = mask[:, s, :, None]
            z_prev = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            nodes.append(h)
            cells.append(z_prev)
        z = torch.stack(cells, 1)
        return z.mean(1), torch.stack(nodes, 1), z
