"""Ranking metrics for predictors (METHOD.md §7) and mean ± std over seeds.

All functions take 1-D numpy arrays, torch tensors (any device) or sequences, and reject NaN/inf
values and length mismatches with a ValueError naming the problem. Higher values are better
(accuracies) unless `higher_is_better=False` is passed where it matters (top-k, top-1).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "TOP_KS",
    "kendall_tau",
    "spearman",
    "ranking_metrics",
    "top_k_overlap",
    "summarize_seeds",
    "format_mean_std",
]

TOP_KS: tuple[int, ...] = (10, 50, 100)


def _as_1d(x: Any, name: str) -> np.ndarray:
    """`x` as a finite float64 1-D array; (N, 1) column vectors are accepted."""
    if hasattr(x, "detach"):  # torch tensor: no torch import needed here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        kind = "NaN" if np.isnan(arr).any() else "infinite"
        raise ValueError(f"{name} contains {int(bad.sum())} {kind} value(s) (first at index {int(np.argmax(bad))})")
    return arr


def _pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_1d(pred, "pred"), _as_1d(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"length mismatch: pred has {p.size} values, true has {t.size}")
    if p.size < 2:
        raise ValueError(f"need at least 2 points to rank, got {p.size}")
    return p, t


def _quiet(fn, *args) -> float:
    """Run a scipy correlation; constant input gives NaN (we flag it ourselves) instead of a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(*args).statistic)


def kendall_tau(pred: Any, true: Any) -> float:
    """Kendall τ-b between predictions and ground truth (NaN if either is constant)."""
    p, t = _pair(pred, true)
    return _quiet(stats.kendalltau, p, t)


def spearman(pred: Any, true: Any) -> float:
    """Spearman rank correlation between predictions and ground truth (NaN if either is constant)."""
    p, t = _pair(pred, true)
    return _quiet(stats.spearmanr, p, t)


def _top_idx(x: np.ndarray, k: int, higher_is_better: bool) -> np.ndarray:
    # Stable sort so ties break by index, deterministically.
    order = np.argsort(-x if higher_is_better else x, kind="stable")
    return order[:k]


def _overlap(p: np.ndarray, t: np.ndarray, k: int, higher_is_better: bool) -> float:
    return np.intersect1d(_top_idx(p, k, higher_is_better), _top_idx(t, k, higher_is_better)).size / k


def top_k_overlap(pred: Any, true: Any, k: int, higher_is_better: bool = True) -> float:
    """Fraction of the true top-k that the predicted top-k contains (a.k.a. precision@k), in [0, 1]."""
    p, t = _pair(pred, true)
    if not 1 <= k <= p.size:
        raise ValueError(f"k must be in [1, {p.size}], got {k}")
    return _overlap(p, t, k, higher_is_better)


def ranking_metrics(pred: Any, true: Any, higher_is_better: bool = True) -> dict[str, Any]:
    """All ranking metrics of `pred` against `true` in one dict.

    Keys:
      kendall_tau, spearman  correlations (NaN when degenerate)
      n, pred_std            number of points; population std of the predictions
      degenerate             True when τ is undefined because predictions (or labels) are constant —
                             a collapsed predictor (METHOD.md §7): callers must warn loudly
      top{k}_overlap         for k in TOP_KS with k < n (k = n is trivially 1): see `top_k_overlap`
      top1_true              true value of the predicted best
      top1_regret            |true best − top1_true| (0 = the predictor found the best)
      top1_ratio             top1_true / true best (NaN unless the true best is > 0, e.g. accuracies)
    """
    p, t = _pair(pred, true)
    tau = _quiet(stats.kendalltau, p, t)
    rho = _quiet(stats.spearmanr, p, t)
    # Test constancy exactly (max == min): np.std of a constant float array can be ~1e-17, not 0.
    pred_constant = bool(p.max() == p.min())
    out: dict[str, Any] = {
        "kendall_tau": tau,
        "spearman": rho,
        "n": int(p.size),
        "pred_std": 0.0 if pred_constant else float(p.std()),
        "degenerate": pred_constant or bool(t.max() == t.min()) or math.isnan(tau),
    }
    for k in TOP_KS:
        if k < p.size:
            out[f"top{k}_overlap"] = _overlap(p, t, k, higher_is_better)
    chosen = float(t[_top_idx(p, 1, higher_is_better)[0]])
    best = float(t.max() if higher_is_better else t.min())
    out["top1_true"] = chosen
    out["top1_regret"] = abs(best - chosen)
    out["top1_ratio"] = chosen / best if best > 0 else float("nan")
    return out


def summarize_seeds(values: Sequence[float]) -> dict[str, float | int]:
    """Mean, sample std (ddof=1; 0 for a single value) and n of per-seed results.

    NaN entries (e.g. a degenerate seed's τ) propagate into mean and std on purpose: hiding a
    collapsed seed would flatter the result.
    """
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    if arr.size == 0:
        raise ValueError("summarize_seeds needs at least one value")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """Per-seed results as "mean ± std", e.g. "0.765 ± 0.012"."""
    s = summarize_seeds(values)
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
