"""GRAF-style graph features, computed from the space's own cell graphs."""
import random
from typing import Sequence

import numpy as np
import pytest

from pipeline.features import compute_features
from pipeline.features.graf import cell_features, graph_features, op_subsets
from pipeline.spaces import SPACES, get_space
from pipeline.spaces.base import CellGraph

VOCAB = ("input", "output", "a", "b")


def test_paths_by_hand():
    # input -> a -> b -> output and input -> b -> output
    g = CellGraph((0, 2, 3, 1), ((0, 1), (1, 2), (0, 2), (2, 3)))
    subsets = [("a",), ("b",), ("a", "b")]
    f = cell_features(g, VOCAB, ("a", "b"), subsets)
    counts, per = f[:2], [f[2 + 5 * i: 7 + 5 * i] for i in range(3)]
    assert counts == [1.0, 1.0]
    # only a: no input->output path of a's (b is on every path) -> n+1; at most 1 a on a path
    assert per[0] == [5.0, 1.0, 0.0, 1.0, 0.0]
    # only b: the path input->b->output, 1 op long; b on both paths at most once
    assert per[1] == [1.0, 1.0, 1.0, 1.0, 1.0]
    # a and b: shortest 1 op, longest 2 ops on a path, 2 paths, out of input 2 edges, into output 1
    assert per[2] == [1.0, 2.0, 2.0, 2.0, 1.0]


def test_subsets_of_many_ops_are_capped():
    assert len(op_subsets(("a", "b", "c", "d"))) == 15
    subsets = op_subsets(tuple("abcdefg"))
    assert {len(s) for s in subsets} == {1, 2, 6, 7} and len(subsets) == 7 + 21 + 7 + 1


def test_nb201_features_are_finite_and_separate_cells():
    space = get_space("nb201")
    archs = [space.parse(s) for s in (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")]
    block = compute_features(["graf"], space, archs)
    assert block.values.shape == (3, len(block.names)) and np.isfinite(block.values).all()
    col = {n: i for i, n in enumerate(block.names)}
    assert block.values[0, col["graf:g0.count[nor_conv_3x3]"]] == 6
    assert block.values[0, col["graf:g0.paths[nor_conv_3x3]"]] == 4      # 0-3, 0-1-3, 0-2-3, 0-1-2-3
    assert block.values[1, col["graf:g0.count[avg_pool_3x3]"]] == 0      # its pool is on no path: pruned
    assert block.values[2, col["graf:g0.paths[skip_connect+nor_conv_1x1+nor_conv_3x3+avg_pool_3x3]"]] == 0


def test_cost_and_zero_cost_feature_sets(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pytest

    from pipeline.data.tables import load_table
    from pipeline.errors import DataError

    space = get_space("nb201")
    texts = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
             "|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"]
    archs = space.parse_many(texts)
    cost = compute_features(["cost"], space, archs)
    assert cost.names == ["cost:log_params", "cost:log_flops"] and cost.values[0, 0] > cost.values[1, 0]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"arch": texts, "acc": [90.0, 40.0], "zc_synflow": [1e30, -2.0]}), path)
    zc = compute_features(["zc"], space, archs[::-1], load_table(path))
    assert zc.names == ["zc:zc_synflow"] and zc.values[:, 0].tolist() == pytest.approx([-np.log(3.0), np.log1p(1e30)])
    with pytest.raises(DataError, match="no zc_"):
        pq.write_table(pa.table({"arch": texts, "acc": [90.0, 40.0]}), tmp_path / "n.parquet")
        compute_features(["zc"], space, archs, load_table(tmp_path / "n.parquet"))


# The per-subset loop the vectorised cell_features replaced, kept as the reference it must equal.
def reference_cell_features(graph: CellGraph, vocab: Sequence[str], ops: Sequence[str],
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


def _random_dag(rng: random.Random, vocab_size: int) -> CellGraph:
    n = rng.randint(2, 9)
    edges = tuple(sorted({(s, d) for s in range(n) for d in range(s + 1, n) if rng.random() < 0.35}))
    return CellGraph(tuple(rng.randrange(vocab_size) for _ in range(n)), edges)


@pytest.mark.parametrize("name", [n for n in SPACES.names() if SPACES.get(n).cell_ops])
def test_vectorised_features_equal_the_per_subset_loop(name):
    space = get_space(name)
    ops, vocab = tuple(space.cell_ops), space.node_vocab
    subsets = op_subsets(ops)
    rng = random.Random(0)
    graphs = [g for _ in range(30) for g in space.encode(space.sample(rng), "cell")]
    graphs += [_random_dag(rng, len(vocab)) for _ in range(200)]  # several sources / sinks, isolated nodes
    expected = [reference_cell_features(g, vocab, ops, subsets) for g in graphs]
    # one batch padded to the largest graph, and chunks that split it unevenly
    for chunk in (len(graphs), 7):
        got = graph_features(graphs, vocab, ops, subsets, chunk=chunk)
        for g, row, want in zip(graphs, got.tolist(), expected):
            assert row == want, g
