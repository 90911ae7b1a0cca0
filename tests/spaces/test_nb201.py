"""NB201 space: strings, isomorphism classes, cell graphs, the global encoding, cost."""
import csv
import random

import pytest

from pipeline.errors import ArchError
from pipeline.spaces import get_space
from pipeline.spaces.nb201 import NODE_VOCAB, REDUCTION_GRAPH

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
T = {name: i for i, name in enumerate(NODE_VOCAB)}


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


@pytest.fixture(scope="module")
def test_rows(shared_data):
    with open(shared_data / "nasbench201" / "nb201_200ep_test_acc.csv") as f:
        return list(csv.DictReader(f))


def test_parse_roundtrip_all_benchmark_strings(space, test_rows):
    assert len(test_rows) == 15625
    for r in test_rows:
        assert space.to_str(space.parse(r["ArchitectureString"])) == r["ArchitectureString"]


def test_enumerate_gives_every_cell_once(space, test_rows):
    archs = list(space.enumerate())
    assert len(set(archs)) == 15625
    assert {space.to_str(a) for a in archs} == {r["ArchitectureString"] for r in test_rows}


def test_isomorphism_class_matches_the_benchmark_unique_string(space, test_rows):
    for r in test_rows:
        assert space.isomorphism_class(space.parse(r["ArchitectureString"])) == r["UniqueString"]
    assert len({r["UniqueString"] for r in test_rows}) == 6466


def test_naslib_tuple_uses_its_own_edge_order(space):
    # the SOURCES.md example
    expected = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    assert space.to_str(space.parse("(4, 0, 3, 1, 4, 3)")) == expected


@pytest.mark.parametrize("bad, fragment", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2 needs 2 inputs"),
    ("nor_conv_3x3", "expected '|op~0|"),
    ("|conv_7x7~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "unknown op 'conv_7x7'"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "should be 'op~0'"),
    ("(9, 0, 3, 1, 4, 3)", "NASLib"),
])
def test_malformed_arch_names_the_string_and_the_problem(space, bad, fragment):
    with pytest.raises(ArchError) as e:
        space.parse(bad)
    assert fragment in str(e.value)
    if not bad.startswith("("):
        assert repr(bad) in str(e.value)


def test_cell_graph_of_a_known_arch(space):
    g = space.cell_graph(space.parse(ARCH))
    # nodes: in, e0 conv3 (1<-0), e1 conv3 (2<-0), e2 pool (2<-1), e3 skip (3<-0), e4 conv3 (3<-1), e5 skip (3<-2), out
    assert g.node_types == (T["input"], T["nor_conv_3x3"], T["nor_conv_3x3"], T["avg_pool_3x3"], T["skip_connect"],
                            T["nor_conv_3x3"], T["skip_connect"], T["output"])
    assert set(g.edges) == {(0, 1), (0, 2), (0, 4), (1, 3), (1, 5), (2, 6), (3, 6), (4, 7), (5, 7), (6, 7)}


def test_global_encoding_is_the_network_sequence(space):
    seq = space.encode(space.parse(ARCH))
    cell = space.cell_graph(space.parse(ARCH))
    assert len(seq) == 17
    assert [g == REDUCTION_GRAPH for g in seq] == [False] * 5 + [True] + [False] * 5 + [True] + [False] * 5
    assert all(g == cell for i, g in enumerate(seq) if i not in (5, 11))
    assert space.encode(space.parse(ARCH), scope="cell") == [cell]
    assert len(get_space("nb201", cells_per_stage=2).encode(space.parse(ARCH))) == 8


def test_dead_ops_are_pruned_so_equivalent_cells_encode_alike(space):
    # node 1 feeds nothing (its out-edges are none): the op on edge (1<-0) cannot matter
    a = space.parse("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|")
    b = space.parse("|avg_pool_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|none~1|avg_pool_3x3~2|")
    assert space.encode(a) == space.encode(b)
    assert get_space("nb201", prune=False).encode(a) != get_space("nb201", prune=False).encode(b)
    # all-none cell: input and output only
    empty = space.cell_graph(space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    assert empty.node_types == (T["input"], T["output"]) and empty.edges == ()


def test_params_match_the_benchmark_exactly(space, shared_data):
    with open(shared_data / "nasbench201" / "nb201_cifar10_unique_zc_flops_params.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9445
    for r in rows:
        assert space.cost(space.parse(r["net"]))["params"] == pytest.approx(float(r["params"]), abs=1e-6), r["net_str"]


def test_sample_and_mutate(space):
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(200)]
    assert len(set(archs)) > 150
    for a in archs[:50]:
        m = space.mutate(a, rng)
        assert sum(x != y for x, y in zip(a, m)) == 1
        space.parse(space.to_str(m))
