"""Ranking metrics (pipeline/metrics.py) on hand-checkable examples."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from pipeline.metrics import (
    format_mean_std,
    kendall_tau,
    ranking_metrics,
    spearman,
    summarize_seeds,
    top_k_overlap,
)


def test_perfect_and_reversed_order() -> None:
    true = np.array([0.1, 0.5, 0.2, 0.9, 0.7])
    assert kendall_tau(true * 3 + 1, true) == pytest.approx(1.0)
    assert spearman(true * 3 + 1, true) == pytest.approx(1.0)
    assert kendall_tau(-true, true) == pytest.approx(-1.0)
    assert spearman(-true, true) == pytest.approx(-1.0)


def test_four_element_example_by_hand() -> None:
    pred, true = [1, 2, 3, 4], [1, 3, 2, 4]
    # 6 pairs, only (2nd, 3rd) discordant: τ = (5 - 1) / 6.
    assert kendall_tau(pred, true) == pytest.approx(4 / 6)
    # rank differences d = (0, -1, 1, 0): ρ = 1 - 6·Σd² / (n(n²-1)) = 1 - 12/60.
    assert spearman(pred, true) == pytest.approx(0.8)


def test_tau_b_with_a_tie_by_hand() -> None:
    # pred ties one pair; 5 concordant, 0 discordant: τ_b = 5 / sqrt((6 - 1) · (6 - 0)).
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(30))


def test_accepts_tensors_and_columns() -> None:
    pred = torch.tensor([[1.0], [2.0], [3.0], [4.0]], requires_grad=True)
    assert kendall_tau(pred, torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(4 / 6)


def test_constant_prediction_is_degenerate() -> None:
    m = ranking_metrics(np.full(20, 0.3), np.arange(20.0))
    assert math.isnan(m["kendall_tau"]) and math.isnan(m["spearman"])
    assert m["degenerate"] is True
    assert m["pred_std"] == 0.0
    assert math.isnan(kendall_tau(np.zeros(5), np.arange(5.0)))


def test_nondegenerate_flag_false() -> None:
    m = ranking_metrics(np.arange(20.0), np.arange(20.0))
    assert m["degenerate"] is False and m["kendall_tau"] == pytest.approx(1.0) and m["n"] == 20


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_input_raises(bad: float) -> None:
    pred = np.arange(5.0)
    pred[2] = bad
    with pytest.raises(ValueError, match=r"pred contains 1 .*index 2"):
        kendall_tau(pred, np.arange(5.0))
    with pytest.raises(ValueError, match="true contains"):
        ranking_metrics(np.arange(5.0), pred)


def test_length_mismatch_and_shape_raise() -> None:
    with pytest.raises(ValueError, match="length mismatch: pred has 4 values, true has 5"):
        spearman(np.arange(4.0), np.arange(5.0))
    with pytest.raises(ValueError, match="1-D"):
        kendall_tau(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        kendall_tau([1.0], [1.0])


def test_top_k_overlap() -> None:
    true = np.arange(200.0)
    pred = true.copy()
    pred[199], pred[0] = pred[0], pred[199]  # the true best is predicted worst, the worst predicted best
    # predicted top-10 = {0, 198..190}; true top-10 = {199..190}: 9 shared.
    assert top_k_overlap(pred, true, 10) == pytest.approx(0.9)
    m = ranking_metrics(pred, true)
    assert m["top10_overlap"] == pytest.approx(0.9)
    assert m["top50_overlap"] == pytest.approx(49 / 50)
    assert m["top100_overlap"] == pytest.approx(99 / 100)
    # top-1: the predicted best is true index 0 (value 0) against the true best 199.
    assert m["top1_true"] == 0.0 and m["top1_regret"] == 199.0 and m["top1_ratio"] == 0.0
    # lower-is-better flips the direction
    assert top_k_overlap(-pred, -true, 10, higher_is_better=False) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="k must be"):
        top_k_overlap(pred, true, 0)


def test_top_k_only_where_defined() -> None:
    m = ranking_metrics(np.arange(60.0), np.arange(60.0))
    assert m["top10_overlap"] == 1.0 and m["top50_overlap"] == 1.0
    assert "top100_overlap" not in m
    acc = np.array([90.0, 94.0, 93.0])
    m = ranking_metrics(np.array([0.1, 0.2, 0.3]), acc)
    assert m["top1_true"] == 93.0 and m["top1_ratio"] == pytest.approx(93 / 94)


def test_fast_on_full_nb201() -> None:
    rng = np.random.default_rng(0)
    true = rng.random(15_625)
    pred = true + rng.normal(0, 0.3, size=true.size)
    ranking_metrics(pred[:100], true[:100])  # warm-up (imports, first-call costs)
    start = time.perf_counter()
    m = ranking_metrics(pred, true)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"ranking_metrics took {elapsed:.2f} s on 15,625 points"
    assert m["n"] == 15_625 and 0.3 < m["kendall_tau"] < 0.9


def test_summarize_and_format() -> None:
    s = summarize_seeds([0.75, 0.77, 0.78])
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.7666666667)
    # sample std (ddof=1): deviations -1/60, 1/300, 4/300 -> sqrt(Σd² / 2)
    devs = [0.75 - 0.76666666667, 0.77 - 0.76666666667, 0.78 - 0.76666666667]
    assert s["std"] == pytest.approx(math.sqrt(sum(d * d for d in devs) / 2))
    assert summarize_seeds([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    assert format_mean_std([0.75, 0.77, 0.78]) == "0.767 ± 0.015"
    assert format_mean_std([0.5], digits=2) == "0.50 ± 0.00"
    assert math.isnan(summarize_seeds([0.5, float("nan")])["mean"])  # a collapsed seed is not hidden
    with pytest.raises(ValueError):
        summarize_seeds([])
