"""Cross-validation inside the budget: folds partition the training cells; a fold run reads no test label."""
import json
from pathlib import Path

import numpy as np

from pipeline.config import load_config
from pipeline.data.loading import split_archs
from pipeline.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "nb201_tiny.yaml")


def test_folds_partition_the_budget_and_leave_the_rest_alone():
    cfg = load_config(TINY, ["data.num_train=40", "data.val_archs=0"])
    budget = split_archs(cfg, 15625).train
    held = []
    for k in range(5):
        s = split_archs(load_config(TINY, ["data.num_train=40", "data.cv_folds=5", f"data.cv_fold={k}"]), 15625)
        assert len(np.intersect1d(s.train, s.holdout)) == 0
        assert set(s.train) | set(s.holdout) == set(budget)
        held.append(s.holdout)
    assert sorted(np.concatenate(held).tolist()) == sorted(budget.tolist())


def test_a_fold_run_scores_only_held_out_training_cells_on_the_training_label(tiny_overrides):
    s = train(load_config(TINY, [*tiny_overrides, "data.num_train=20", "data.cv_folds=4", "data.cv_fold=1",
                                 "model.variant=hypernas_p"]))
    assert s["cv_n"] == 5 and s["num_train"] == 15 and np.isfinite(s["cv_tau"])
    assert "kendall_tau" not in s and "metrics" not in s
    run = Path(s["run_dir"])
    assert not (run / "predictions.parquet").exists()   # nothing with the test label is written
    assert json.loads((run / "results.json").read_text())["train_label"] == "cifar10_valid_val_200ep"
