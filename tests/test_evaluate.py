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
