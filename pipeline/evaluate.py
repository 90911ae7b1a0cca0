"""Evaluation under METHOD.md §7: score every architecture in the table, rank against the labels.

NB201 protocol: the predictor is trained on `cifar10_valid_val_200ep` and Kendall τ / Spearman are
computed against `cifar10_test_200ep` over all 15,625 cells. Which columns are used is config. Besides τ
over all cells, a run reports τ over *unique* architectures it was not trained on (one per isomorphism
class, classes holding a training cell left out: duplicates of training cells otherwise inflate τ), and
the top of the ranking, which is what a search uses: the true accuracy of the predicted best (regret:
how far below the optimum it is) and the overlap of the predicted top-k with the true top-k.

Under cross-validation (data.cv_folds) a run scores only its held-out fold, against the *training* label:
model selection must never read test labels.

    python -m pipeline.evaluate RUN_DIR --table TABLE [--label COLUMN] [--out PREDICTIONS.parquet]

scores every architecture of any prepared table with a trained run (no retraining), writes its predictions
(default: RUN_DIR/predictions-<table>.parquet) and prints `Kendall tau X  Spearman Y` when the label exists.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.data.graphs import GraphBatch, GraphTable
from pipeline.metrics import kendall_tau, ranking_metrics
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text

HEADLINE = ("kendall_tau", "spearman", "top1_true", "top1_regret", "top10_overlap", "top50_overlap")


@torch.inference_mode()
def predict_all(model, graphs: GraphTable, batch_size: int = 2048, arch_idx: torch.Tensor | None = None,
                features: torch.Tensor | None = None) -> np.ndarray:
    """Standardised predictions for `arch_idx` (default: every architecture in `graphs`).

    The encoder, the expensive part, runs once per unique graph sequence (NB201: 9,365 of 15,625) and
    its embeddings are scattered back; the regressor (a small MLP) then runs on every architecture with
    its own feature row. Features such as GRAF's op-on-edge one-hots make every NB201 cell unique, so
    deduplicating on (graphs, features) would encode all 15,625.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    rows = graphs.arch_graphs if arch_idx is None else graphs.arch_graphs[arch_idx]
    _, first, inverse = _unique_rows(rows)
    emb = []
    with torch.no_grad():
        for start in range(0, len(first), batch_size):
            ids = rows[first[start:start + batch_size]]
            emb.append(model.embed(GraphBatch(graphs.node_types[ids].to(dev), graphs.adj[ids].to(dev))))
        emb = torch.cat(emb)
        feats = None if features is None else (features if arch_idx is None else features[arch_idx])
        out = []
        for start in range(0, len(rows), batch_size):
            pick = inverse[start:start + batch_size].to(dev)
            f = feats[start:start + batch_size].to(dev) if feats is not None else None
            out.append(model.regress(emb[pick], f).float().cpu())
    model.train(was_training)
    return torch.cat(out).double().numpy()


def _unique_rows(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique rows of `key`: (unique, index of each unique row's first occurrence, inverse)."""
    unique, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((len(unique),), len(key), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(key)), reduce="amin")
    return unique, first, inverse


def unique_unseen(iso: np.ndarray, train_idx: np.ndarray) -> np.ndarray:
    """One architecture (the first in table order) per isomorphism class without a training cell."""
    seen = set(iso[train_idx].tolist())
    _, first = np.unique(iso, return_index=True)
    return np.sort(np.array([i for i in first if iso[i] not in seen], dtype=np.int64))


def ranking_report(pred: np.ndarray, labels: dict[str, np.ndarray], iso: np.ndarray,
                   train_idx: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per label column: metrics over all architectures (`all`) and over unique unseen ones (`unique`)."""
    reps = unique_unseen(iso, train_idx)
    out = {}
    for name, y in labels.items():
        out[name] = {"all": ranking_metrics(pred, y)}
        if len(reps) >= 2:
            out[name]["unique"] = ranking_metrics(pred[reps], y[reps])
    return out


def headline(report: dict[str, dict[str, Any]], label: str) -> dict[str, Any]:
    """The summary numbers of one label: τ, Spearman and top-k over all cells, and `<key>_unique`."""
    out: dict[str, Any] = {}
    for scope, suffix in (("all", ""), ("unique", "_unique")):
        metrics = report[label].get(scope, {})
        for key in HEADLINE + ("n",):
            if key in metrics:
                out[f"{key}{suffix}" if key != "n" else f"n_eval{suffix}"] = metrics[key]
    return out


def cv_report(pred: np.ndarray, y_train_label: np.ndarray, holdout: np.ndarray) -> dict[str, Any]:
    """Held-out fold metrics on the training label (cross-validation)."""
    p, y = pred[holdout], y_train_label[holdout]
    tau = kendall_tau(p, y) if np.ptp(p) > 0 else float("nan")
    return {"cv_tau": tau, "cv_n": int(len(holdout))}


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


def score_and_write(cfg: Any, data: Any, pred: np.ndarray, run: Any, split: Any, title: str,
                    score_time: float) -> dict[str, Any]:
    """Metrics of `pred` (accuracy units, one per table row) for the run's split; writes predictions,
    scatter plot; returns the summary fields (cross-validation: the held-out fold only)."""
    if len(split.holdout):
        # the held-out training cells only, with their training label (what an ensemble's CV needs)
        ho = split.holdout
        write_predictions(run.file("cv_predictions.parquet"), [data.arch_strs[i] for i in ho], data.index[ho],
                          pred[ho], {cfg.data.train_label: data.labels[cfg.data.train_label][ho]},
                          np.zeros(len(ho), dtype=bool))
        return {**cv_report(pred, data.labels[cfg.data.train_label], split.holdout), "score_time_s": score_time,
                "train_label": cfg.data.train_label, "cv_fold": cfg.data.cv_fold, "cv_folds": cfg.data.cv_folds}
    in_train = np.zeros(len(data.archs), dtype=bool)
    in_train[split.train] = True
    report = ranking_report(pred, data.labels, data.iso, split.train)
    write_predictions(run.file("predictions.parquet"), data.arch_strs, data.index, pred, data.labels, in_train)
    ev = report[cfg.data.eval_label]["all"]
    scatter_plot(run.file("scatter.png"), pred, data.labels[cfg.data.eval_label], in_train,
                 f"{title}: Kendall τ {ev['kendall_tau']:.3f}, Spearman {ev['spearman']:.3f} (n={ev['n']})",
                 f"true {cfg.data.eval_label}", "predicted")
    return {**headline(report, cfg.data.eval_label), "degenerate": ev["degenerate"], "pred_std": ev["pred_std"],
            "eval_label": cfg.data.eval_label, "train_label": cfg.data.train_label, "score_time_s": score_time,
            "metrics": report}


def results_markdown(title: str, s: dict[str, Any], what: str) -> str:
    """results.md of a run: what ran, then τ / top-k per label (all cells and unique unseen ones)."""
    head = f"# {title}\n\n{what}\n\n"
    if "cv_tau" in s:
        return head + f"Cross-validation fold {s['cv_fold']}/{s['cv_folds']}: Kendall τ {s['cv_tau']:.4f} on " \
                      f"{s['cv_n']} held-out training cells (`{s['train_label']}`).\n"
    if "metrics" not in s:
        return head + markdown_table([s], ["generated_aux_acc_mean", "kendall_tau_generated_acc", "hyper_archs"])
    rows = []
    for label, scopes in s["metrics"].items():
        for scope, m in scopes.items():
            rows.append({"label": label, "cells": scope, **{k: m.get(k, float("nan")) for k in
                                                            ("kendall_tau", "spearman", "top1_regret",
                                                             "top10_overlap", "top50_overlap", "n")}})
    timing = f"\nscoring all {s['n_eval']} architectures {s['score_time_s']:.2f} s.\n"
    return head + markdown_table(rows, ["label", "cells", "kendall_tau", "spearman", "top1_regret", "top10_overlap",
                                        "top50_overlap", "n"]) + timing + "\n![predicted vs true](scatter.png)\n"


@torch.no_grad()
def hyper_evaluation(cfg: Any, data: Any, model: Any) -> dict[str, Any]:
    """HyperNAS-H: accuracy of generated networks on held-out aux images, and how it ranks archs."""
    from pipeline.data.loading import open_aux
    from pipeline.distributed import to_device

    aux_eval = open_aux(cfg, cfg.data.aux_eval_split, augment=False, rank=0, world=1)
    rng = np.random.default_rng(cfg.train.seed + 104729)
    idx = np.sort(rng.choice(len(data.archs), size=min(cfg.eval.hyper_archs, len(data.archs)), replace=False))
    model.eval()
    images, labels = aux_eval.batch(0, min(cfg.eval.hyper_images, len(aux_eval)), cfg.train.seed)
    dev = next(model.parameters()).device
    images, labels = images.to(dev), labels.to(dev)
    accs, losses = [], []
    for start in range(0, len(idx), 16):
        part = idx[start:start + 16]
        _, nodes = model.encode(to_device(data.graphs.select(torch.as_tensor(part)), dev))
        params = model.target_params([data.archs[i] for i in part], nodes)
        for b, i in enumerate(part):
            logits = model.run_target(data.archs[i], params[b], images)
            accs.append(float((logits.argmax(1) == labels).float().mean()))
            losses.append(float(torch.nn.functional.cross_entropy(logits, labels)))
    model.train()
    accs_np, losses_np = np.array(accs), np.array(losses)
    y = data.labels[cfg.data.eval_label][idx]
    tau = kendall_tau(accs_np, y) if np.ptp(accs_np) > 0 else float("nan")
    tau_loss = kendall_tau(-losses_np, y) if np.ptp(losses_np) > 0 else float("nan")
    return {"generated_aux_acc_mean": float(accs_np.mean()), "generated_aux_acc_std": float(accs_np.std()),
            "hyper_archs": int(len(idx)), "kendall_tau_generated_acc": tau, "kendall_tau_generated_loss": tau_loss,
            "eval_label": cfg.data.eval_label}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys
    import time

    from pipeline.errors import UserError

    p = argparse.ArgumentParser(prog="python -m pipeline.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a trained run directory (config.yaml + checkpoints/)")
    p.add_argument("--table", required=True, help="prepared Parquet table of architectures to score")
    p.add_argument("--label", action="append", default=[], help="label column(s) to rank against (repeatable)")
    p.add_argument("--out", default=None, help="predictions Parquet (default RUN_DIR/predictions-<table>.parquet)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = p.parse_args(argv)
    try:
        from pipeline.scoring import Scorer
        scorer = Scorer.from_run(args.run_dir, args.threads)
        t0 = time.perf_counter()
        table, archs, pred = scorer.score_table(args.table)
        elapsed = time.perf_counter() - t0
        labels = {name: table.label(name) for name in args.label}
        for name, y in labels.items():
            bad = ~np.isfinite(y)
            if bad.any():
                raise UserError(f"label column {name!r} of {args.table!r} has {int(bad.sum())} NaN/inf values "
                                f"(first at row {int(np.flatnonzero(bad)[0])})")
        out = Path(args.out) if args.out else Path(args.run_dir) / f"predictions-{Path(args.table).stem}.parquet"
        index = np.asarray(table.columns["index"]) if "index" in table.columns else np.arange(len(archs))
        write_predictions(out, list(table.archs), index, pred, labels, np.zeros(len(archs), dtype=bool))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"scored {len(archs)} architectures in {elapsed:.2f} s -> {out}")
    for name, y in labels.items():
        m = ranking_metrics(pred, y)
        print(f"{name}: Kendall tau {m['kendall_tau']:.4f}  Spearman {m['spearman']:.4f}  top-1 regret "
              f"{m['top1_regret']:.2f}")
    if len(labels) == 1:  # the line scripts parse, as the trainer prints it
        m = ranking_metrics(pred, next(iter(labels.values())))
        print(f"Kendall tau {m['kendall_tau']:.4f}  Spearman {m['spearman']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
