"""Evaluation: τ over unique unseen cells leaves out every isomorphism class of a training cell."""
import numpy as np

from pipeline.evaluate import ranking_report, unique_unseen


def test_unique_unseen_takes_one_per_class_without_training_cells():
    iso = np.array(["a", "b", "a", "c", "b", "d"], dtype=object)
    reps = unique_unseen(iso, np.array([1]))      # class b is seen
    assert reps.tolist() == [0, 3, 5]


def test_report_has_all_and_unique_scopes_and_top_k():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    iso = np.array([f"c{i // 2}" for i in range(300)], dtype=object)   # pairs of duplicates
    report = ranking_report(y + 0.01 * rng.normal(size=300), {"acc": y}, iso, np.arange(20))
    assert report["acc"]["all"]["n"] == 300 and report["acc"]["unique"]["n"] == 140
    assert report["acc"]["all"]["kendall_tau"] > 0.95 and report["acc"]["all"]["top1_regret"] < 0.1
    assert "top50_overlap" in report["acc"]["unique"]


def test_predict_all_encodes_each_graph_sequence_once_and_regresses_every_feature_row():
    """Features make isomorphic NB201 cells distinct rows: the encoder still runs once per unique graph
    sequence, and every architecture gets the prediction of its own (graphs, features) pair."""
    import torch

    from pipeline.config import load_config
    from pipeline.data.graphs import build_graph_table
    from pipeline.evaluate import predict_all
    from pipeline.models.predictor import HyperNASModel
    from pipeline.spaces import get_space

    cfg = load_config(None, ["model.variant=hypernas_p", "model.encoder.hidden=12", "model.encoder.layers=2",
                             "model.encoder.dropout=0"])
    space = get_space("nb201")
    archs = [a for a in space.enumerate()][:400]
    graphs = build_graph_table(space, archs, "global")
    torch.manual_seed(0)
    model = HyperNASModel(cfg.model, space, num_classes=10, num_features=3)
    feats = torch.randn(len(archs), 3)
    encoded = []
    model.encoder.register_forward_hook(lambda mod, inp, out: encoded.append(out[0].shape[0]))
    pred = predict_all(model, graphs, batch_size=64, features=feats)
    assert sum(encoded) == len(torch.unique(graphs.arch_graphs, dim=0)) < len(archs)
    with torch.no_grad():
        pick = torch.tensor([0, 7, 123, 399])
        direct = model.predict(graphs.select(pick), feats[pick]).double().numpy()
    np.testing.assert_allclose(pred[pick.numpy()], direct, rtol=1e-5, atol=1e-6)
    sub = predict_all(model, graphs, batch_size=64, arch_idx=pick, features=feats)
    np.testing.assert_allclose(sub, direct, rtol=1e-5, atol=1e-6)
