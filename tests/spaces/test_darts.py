"""DARTS / NB301 space: genotype strings, validation, isomorphism, op-on-node graphs, the global encoding,
sampling, target and benchmark networks, cost."""
import json
import random
from collections import Counter

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pipeline.errors import ArchError, ConfigError
from pipeline.spaces import get_space
from pipeline.spaces.darts import NODE_VOCAB, OPS, canonical_cell, cell_graph, to_genotype_text
from pipeline.spaces.darts_target import network_plan

T = {name: i for i, name in enumerate(NODE_VOCAB)}

# DARTS (2nd order) from the DARTS paper, in its own text form, and the same genotype in NASLib's compact form
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
DARTS_V2_COMPACT = ("[[(0, 3), (1, 3), (0, 3), (1, 3), (1, 3), (0, 2), (0, 2), (2, 5)], "
                    "[(0, 0), (1, 0), (2, 2), (1, 0), (0, 0), (2, 2), (2, 2), (1, 0)]]")
# canonical: each node's pairs sorted by (input, op id)
DARTS_V2_CANONICAL = ("[[(0, 3), (1, 3), (0, 3), (1, 3), (0, 2), (1, 3), (0, 2), (2, 5)], "
                      "[(0, 0), (1, 0), (1, 0), (2, 2), (0, 0), (2, 2), (1, 0), (2, 2)]]")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny convolutions: on a shared 2-core machine, torch's default thread pool makes them ~30x slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space():
    return get_space("darts")


@pytest.fixture(scope="module")
def nb301(shared_data) -> dict:
    with open(shared_data / "nasbench301" / "naslib_zc_nasbench301_725.json") as f:
        return json.load(f)["cifar10"]


def tiny(**settings):
    return get_space("darts", **{"target_channels": 4, "target_cells": 5, **settings})


# -- strings -----------------------------------------------------------------------------------------

def test_darts_text_and_naslib_compact_are_one_genotype(space):
    a, b = space.parse(DARTS_V2), space.parse(DARTS_V2_COMPACT)
    assert a == b
    assert space.to_str(a) == DARTS_V2_CANONICAL
    assert space.parse(DARTS_V2_CANONICAL) == a
    assert space.parse(to_genotype_text(a)) == a
    # model_search prints concats as range(2, 6); a qualified name and positional fields work too
    assert space.parse(DARTS_V2.replace("[2, 3, 4, 5]", "range(2, 6)")) == a
    assert space.parse("genotypes." + DARTS_V2) == a
    # NASLib's hashable compact (tuples), and any spacing
    assert space.parse(DARTS_V2_COMPACT.replace("[", "(").replace("]", ")")) == a
    assert space.parse(DARTS_V2_COMPACT.replace(" ", "")) == a
    assert space.parse(a) == a


def test_both_orders_of_a_nodes_inputs_are_one_architecture(space):
    swapped = DARTS_V2_COMPACT.replace("(1, 3), (0, 2), (0, 2), (2, 5)", "(0, 2), (1, 3), (2, 5), (0, 2)")
    assert swapped != DARTS_V2_COMPACT
    assert space.parse(swapped) == space.parse(DARTS_V2_COMPACT)


def test_every_key_of_the_shared_nb301_file_parses_and_round_trips(space, nb301):
    assert len(nb301) == 725
    archs = [space.parse(k) for k in nb301]
    assert len(set(archs)) == 725
    for key, arch in zip(nb301, archs):
        text = space.to_str(arch)
        assert space.parse(text) == arch and space.to_str(space.parse(text)) == text
        # the canonical form only reorders the two pairs of a node
        pairs = json.loads(key.replace("(", "[").replace(")", "]"))
        canon = json.loads(text.replace("(", "[").replace(")", "]"))
        for cell, ccell in zip(pairs, canon):
            for j in range(4):
                assert sorted(map(tuple, cell[2 * j:2 * j + 2])) == list(map(tuple, ccell[2 * j:2 * j + 2]))


BAD = [
    (DARTS_V2.replace("('dil_conv_3x3', 2)], normal_concat", "], normal_concat"), "normal cell has 7 (input, op) pairs"),
    (DARTS_V2_COMPACT.replace("[(0, 3), (1, 3), ", "[(0, 3), (2, 3), ", 1), "normal cell pair 1: input 2 out of range, "
                                                                          "node 0 takes inputs 0..1"),
    (DARTS_V2_COMPACT.replace("(2, 5)]", "(5, 5)]"), "normal cell pair 7: input 5 out of range, node 3 takes inputs 0..4"),
    (DARTS_V2_COMPACT.replace("(2, 5)]", "(-1, 5)]"), "normal cell pair 7: input -1 out of range"),
    (DARTS_V2.replace("'dil_conv_3x3'", "'conv_7x1_1x7'"), "unknown op 'conv_7x1_1x7' in normal cell pair 7"),
    (DARTS_V2_COMPACT.replace("(2, 5)]", "(2, 7)]"), "unknown op id 7 in normal cell pair 7"),
    (DARTS_V2.replace("reduce_concat=[2, 3, 4, 5]", "reduce_concat=[2, 3, 4, 5, 6]"), "reduce_concat is [2, 3, 4, 5, 6]"),
    (DARTS_V2.replace("('sep_conv_3x3', 1), ('skip_connect', 0)", "('sep_conv_3x3', 0), ('skip_connect', 0)"),
     "normal cell node 2 takes input 0 twice"),
    (DARTS_V2.replace(", reduce_concat=[2, 3, 4, 5]", ""), "Genotype lacks reduce_concat"),
    (DARTS_V2.replace("reduce_concat", "output_concat"), "unexpected or repeated Genotype field 'output_concat'"),
    ("Genotype(normal=__import__('os').getcwd(), normal_concat=[2, 3, 4, 5], reduce=[], reduce_concat=[2, 3, 4, 5])",
     "normal is not a literal"),
    ("Genotype(normal=[('sep_conv_3x3', 0)", "not a Python expression"),
    ("[" + DARTS_V2_COMPACT[1:-1] + ", []]", "exactly two cells"),
    ("[[(0, 3, 1)], []]", "is not an (input, op_id) pair"),
    ("sep_conv_3x3", "expected `Genotype(normal=..., ...)`"),
]


@pytest.mark.parametrize("bad, fragment", BAD)
def test_malformed_genotype_names_itself_and_the_problem(space, bad, fragment):
    with pytest.raises(ArchError) as e:
        space.parse(bad)
    assert fragment in str(e.value)
    assert repr(bad) in str(e.value)


def test_isomorphism_class_renumbers_independent_nodes(space):
    arch = space.parse(DARTS_V2)
    # normal: nodes 0 and 1 are identical and independent; node 3 reads node 0 (input 2). Swapping nodes 2 and 3
    # (neither reads the other) keeps the function: the renumbered genotype is another string, one class.
    normal, reduce = arch
    moved = (normal[0], normal[1], normal[3], normal[2])
    other = (moved, reduce)
    assert space.to_str(other) != space.to_str(arch)
    assert space.isomorphism_class(other) == space.isomorphism_class(arch)
    # a renumbering that would put a node before its input is not an equivalence: reading node 1 instead of node 0
    # where the two nodes differ is another cell
    a = space.parse("[[(0, 0), (1, 0), (0, 3), (1, 3), (2, 2), (3, 4), (0, 1), (4, 6)], " + DARTS_V2_COMPACT.split("], ")[1])
    b = space.parse("[[(0, 0), (1, 0), (0, 3), (1, 3), (2, 4), (3, 2), (0, 1), (4, 6)], " + DARTS_V2_COMPACT.split("], ")[1])
    assert space.isomorphism_class(a) != space.isomorphism_class(b)
    c = space.parse("[[(0, 3), (1, 3), (0, 0), (1, 0), (2, 4), (3, 2), (0, 1), (4, 6)], " + DARTS_V2_COMPACT.split("], ")[1])
    assert space.isomorphism_class(a) == space.isomorphism_class(c)  # nodes 0/1 swapped, readers follow
    assert canonical_cell(canonical_cell(a[0])) == canonical_cell(a[0])
    assert space.parse(space.isomorphism_class(a)) is not None  # the class is itself a canonical string


def test_the_725_genotypes_are_725_classes(space, nb301):
    assert len({space.isomorphism_class(space.parse(k)) for k in nb301}) == 725


# -- graphs and encodings ----------------------------------------------------------------------------

def test_op_on_node_graph_of_the_darts_v2_normal_cell_by_hand(space):
    normal, reduce = space.parse(DARTS_V2)
    g = cell_graph(normal, "normal")
    # nodes: in0, in1, then per intermediate node its sorted pairs: n0 (0 sep3)(1 sep3), n1 (0 sep3)(1 sep3),
    # n2 (0 skip)(1 sep3), n3 (0 skip)(2 dil3), output
    names = ["normal_input0", "normal_input1", "sep_conv_3x3", "sep_conv_3x3", "sep_conv_3x3", "sep_conv_3x3",
             "skip_connect", "sep_conv_3x3", "skip_connect", "dil_conv_3x3", "normal_output"]
    assert g.node_types == tuple(T[n] for n in names)
    inputs = [(0, 2), (1, 3), (0, 4), (1, 5), (0, 6), (1, 7), (0, 8), (2, 9), (3, 9)]  # dil3 reads node 0 = ops 2, 3
    assert set(g.edges) == set(inputs) | {(k, 10) for k in range(2, 10)}
    assert len(g.edges) == len(inputs) + 8
    r = cell_graph(reduce, "reduce")
    assert r.node_types[0] == T["reduce_input0"] and r.node_types[-1] == T["reduce_output"]
    # reduce node 1 = (1 max)(2 skip): its skip reads node 0, i.e. both op nodes 2 and 3
    assert {(2, 5), (3, 5)} <= set(r.edges) and (1, 4) in r.edges


def test_global_encoding_is_the_cell_sequence_with_reductions_at_thirds(space):
    arch = space.parse(DARTS_V2)
    seq = space.encode(arch)
    assert len(seq) == 8
    kinds = ["reduce" if g.node_types[0] == T["reduce_input0"] else "normal" for g in seq]
    assert kinds == ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    assert all(len(g.node_types) == 11 for g in seq)
    assert space.encode(arch, "cell") == [seq[0], seq[2]]
    five = get_space("darts", encoded_cells=5).encode(arch)
    assert [g.node_types[0] == T["reduce_input0"] for g in five] == [False, True, False, True, False]


def test_target_cells_draw_on_encoded_cells_of_their_kind_and_stage():
    assert [tiny().encoded_cell_of(i) for i in range(5)] == [0, 2, 3, 5, 6]
    assert [tiny(target_cells=3).encoded_cell_of(i) for i in range(3)] == [0, 2, 5]
    assert [tiny(target_cells=8).encoded_cell_of(i) for i in range(8)] == list(range(8))
    # encoded N R R N: stage 1 has no normal cell, its target normal cells fall back to stage 0's last
    four = tiny(target_cells=8, encoded_cells=4)
    assert [four.encoded_cell_of(i) for i in range(8)] == [0, 0, 1, 0, 0, 2, 3, 3]


# -- sampling ----------------------------------------------------------------------------------------

def _pairs(arch):
    return Counter((c, j, p) for c, cell in enumerate(arch) for j, node in enumerate(cell) for p in node)


def test_samples_mutations_and_crossovers_are_valid_genotypes(space):
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(300)]
    for a in archs:
        assert space.parse(space.to_str(a)) == a
        m = space.mutate(a, rng)
        assert m != a and space.parse(space.to_str(m)) == m
        # one edit: exactly one (input, op) pair of one node differs
        assert sum((_pairs(a) - _pairs(m)).values()) == 1
    for a, b in zip(archs[::2], archs[1::2]):
        child = space.crossover(a, b, rng)
        assert space.parse(space.to_str(child)) == child and child not in (a, b)


def test_sampling_is_uniform_over_input_pairs_and_ops(space):
    rng = random.Random(1)
    inputs, ops = Counter(), Counter()
    n = 3000
    for _ in range(n):
        node = space.sample(rng)[0][3]
        inputs[tuple(i for i, _ in node)] += 1
        ops.update(op for _, op in node)
    assert len(inputs) == 10 and all(abs(c - n / 10) < 0.2 * n / 10 for c in inputs.values())
    assert set(ops) == set(OPS) and all(abs(c - 2 * n / 7) < 0.15 * 2 * n / 7 for c in ops.values())


def test_settings_are_validated_naming_the_key():
    with pytest.raises(ConfigError, match="space.settings.target_cells"):
        get_space("darts", target_cells=2)
    with pytest.raises(ConfigError, match="space.settings.target_channels"):
        get_space("darts", target_channels=5)


# -- networks ----------------------------------------------------------------------------------------

def _benchmark_weights_as_target_params(bench: nn.Module, target: nn.Module) -> dict:
    """The benchmark network's parameters under the target network's names (stacked / joint tensors)."""
    p = dict(bench.named_parameters())
    out = {}
    for name, _ in target.named_parameters():
        if name.startswith("shared."):
            out[name] = p[name[len("shared."):]]
            continue
        prefix, leaf = name.rsplit(".", 1)
        if f"{prefix}.conv.weight" in p:  # ReLUConvBN
            out[name] = p[f"{prefix}.conv.weight"]
        elif f"{prefix}.conv_1.weight" in p:  # FactorizedReduce
            out[name] = torch.cat([p[f"{prefix}.conv_1.weight"], p[f"{prefix}.conv_2.weight"]])
        elif f"{prefix}.{leaf}1.weight" in p:  # sep conv: two stacked layers
            out[name] = torch.cat([p[f"{prefix}.{leaf}1.weight"], p[f"{prefix}.{leaf}2.weight"]])
        else:
            out[name] = p[f"{prefix}.{leaf}.weight"]
    return out


@pytest.mark.parametrize("cells", [5, 3])
def test_target_network_computes_the_darts_network_given_its_weights(cells):
    sp = tiny(target_cells=cells, benchmark_channels=4, encoded_cells=cells, pool_bn=False)
    rng = random.Random(cells)
    torch.manual_seed(0)
    x = torch.randn(6, 3, 16, 16)
    for arch in [sp.parse(DARTS_V2)] + [sp.sample(rng) for _ in range(3)]:
        bench = sp.build_benchmark_net(arch, 10).train()
        target = sp.build_target(arch, 10)
        params = _benchmark_weights_as_target_params(bench, target)
        assert torch.allclose(functional_call(target, params, (x,), strict=True), bench(x), atol=1e-5)


def test_generated_weights_train_the_target_network_on_16px_images():
    sp = tiny()
    arch = sp.parse(DARTS_V2)
    target = sp.build_target(arch, 10, device="meta")
    heads = sp.hyper_heads()
    torch.manual_seed(0)
    params = {f"shared.{n}": p for n, p in sp.build_shared(10).named_parameters()}
    generated = {s.name: (torch.randn(heads[s.kind]) * 0.3)[tuple(slice(0, d) for d in s.shape)].clone()
                 .requires_grad_() for s in target.param_slots}
    logits = functional_call(target, {**params, **generated}, (torch.randn(4, 3, 16, 16),), strict=True)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 5, 9])).backward()
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in generated.values())


def test_parameter_slots_belong_to_the_nodes_that_own_them():
    sp = tiny()  # C = 4, 5 cells: N R N R N
    arch = sp.parse("[[(0, 1), (1, 3), (1, 4), (2, 5), (1, 2), (3, 6), (2, 0), (4, 2)], "
                    "[(0, 2), (1, 6), (0, 4), (1, 3), (1, 1), (3, 2), (0, 6), (1, 0)]]")
    slots = {s.name: s for s in sp.build_target(arch, 10, device="meta").param_slots}
    s = slots["cells.0.pre0.weight"]  # the stem's 3C channels -> C, owned by input node c_{k-2}
    assert (s.graph, s.node, s.kind, s.shape) == (0, 0, "conv1x1", (4, 12, 1, 1))
    s = slots["cells.1.pre1.weight"]  # the reduction cell (encoded cell 2) doubles the width
    assert (s.graph, s.node, s.kind, s.shape) == (2, 1, "conv1x1", (8, 16, 1, 1))
    s = slots["cells.2.pre0.weight"]  # after the reduction: FactorizedReduce, one joint (C, C_in) tensor
    assert (s.graph, s.node, s.kind, s.shape) == (3, 0, "conv1x1", (8, 16, 1, 1))
    # normal node 0, pair 1 = (1, sep_conv_3x3) -> op node 3; the two stacked depthwise layers are one tensor
    assert (slots["cells.0.ops.1.dw"].node, slots["cells.0.ops.1.dw"].shape) == (3, (8, 1, 3, 3))
    assert slots["cells.0.ops.1.pw"].kind == "pw1x1" and slots["cells.0.ops.1.pw"].shape == (8, 4, 1, 1)
    assert slots["cells.0.ops.3.dw"].kind == "dw3x3" and slots["cells.0.ops.3.dw"].shape == (4, 1, 3, 3)  # dil
    assert slots["cells.4.ops.2.dw"].kind == "dw5x5" and slots["cells.4.ops.2.dw"].graph == 6
    # a reduction's skip_connect on input 0 is a FactorizedReduce; on an intermediate node it is the identity
    assert slots["cells.1.ops.0.weight"].kind == "conv1x1" and "cells.3.ops.0.weight" in slots
    assert not any(n.startswith(("cells.1.ops.5.", "cells.0.ops.4.")) for n in slots)
    assert not any(n.startswith("cells.0.ops.6.") for n in slots)  # max pool: no weights


# -- cost --------------------------------------------------------------------------------------------

def _macs(net: nn.Module, side: int) -> int:
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        net(torch.randn(1, 3, side, side))
    for h in handles:
        h.remove()
    return total


def test_cost_counts_the_benchmark_network(space):
    rng = random.Random(3)
    for arch in [space.parse(DARTS_V2)] + [space.sample(rng) for _ in range(2)]:
        cost = space.cost(arch)
        net = space.build_benchmark_net(arch, 10).eval()
        assert round(cost["params"] * 1e6) == sum(p.numel() for p in net.parameters())
        assert round(cost["flops"] * 1e6) == _macs(net, 32)
        assert 0.2 < cost["params"] < 2.0 and 30 < cost["flops"] < 400  # NB301: 0.45-1.45 M, 90-240 MFLOPs


def test_params_equal_naslibs_plus_the_op_bn_affine_it_leaves_out(space, nb301):
    # NASLib's NB301 graph builds ops with affine=False BN; DARTS' trained network has affine BN
    for key in list(nb301)[:100]:
        arch = space.parse(key)
        genotype = dict(zip(("normal", "reduce"), arch))
        affine = 0
        for plan in network_plan(32, 8, 32):
            for node in genotype[plan.kind]:
                for inp, op in node:
                    per = {"sep": 4, "dil": 2}.get(op[:3], 2 if op == "skip_connect" and plan.kind == "reduce"
                                                   and inp < 2 else 0)
                    affine += per * plan.c
        assert round(space.cost(arch)["params"] * 1e6) - affine == round(nb301[key]["params"]["score"] * 1e6)


def test_generic_table_of_naslib_keys_holds_canonical_strings(tmp_path, space, nb301):
    from data_prep.tables import build_generic_table
    keys = list(nb301)[:5]
    csv = tmp_path / "darts.csv"
    csv.write_text("arch,val_accuracy\n" + "".join(f'"{k}",{nb301[k]["val_accuracy"]}\n' for k in keys))
    table = build_generic_table([csv], "darts")
    assert sorted(table["arch"].to_pylist()) == sorted(space.to_str(space.parse(k)) for k in keys)
