"""NB101 space: text forms, validation, pruning, the benchmark's hash and parameter counts, sampling and
mutation, the global encoding, and the target / benchmark networks."""
import json
import random

import pytest
import torch
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import load_config
from pipeline.data.graphs import build_graph_table
from pipeline.errors import ArchError, ConfigError
from pipeline.models.predictor import HyperNASModel
from pipeline.spaces import SHARED_PREFIX, get_space
from pipeline.spaces.nb101 import DOWNSAMPLE_GRAPH, NODE_VOCAB, _cost
from pipeline.spaces.nb101_cell import MAX_EDGES, MAX_VERTICES, Cell, vertex_channels

T = {name: i for i, name in enumerate(NODE_VOCAB)}
C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
# input -> conv3x3 -> maxpool -> output, plus input -> output
SMALL = "conv3x3,maxpool3x3|0>1,0>3,1>2,2>3"
# the same 4-vertex cell as NASLib writes it: padded to 7 vertices (convert_to_cell) with edgeless
# conv3x3 vertices before the output, op ids over (input, output, maxpool3x3, conv1x1, conv3x3)
SMALL_NASLIB = str(tuple([0, 1, 0, 0, 0, 0, 1,
                          0, 0, 1, 0, 0, 0, 0,
                          0, 0, 0, 0, 0, 0, 1] + [0] * 28 + [0, 4, 2, 4, 4, 4, 1]))


@pytest.fixture(scope="module")
def space():
    return get_space("nb101")


@pytest.fixture(scope="module")
def vis(shared_data):
    """The 1,000 records of the nasbench-vis file (keys are NAS-Bench-101 module hashes)."""
    with open(shared_data / "nasbench101" / "nasbench_vis_nb101_1000.json") as f:
        d = json.load(f)
    return [{"key": k, "text": json.dumps({"matrix": m, "ops": o}), "params": p}
            for k, m, o, p in zip(d["key"], d["adjacency"], d["operations"], d["trainable_parameters"])]


@pytest.fixture(scope="module")
def vis_cells(space, vis):
    return [space.parse(r["text"]) for r in vis]


# -- text forms ------------------------------------------------------------------------------------

def test_every_text_form_round_trips_on_the_benchmark_cells(space, vis_cells):
    assert len(set(vis_cells)) == 1000
    for cell in vis_cells:
        text = space.to_str(cell)
        assert space.parse(text) == cell and space.to_str(space.parse(text)) == text
        assert space.parse(space.to_json(cell)) == cell
        assert space.parse(cell) == cell


def test_canonical_string_names_the_ops_then_the_edges(space):
    cell = space.parse(SMALL)
    assert cell == Cell(("input", C3, MP, "output"), ((0, 1), (0, 3), (1, 2), (2, 3)))
    assert space.parse("conv3x3-bn-relu, maxpool3x3 | 2>3, 0>1, 1>2, 0>3") == cell  # full names, any order
    assert space.to_str(space.parse("|0>1")) == "|0>1"  # no interior vertex


def test_naslib_keys_padded_and_unpadded(space):
    assert len(eval(SMALL_NASLIB)) == 56
    assert space.parse(SMALL_NASLIB) == space.parse(SMALL)
    unpadded = (0, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0) + (0, 4, 2, 1)
    assert space.parse(str(unpadded)) == space.parse(SMALL)


def test_json_form_takes_names_or_the_vis_file_ids(space):
    matrix = [[0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    by_id = json.dumps({"matrix": matrix, "ops": [-1, 0, 2, -2, -3]})  # -3: a padding vertex after the output
    by_name = json.dumps({"matrix": [r[:4] for r in matrix[:4]], "ops": ["input", C3, MP, "output"]})
    assert space.parse(by_id) == space.parse(by_name) == space.parse(SMALL)


BAD = [
    ("conv3x3,conv3x3|0>1,1>2,2>1,2>3", "cycle 1>2>1"),
    ("conv3x3,conv3x3|0>2,2>1,1>3", "edge 2>1 does not go forward"),
    ("conv3x3,conv3x3,conv3x3,conv3x3,conv3x3|0>1,0>2,0>3,0>4,0>5,1>6,2>6,3>6,4>6,5>6", "10 edges"),
    ("conv3x3,conv3x3,conv3x3,conv3x3,conv3x3,conv3x3|0>1,1>2,2>3,3>4,4>5,5>6,6>7", "8 vertices"),
    ("conv3x3,conv5x5|0>1,1>2,2>3", "unknown op 'conv5x5' at vertex 2"),
    ("conv3x3,input|0>1,1>2,2>3", "vertex 2 is 'input'"),
    ("conv3x3,maxpool3x3|0>1,2>3", "output is unreachable"),
    ("conv3x3|", "output is unreachable"),
    ("conv3x3,maxpool3x3", "malformed"),
    ("conv3x3|0>1|1>2", "malformed"),
    ("conv3x3|0-1,1>2", "malformed edge '0-1'"),
    ("conv3x3|0>1,1>5", "beyond the 3 vertices"),
    ("(0, 1, 2)", "56 for 7 vertices"),
    ("(0, 1, 0, 0, 0, 0)", "last vertex must be 'output'"),  # 2 vertices, ops (input, input)
    ("(0, 1, 0, 0, 0, 7)", "NASLib op id 7 out of range"),
    ("(0, 1, 0, ", "malformed NASLib tuple"),
    ('{"matrix": [[0, 1], [0, 0]]}', "'matrix' and 'ops'"),
    ('{"matrix": [[0, 1], [0, 0]], "ops": ["input"]}', "2x2 matrix but 1 ops"),
    ('{"matrix": [[0, 1, 0], [0, 0]], "ops": ["input", "output"]}', "must be square"),
    ('{"matrix": [[0, 2], [0, 0]], "ops": ["input", "output"]}', "entry [0][1] is 2"),
    ('{"matrix": [[0, 1], [0, 0]], "ops": [-1, 9]}', "unknown op id 9"),
    ('{"matrix": [[0, 1], [0, 0]], "ops": ["output", "input"]}', "first vertex must be 'input'"),
    ('{"matrix": [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "ops": [-1, -2, -3]}', "padding vertex 2 has edge 1>2"),
    ('{"matrix": [[0, 1, 0], [0, 0, 0], [0, 0, 0]], "ops": [-1, 0, -2]}', "output is unreachable"),
    ('{"matrix": [[0, 1], [0, 0]], "ops": ["input", "output"]', "malformed JSON"),
]


@pytest.mark.parametrize("bad, fragment", BAD)
def test_bad_cells_name_the_text_and_the_problem(space, bad, fragment):
    with pytest.raises(ArchError) as e:
        space.parse(bad)
    assert fragment in str(e.value) and repr(bad) in str(e.value)


def test_limits_are_judged_after_pruning_as_nasbench_does(space):
    # 10 edges and 8 vertices as written, but vertex 6 is on no input -> output path
    text = json.dumps({"matrix": [[0, 1, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1],
                                  [0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0],
                                  [0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0]],
                       "ops": ["input", C3, C3, C3, C3, C1, MP, "output"]})
    cell = space.parse(text)
    assert len(cell.ops) == 6 and len(cell.edges) == 8


# -- pruning and the hash --------------------------------------------------------------------------

def test_pruning_drops_vertices_off_every_input_output_path(space):
    # vertex 2 has no path to the output, vertex 3 is not reachable from the input
    cell = space.parse("conv3x3,conv1x1,maxpool3x3,conv3x3|0>1,1>2,3>4,1>4,4>5")
    assert cell == Cell(("input", C3, C3, "output"), ((0, 1), (1, 2), (2, 3)))
    assert space.to_str(cell) == "conv3x3,conv3x3|0>1,1>2,2>3"


def test_hash_is_the_benchmark_key_for_all_1000_cells(space, vis, vis_cells):
    assert [space.isomorphism_class(c) for c in vis_cells] == [r["key"] for r in vis]


def _relabel(cell: Cell, rng: random.Random) -> Cell:
    """The same cell with its interior vertices in another topological order."""
    n = len(cell.ops)
    preds = {v: {s for s, d in cell.edges if d == v} for v in range(n)}
    order, placed = [0], {0}
    while len(order) < n - 1:
        ready = [v for v in range(1, n - 1) if v not in placed and preds[v] <= placed]
        v = rng.choice(ready)
        order.append(v)
        placed.add(v)
    order.append(n - 1)
    new = {v: i for i, v in enumerate(order)}
    return Cell(tuple(cell.ops[v] for v in order), tuple(sorted((new[s], new[d]) for s, d in cell.edges)))


def test_isomorphic_cells_share_one_class_and_others_do_not(space, vis_cells):
    rng = random.Random(0)
    moved = 0
    for cell in vis_cells[:300]:
        other = space.parse(space.to_str(_relabel(cell, rng)))
        moved += other != cell
        assert space.isomorphism_class(other) == space.isomorphism_class(cell)
    assert moved > 100  # most relabellings give another string
    assert len({space.isomorphism_class(c) for c in vis_cells}) == 1000


# -- cost ------------------------------------------------------------------------------------------

def test_params_equal_the_benchmark_trainable_parameters(space, vis, vis_cells):
    for r, cell in zip(vis, vis_cells):
        assert round(space.cost(cell)["params"] * 1e6) == r["params"]
    for i in (0, 1, 100):  # the torch network counts the same
        net = space.build_benchmark_net(vis_cells[i], 10)
        assert sum(p.numel() for p in net.parameters()) == vis[i]["params"]


def test_flops_count_the_convolutions_and_classifier(space, vis_cells):
    for cell in vis_cells[:3] + [space.parse("|0>1")]:
        net = space.build_benchmark_net(cell, 10, channels=8)
        with FlopCounterMode(display=False) as counter:
            net(torch.randn(1, 3, 18, 18))  # 18 -> 9 -> 5: odd sides pool like TF's 'same'
        assert counter.get_total_flops() == 2 * _cost(cell, 8, 3, 10, 18)[1]  # 2 FLOPs per multiply-add


def test_vertex_channels_split_the_output_like_nasbench():
    # vertices 2, 3, 4 feed the output (the first ones get the remainder); 1 feeds 2 and 3: it takes their max
    cell = get_space("nb101").parse("conv1x1,conv3x3,conv3x3,conv3x3|0>1,1>2,1>3,0>4,2>5,3>5,4>5")
    assert vertex_channels(cell, 64, 128) == [64, 43, 43, 43, 42, 128]
    with pytest.raises(ValueError, match="2 output channels cannot be split over the 3 vertices"):
        vertex_channels(cell, 64, 2)


# -- sampling, mutation, crossover -----------------------------------------------------------------

def _valid(space, cell):
    assert space.parse(space.to_str(cell)) == cell
    assert len(cell.ops) <= MAX_VERTICES and len(cell.edges) <= MAX_EDGES


def test_samples_are_valid_and_seeded(space):
    a = [space.sample(random.Random(3)) for _ in range(2)]
    assert a[0] == a[1]
    cells = [space.sample(random.Random(i)) for i in range(300)]
    for c in cells:
        _valid(space, c)
    # nasbench's sampler favours small cells (its pruning merges many matrices into them): diverse, not uniform
    assert len({len(c.ops) for c in cells}) >= 4 and len(set(cells)) > 150


def test_mutation_is_valid_one_edit_away_and_never_the_same_cell(space, vis_cells):
    rng = random.Random(0)
    sizes = set()
    for cell in vis_cells[:200] + [space.parse("|0>1"), space.parse(SMALL)]:
        child = space.mutate(cell, rng)
        _valid(space, child)
        assert space.isomorphism_class(child) != space.isomorphism_class(cell)
        sizes.add(len(child.ops) - len(cell.ops))
    assert {-1, 0, 1} <= sizes  # edges removed (pruning), edges / ops changed, vertices inserted


def test_crossover_children_are_valid_and_new(space, vis_cells):
    rng = random.Random(0)
    for a, b in zip(vis_cells[:50], vis_cells[50:100]):
        child = space.crossover(a, b, rng)
        _valid(space, child)
        assert space.isomorphism_class(child) not in {space.isomorphism_class(a), space.isomorphism_class(b)}


# -- encodings -------------------------------------------------------------------------------------

def test_global_encoding_is_three_stacks_with_downsampling_between(space):
    cell = space.parse(SMALL)
    seq = space.encode(cell)
    assert len(seq) == 11 and seq[3] == seq[7] == DOWNSAMPLE_GRAPH
    graph = seq[0]
    assert all(seq[i] == graph for i in (0, 1, 2, 4, 5, 6, 8, 9, 10))
    assert graph.node_types == (T["input"], T[C3], T[MP], T["output"]) and graph.edges == cell.edges
    assert space.encode(cell, "cell") == [graph]
    assert len(get_space("nb101", encoded_cells_per_stack=1).encode(cell)) == 5
    table = build_graph_table(space, [cell, space.parse("|0>1")])
    batch = table.select(torch.arange(2))
    assert batch.node_types.shape == (2, 11, 4) and batch.adj.shape == (2, 11, 4, 4)


# -- networks --------------------------------------------------------------------------------------

TINY = {"stem_channels": 8, "cells_per_stack": 1}


def test_param_slots_belong_to_the_vertices_they_compute(space, vis_cells):
    tiny = get_space("nb101", **TINY)
    for cell in vis_cells[:20]:
        target = tiny.build_target(cell, 10, device="meta")
        graphs = tiny.encode(cell)
        for slot in target.param_slots:
            assert slot.graph in (0, 4, 8)  # the first encoded cell of each stack (1 target cell per stack)
            op = NODE_VOCAB[graphs[slot.graph].node_types[slot.node]]
            if slot.kind == "proj1x1":
                assert (0, slot.node) in cell.edges  # fed by the cell input
            else:
                assert op == {"conv3x3": C3, "conv1x1": C1}[slot.kind]
        convs = sum(op in (C3, C1) for op in cell.ops)
        projs = sum(s == 0 for s, _ in cell.edges)
        assert len(target.param_slots) == 3 * (convs + projs)
    deep = get_space("nb101", stem_channels=8, cells_per_stack=6)
    target = deep.build_target(vis_cells[0], 10, device="meta")
    assert sorted({s.graph for s in target.param_slots}) == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_target_equals_the_benchmark_network_with_the_same_weights(vis_cells):
    space = get_space("nb101", stem_channels=8, cells_per_stack=1, encoded_cells_per_stack=1)
    torch.manual_seed(0)
    for cell in vis_cells[:5] + [space.parse("|0>1")]:
        bench = space.build_benchmark_net(cell, 10, channels=8).train()
        target = space.build_target(cell, 10, device="meta")
        params = dict(bench.named_parameters())
        # benchmark BN affine starts at (1, 0): batch-statistics BN without affine computes the same
        used = {n: params[n] for n, _ in target.named_parameters()}
        x = torch.randn(4, 3, 16, 16)
        torch.testing.assert_close(functional_call(target, used, (x,), strict=True), bench(x))


def test_generated_weights_run_forward_and_backward_on_16px_images(vis_cells):
    space = get_space("nb101", **TINY)
    cfg = load_config(None, ["space.name=nb101", "model.encoder.hidden=12", "model.encoder.layers=2",
                             "model.hyper.hidden=10", "model.hyper.layers=1", "model.encoder.dropout=0"])
    torch.manual_seed(0)
    model = HyperNASModel(cfg.model, space, num_classes=10)
    archs = [vis_cells[0], vis_cells[1], space.parse("|0>1"), space.parse("maxpool3x3|0>1,1>2")]
    table = build_graph_table(space, archs)
    _, nodes = model.encode(table.select(torch.arange(len(archs))))
    params = model.target_params(archs, nodes)
    assert {n for n in params[0] if n.startswith(SHARED_PREFIX)} == \
        {SHARED_PREFIX + n for n, _ in space.build_shared(10).named_parameters()}
    images, labels = torch.randn(len(archs), 6, 3, 16, 16), torch.randint(0, 10, (len(archs), 6))
    ce, _ = model.hyper_losses(archs, nodes, images, labels)
    assert ce.shape == (4,) and torch.isfinite(ce).all()
    ce.sum().backward()
    assert model.encoder.embed.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.hypernet.parameters())


def test_benchmark_network_keeps_running_statistics(space, vis_cells):
    net = space.build_benchmark_net(vis_cells[0], 10, channels=8)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.track_running_stats and m.affine for m in bns)
    net(torch.randn(2, 3, 32, 32))
    assert all(int(m.num_batches_tracked) == 1 for m in bns)
    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 10)


# -- settings and configs --------------------------------------------------------------------------

def test_settings_are_checked_and_name_the_key():
    with pytest.raises(ConfigError, match="space.settings.stem_channels"):
        get_space("nb101", stem_channels=4)
    assert get_space("nb101", **TINY).hyper_heads()["conv3x3"] == (32, 32, 3, 3)


def test_configs_load_with_the_paper_and_cpu_settings():
    paper = load_config("configs/nb101.yaml")
    assert (paper.space.name, paper.model.encoder.layers, paper.model.encoder.hidden) == ("nb101", 6, 72)
    assert (paper.model.hyper.layers, paper.model.hyper.hidden, paper.model.hyper.images_per_arch) == (3, 96, 128)
    assert paper.space.settings["stem_channels"] == 128 and paper.space.settings["cells_per_stack"] == 3
    cpu = load_config("configs/nb101_cpu.yaml")
    assert cpu.space.settings["stem_channels"] == 16 and cpu.space.settings["cells_per_stack"] == 1
    assert (cpu.model.hyper.images_per_arch, cpu.model.hyper.image_size) == (16, 16)
    assert cpu.data.train_label == cpu.data.eval_label == "cifar10_valid_val_108ep" and cpu.data.num_train == 172
