"""GRAF-style graph features, computed from the space's own cell graphs."""
import numpy as np

from pipeline.features import compute_features
from pipeline.features.graf import cell_features, op_subsets
from pipeline.spaces import get_space
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
