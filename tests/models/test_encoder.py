"""GCN encoder: the layer formula, invariances, and the cell-to-cell context."""
import torch

from pipeline.data.graphs import GraphBatch, build_graph_table, collate_graphs
from pipeline.models.encoder import BiGCNLayer, GraphSequenceEncoder, normalised_adjacency
from pipeline.spaces import get_space
from pipeline.spaces.base import CellGraph

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_bigcn_layer_is_the_formula():
    torch.manual_seed(0)
    layer = BiGCNLayer(4, 3)
    E = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]], dtype=torch.float)
    V = torch.randn(3, 4)
    A = E + torch.eye(3)
    Af = A / A.sum(1, keepdim=True)
    At = E.t() + torch.eye(3)
    Ab = At / At.sum(1, keepdim=True)
    Wf, Wb = layer.w.weight[:3], layer.w.weight[3:]
    bf, bb = layer.w.bias[:3], layer.w.bias[3:]
    expected = 0.5 * torch.relu(Af @ (V @ Wf.t() + bf)) + 0.5 * torch.relu(Ab @ (V @ Wb.t() + bb))
    a_fwd, a_bwd = normalised_adjacency(E)
    assert torch.allclose(layer(V[None], torch.stack([a_fwd, a_bwd])[:, None])[0], expected, atol=1e-6)


def _encoder(connectivity="sum"):
    torch.manual_seed(0)
    return GraphSequenceEncoder(vocab_size=11, hidden=8, layers=3, dropout=0.0, connectivity=connectivity).eval()


def test_isomorphic_graphs_encode_alike():
    # the same DAG with its two middle nodes listed in the other order
    g1 = CellGraph((0, 3, 4, 1), ((0, 1), (0, 2), (1, 3), (2, 3)))
    g2 = CellGraph((0, 4, 3, 1), ((0, 1), (0, 2), (1, 3), (2, 3)))
    types, adj = collate_graphs([g1, g2])
    enc = _encoder()
    h, nodes, z = enc(GraphBatch(types[:, None], adj[:, None]))
    assert torch.allclose(h[0], h[1], atol=1e-6)


def test_padding_nodes_do_not_change_the_embedding():
    small = CellGraph((0, 3, 1), ((0, 1), (1, 2)))
    big = CellGraph((0, 3, 4, 4, 4, 1), ((0, 1), (1, 5), (0, 2), (2, 3), (3, 4), (4, 5)))
    enc = _encoder()
    t1, a1 = collate_graphs([small])
    t2, a2 = collate_graphs([small, big])  # `small` padded to 6 nodes
    h1, _, _ = enc(GraphBatch(t1[:, None], a1[:, None]))
    h2, _, _ = enc(GraphBatch(t2[:, None], a2[:, None]))
    assert torch.allclose(h1[0], h2[0], atol=1e-6)


def test_each_cell_sees_the_previous_one_for_sum_and_concat():
    space = get_space("nb201")
    a = space.parse(ARCH)
    b = space.parse("|avg_pool_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    table = build_graph_table(space, [a, b])
    for conn in ("sum", "concat"):
        enc = _encoder(conn)
        h, nodes, z = enc(table.select(torch.tensor([0, 1])))
        assert h.shape == (2, 8) and nodes.shape[:2] == (2, 17) and z.shape == (2, 17, 8)
        # the reduction graph is identical in both archs, yet its embedding differs: context flows in
        assert (z[0, 5] - z[1, 5]).abs().max() > 1e-7
        # within one arch the 5 copies of the cell get different embeddings (position via z(i-1))
        assert (z[0, 0] - z[0, 1]).abs().max() > 1e-7


def test_padding_cells_carry_the_context_and_stay_out_of_the_mean():
    a = CellGraph((0, 3, 1), ((0, 1), (1, 2)))
    b = CellGraph((0, 4, 4, 1), ((0, 1), (1, 2), (2, 3)))
    types, adj = collate_graphs([a, b])
    pad_t = torch.full((1, types.shape[1]), -1, dtype=types.dtype)
    pad_a = torch.zeros(1, *adj.shape[1:])
    # sequence [a, b] alone, and [a, b, pad, pad] batched beside a longer [a, b, a, b]
    short = GraphBatch(types[None], adj[None])
    long_t = torch.stack([torch.cat([types, pad_t, pad_t]), torch.cat([types, types])])
    long_a = torch.stack([torch.cat([adj, pad_a, pad_a]), torch.cat([adj, adj])])
    batch = GraphBatch(long_t, long_a)
    assert batch.cell_mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    enc = _encoder()
    h1, _, z1 = enc(short)
    h2, _, z2 = enc(batch)
    assert torch.allclose(h1[0], h2[0], atol=1e-6)          # padding left out of the mean
    assert torch.allclose(z1[0], z2[0, :2], atol=1e-6)
    assert not torch.allclose(h2[0], h2[1], atol=1e-4)      # the longer sequence differs
