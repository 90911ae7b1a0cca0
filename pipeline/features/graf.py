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
DAG (edges go from lower to higher node index), so it costs microseconds per cell.
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
    n = len(graph.node_types)
    names = [vocab[t] for t in graph.node_types]
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for s, d in graph.edges:
        preds[d].append(s)
        succs[s].append(d)
    sources = [v for v in range(n) if not preds[v]]
    sinks = [v for v in range(n) if not succs[v] and preds[v]]
    is_end = [v in sources or v in sinks for v in range(n)]
    out = [float(sum(nm == op for nm in names)) for op in ops]
    inf = float("inf")
    for subset in subsets:
        allowed = [is_end[v] or names[v] in subset for v in range(n)]
        shortest = [inf] * n
        most = [-inf] * n
        paths = [0] * n
        for v in range(n):  # topological order
            if v in sources:
                shortest[v], most[v], paths[v] = 0.0, 0.0, 1
                continue
            mine = 0.0 if is_end[v] else 1.0
            hit = 1.0 if (not is_end[v] and names[v] in subset) else 0.0
            for p in preds[v]:
                most[v] = max(most[v], most[p] + hit)
                if allowed[v]:
                    shortest[v] = min(shortest[v], shortest[p] + mine)
                    paths[v] += paths[p]
            if not allowed[v]:
                shortest[v], paths[v] = inf, 0
        s_min = min((shortest[v] for v in sinks), default=inf)
        s_max = max((most[v] for v in sinks), default=-inf)
        out += [s_min if s_min < inf else float(n + 1), s_max if s_max > -inf else 0.0,
                float(sum(paths[v] for v in sinks)),
                float(sum(1 for v in sources for w in succs[v] if not is_end[w] and names[w] in subset)),
                float(sum(1 for v in sinks for w in preds[v] if not is_end[w] and names[w] in subset))]
    return out


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
    cache: dict[CellGraph, list[float]] = {}
    cells, extras = [], []
    for arch in archs:
        rows = []
        for g in space.encode(arch, "cell"):
            if g not in cache:
                cache[g] = cell_features(g, space.node_vocab, ops, subsets)
            rows.append(cache[g])
        cells.append(rows)
        extras.append(space.extra_features(arch))
    longest = max((len(r) for r in cells), default=0)
    varying = any(len(r) != longest for r in cells)
    extra_names = list(extras[0]) if extras else []
    values = np.zeros((len(archs), longest * len(per_cell) + len(extra_names) + int(varying)))
    for i, (rows, extra) in enumerate(zip(cells, extras)):
        flat = [v for row in rows for v in row]
        values[i, :len(flat)] = flat
        values[i, longest * len(per_cell):longest * len(per_cell) + len(extra_names)] = list(extra.values())
        if varying:
            values[i, -1] = len(rows)
    names = [f"g{i}.{c}" for i in range(longest) for c in per_cell] + extra_names + (["cells"] if varying else [])
    return FeatureBlock(names, values)
