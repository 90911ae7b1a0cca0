"""Evaluation under METHOD.md §7: score every architecture in the table, rank against the eval label.

NB201 protocol: the predictor is trained on `cifar10_valid_val_200ep` and Kendall τ / Spearman are
computed against `cifar10_test_200ep` over all 15,625 cells. Which columns are used is config.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.graphs import GraphBatch, GraphTable
from pipeline.metrics import ranking_metrics
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text


@torch.inference_mode()
def predict_all(model, graphs: GraphTable, batch_size: int = 2048, arch_idx: torch.Tensor | None = None) -> np.ndarray:
    """Standardised predictions for `arch_idx` (default: every architecture in `graphs`).

    Architectures whose graph sequences are identical get identical predictions, so only the unique
    sequences are run (NB201: 9,365 of 15,625) and the result is scattered back.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    rows = graphs.arch_graphs if arch_idx is None else graphs.arch_graphs[arch_idx]
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    out = []
    for start in range(0, len(unique), batch_size):
        ids = unique[start:start + batch_size]
        out.append(model.predict(GraphBatch(graphs.node_types[ids].to(dev), graphs.adj[ids].to(dev))).float().cpu())
    model.train(was_training)
    return torch.cat(out)[inverse].double().numpy()


def evaluate(pred: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Ranking metrics of `pred` against each label column."""
    return {name: ranking_metrics(pred, y) for name, y in labels.items()}


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def scatter_plot(path: Path, pred: np.ndarray, true: np.ndarray, in_train: np.ndarray, title: str,
                 xlabel: str, ylabel: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.scatter(true[~in_train], pred[~in_train], s=2, alpha=0.25, c="tab:blue", label="not trained on",
               rasterized=True)
    ax.scatter(true[in_train], pred[in_train], s=8, alpha=0.9, c="tab:red", label="training cells")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8, markerscale=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_predictions(path: Path, archs: list[str], index: np.ndarray, pred: np.ndarray,
                      labels: dict[str, np.ndarray], in_train: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"index": pa.array(index, pa.int64()), "arch": pa.array(archs, pa.string()),
            "prediction": pa.array(pred, pa.float64()), "in_train": pa.array(in_train, pa.bool_())}
    for name, y in labels.items():
        cols[name] = pa.array(y, pa.float64())
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(pa.table(cols), tmp)


def write_results(run_path: Path, summary: dict[str, Any], md: str) -> None:
    atomic_write_json(run_path / "results.json", summary)
    atomic_write_text(run_path / "results.md", md)
