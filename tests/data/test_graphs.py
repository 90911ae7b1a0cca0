"""pipeline/data/graphs.py: the hand-made flat batch equals torch-geometric's own collation."""
import random

import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_adj, to_dense_batch

from pipeline.data.graphs import PAD, build_graph_table, collate_graphs
from pipeline.spaces import get_space
from pipeline.spaces.base import CellGraph


def _reference(graphs):
    data = [Data(x=torch.tensor(g.node_types).unsqueeze(1),
                 edge_index=torch.tensor(g.edges, dtype=torch.long).reshape(-1, 2).t().contiguous(),
                 num_nodes=len(g.node_types)) for g in graphs]
    b = Batch.from_data_list(data)
    types, _ = to_dense_batch(b.x.squeeze(1), b.batch, fill_value=PAD)
    return types, to_dense_adj(b.edge_index, b.batch, max_num_nodes=types.shape[1], batch_size=len(graphs))


def test_collate_matches_pyg_batch_on_random_dags_with_edgeless_graphs():
    rng = random.Random(0)
    graphs = [CellGraph((0, 1), ())]  # no edges at all
    for _ in range(200):
        n = rng.randint(2, 9)
        edges = tuple(sorted({(s, d) for s in range(n) for d in range(s + 1, n) if rng.random() < 0.3}))
        graphs.append(CellGraph(tuple(rng.randrange(7) for _ in range(n)), edges))
    types, adj = collate_graphs(graphs)
    ref_types, ref_adj = _reference(graphs)
    assert torch.equal(types, ref_types) and torch.equal(adj, ref_adj)
    assert adj.sum() == sum(len(g.edges) for g in graphs)  # every edge lands once


def test_graph_table_of_every_darts_and_nb201_arch_matches_reference():
    for name in ("nb201", "darts"):
        space = get_space(name)
        rng = random.Random(1)
        archs = [space.sample(rng) for _ in range(50)]
        table = build_graph_table(space, archs)
        graphs = list(dict.fromkeys(g for a in archs for g in space.encode(a)))
        ref_types, ref_adj = _reference(graphs)
        assert torch.equal(table.node_types, ref_types) and torch.equal(table.adj, ref_adj)
