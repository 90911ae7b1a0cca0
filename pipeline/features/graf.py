"""GRAF-style graph features (Kadlecová et al., ICML 2024) computed from the space's own cell graphs.

For each graph of the architecture's `cell`-scope encoding (NB201: its one cell) in operation-on-node
form, and for each subset A of the space's cell ops (`space.cell_ops`):

- `min_path[A]`: fewest op nodes on an input→output path that uses only ops in A (n+1 when there is none)
- `max_on_path[A]`: most A-op nodes on any input→output path (0 when the output is unreachable)
- `paths[A]`: number of input→output paths that use only ops in A
- `out_deg[A]` / `in_deg[A]`: edges from the input(s) into A ops, from A ops into the output(s)

plus the count of each op, and whatever `space.extra_features(arch)` adds (NB201: the op on each edge,
one-hot). Inputs are the graph's source nodes, outputs its sink nodes. Spaces with many ops (> 4) use
the subsets of size 1, 2, n−1 and n, not all 2^n − 1. All of it is plain dynamic programming over the
DAG (edges go from lower to higher node index), vectorised over cells and subsets.
"""
from __future__ import annotations

import itertools
from typing import Hashable, Sequence

import numpy as np

from pipeline.features import FeatureBlock, register_feature_set
from pipeline.spaces.base import CellGraph


def op_subsets(ops: Sequence[str]) -> list[tuple[str, ...]]:
    n = len(ops)
    sizes = range(1, n + 1) if n <= 4 else sorted({1, 2, n - 1, n})
    return [c for r in sizes for c in itertools.combinations(ops, r)]


def cell_features(graph: CellGraph, vocab: Sequence[str], ops: Sequence[str],
                  subsets: Sequence[tuple[str, ...]]) -> list[float]:
    """One cell's features (counts, then 5 per subset), as `graph_features` computes them in batches."""
    return graph_features([graph], vocab, ops, subsets)[0].tolist()


def graph_features(graphs: Sequence[CellGraph], vocab: Sequence[str], ops: Sequence[str],
                   subsets: Sequence[tuple[str, ...]], chunk: int = 2048) -> np.ndarray:
    """(len(graphs), len(ops) + 5 * len(subsets)) features, `chunk` graphs at a time."""
    col_of_type = np.array([list(ops).index(t) if t in ops else len(ops) for t in vocab], dtype=np.int64)
    masks = np.array([[op in a for op in ops] + [False] for a in subsets], dtype=bool).reshape(len(subsets), -1)
    parts = [_chunk_features(graphs[i:i + chunk], col_of_type, masks) for i in range(0, len(graphs), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, len(ops) + 5 * len(subsets)))


def _chunk_features(graphs: Sequence[CellGraph], col_of_type: np.ndarray, masks: np.ndarray) -> np.ndarray:
    # The dynamic programming runs node by node (topological order: edges go from lower to higher index),
    # each step vectorised over graphs (padded to the largest) x subsets: a Python loop per graph and
    # subset cost ~1 ms per cell, 90 % of the time of scoring 10,000 DARTS genotypes.
    g_n, n_ops = len(graphs), masks.shape[1] - 1
    sizes = np.array([len(g.node_types) for g in graphs])
    n = int(sizes.max())
    node_op = np.full((g_n, n), n_ops, dtype=np.int64)  # padding nodes: no op, no edges
    edges = [(i, s, d) for i, g in enumerate(graphs) for s, d in g.edges]
    adj = np.zeros((g_n, n, n), dtype=np.int64)        # edge multiplicities (a repeated edge counts twice)
    for i, g in enumerate(graphs):
        node_op[i, :sizes[i]] = col_of_type[list(g.node_types)]
    if edges:
        np.add.at(adj, tuple(np.array(edges).T), 1)
    has_pred, has_succ = adj.sum(1) > 0, adj.sum(2) > 0
    source = ~has_pred & (np.arange(n) < sizes[:, None])
    sink = ~has_succ & has_pred
    is_end = source | sink
    member = masks.T[node_op].transpose(0, 2, 1)                        # (G, S, N): op in subset
    hit = (member & ~is_end[:, None, :]).astype(np.float64)              # an op node of the subset
    allowed = member | is_end[:, None, :]                               # a path may pass through it
    inf = np.inf
    shortest = np.full(member.shape, inf)   # fewest op nodes on an allowed path from a source
    most = np.full(member.shape, -inf)      # most subset op nodes on any path from a source
    paths = np.zeros(member.shape)          # allowed paths from the sources (float64: exact below 2^53)
    for v in range(n):
        if v:
            a = adj[:, :v, v]
            linked = (a > 0)[:, None, :]
            step = (~is_end[:, v]).astype(np.float64)[:, None]
            most[:, :, v] = np.where(linked, most[:, :, :v], -inf).max(-1) + hit[:, :, v]
            ok = allowed[:, :, v]
            shortest[:, :, v] = np.where(ok, np.where(linked, shortest[:, :, :v], inf).min(-1) + step, inf)
            paths[:, :, v] = np.where(ok, (paths[:, :, :v] * a[:, None, :]).sum(-1), 0.0)
        src = source[:, v]
        shortest[src, :, v], most[src, :, v], paths[src, :, v] = 0.0, 0.0, 1.0
    at_sink = sink[:, None, :]
    s_min = np.where(at_sink, shortest, inf).min(-1)
    s_max = np.where(at_sink, most, -inf).max(-1)
    from_sources = (adj * source[:, :, None]).sum(1)[:, None, :]   # edges from a source into each node
    into_sinks = (adj * sink[:, None, :]).sum(2)[:, None, :]       # edges from each node into a sink
    per_subset = np.stack([np.where(s_min < inf, s_min, (sizes + 1.0)[:, None]), np.where(s_max > -inf, s_max, 0.0),
                           (paths * at_sink).sum(-1), (hit * from_sources).sum(-1), (hit * into_sinks).sum(-1)], -1)
    counts = np.eye(n_ops + 1)[node_op].sum(1)[:, :n_ops]
    return np.concatenate([counts, per_subset.reshape(g_n, -1)], 1)


def feature_names(ops: Sequence[str], subsets: Sequence[tuple[str, ...]]) -> list[str]:
    names = [f"count[{op}]" for op in ops]
    for a in subsets:
        key = "+".join(a)
        names += [f"min_path[{key}]", f"max_on_path[{key}]", f"paths[{key}]", f"out_deg[{key}]", f"in_deg[{key}]"]
    return names


@register_feature_set("graf")
def graf_features(space, archs: Sequence[Hashable], table=None) -> FeatureBlock:
    """GRAF features of each graph of the `cell` encoding side by side; architectures with fewer graphs
    (variable depth, e.g. ViT layers) get zeros for the missing ones and a `cells` count tells them apart."""
    ops = tuple(space.cell_ops)
    subsets = op_subsets(ops)
    per_cell = feature_names(ops, subsets)
    encoded = [space.encode(arch, "cell") for arch in archs]
    unique = list(dict.fromkeys(g for gs in encoded for g in gs))  # each distinct cell graph once
    index = {g: i for i, g in enumerate(unique)}
    by_graph = graph_features(unique, space.node_vocab, ops, subsets)
    cells = [[by_graph[index[g]] for g in gs] for gs in encoded]
    extras = [space.extra_features(arch) for arch in archs]
    longest = max((len(r) for r in cells), default=0)
    varying = any(len(r) != longest for r in cells)
    extra_names = list(extras[0]) if extras else []
    values = np.zeros((len(archs), longest * len(per_cell) + len(extra_names) + int(varying)))
    for i, (rows, extra) in enumerate(zip(cells, extras)):
        flat = np.concatenate(rows) if rows else []
        values[i, :len(flat)] = flat
        values[i, longest * len(per_cell):longest * len(per_cell) + len(extra_names)] = list(extra.values())
        if varying:
            values[i, -1] = len(rows)
    names = [f"g{i}.{c}" for i in range(longest) for c in per_cell] + extra_names + (["cells"] if varying else [])
    return FeatureBlock(names, values)
