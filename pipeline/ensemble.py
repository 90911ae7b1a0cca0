"""Ensembles of finished runs: average their standardised predictions, rank with the average.

    python -m pipeline.ensemble RUN_DIR RUN_DIR ... --out DIR [--weights 1,1]    # trained runs (same table)
    python -m pipeline.ensemble --cv NAME_A NAME_B --root RUNS --folds 5          # their CV folds (selection)

Members are any runs of the same table and split: neural variants, several seeds of one (`train.member`),
or a baseline (pipeline/baselines). Each member's predictions are z-scored over the table (their scales
differ: a ranking-trained network's scores are not accuracies), then averaged with the weights; ties and
constant members are rejected. The output directory looks like a run's: predictions.parquet, results.json
and results.md with the same metrics (τ over all cells and over unique unseen cells, top of the ranking).

`--cv` blends the members' cross-validation folds (`<name>-cv<k>of<K>/cv_predictions.parquet`: held-out
training cells and their training label), so an ensemble is chosen the way a single setting is: by CV τ
inside the budget, never by test labels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from pipeline.errors import DataError, UserError
from pipeline.metrics import kendall_tau


def zscore(x: np.ndarray, what: str) -> np.ndarray:
    sd = float(np.std(x))
    if not np.isfinite(sd) or sd == 0.0:
        raise DataError(f"{what}: predictions are constant (a collapsed predictor); it cannot join an ensemble")
    return (x - float(np.mean(x))) / sd


def blend(predictions: Sequence[np.ndarray], weights: Sequence[float] | None = None,
          names: Sequence[str] | None = None) -> np.ndarray:
    """Weighted mean of the members' z-scored predictions (all of one length)."""
    if not predictions:
        raise UserError("an ensemble needs at least one member")
    names = list(names or [f"member {i}" for i in range(len(predictions))])
    n = len(predictions[0])
    for name, p in zip(names, predictions):
        if len(p) != n:
            raise DataError(f"{name} has {len(p)} predictions, the first member {n}: members must score one table")
    w = np.asarray(weights if weights is not None else [1.0] * len(predictions), dtype=np.float64)
    if len(w) != len(predictions) or (w < 0).any() or w.sum() <= 0:
        raise UserError(f"weights {list(w)} must be {len(predictions)} non-negative numbers, not all 0")
    z = np.stack([zscore(np.asarray(p, np.float64), name) for p, name in zip(predictions, names)])
    return (w[:, None] * z).sum(0) / w.sum()


def _read(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path} does not exist (is the run finished?)")
    t = pq.read_table(path)
    missing = [c for c in columns if c not in t.column_names]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}")
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in columns}


def ensemble_runs(run_dirs: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None
                  ) -> dict[str, Any]:
    """Blend finished runs of one table; write predictions + metrics into `out` like a run directory."""
    from pipeline.config import load_config
    from pipeline.data.loading import load_data, split_archs
    from pipeline.evaluate import (headline, ranking_report, results_markdown, write_predictions,
                                   write_results)
    from pipeline.spaces import space_from_config

    run_dirs = [Path(d) for d in run_dirs]
    cfgs = [load_config(d / "config.yaml") for d in run_dirs]
    cfg = cfgs[0]
    for d, c in zip(run_dirs, cfgs):
        if (c.data.table, c.data.num_train, c.train.seed) != (cfg.data.table, cfg.data.num_train, cfg.train.seed):
            raise DataError(f"{d} trained on another table or split ({c.data.table}, {c.data.num_train} cells, seed "
                            f"{c.train.seed}) than {run_dirs[0]}: members must share one split")
    preds = [_read(d / "predictions.parquet", ["arch", "prediction"]) for d in run_dirs]
    for d, p in zip(run_dirs[1:], preds[1:]):
        if not np.array_equal(p["arch"], preds[0]["arch"]):
            raise DataError(f"{d} scored other architectures (or another order) than {run_dirs[0]}")
    pred = blend([p["prediction"] for p in preds], weights, [str(d) for d in run_dirs])
    data = load_data(cfg, space_from_config(cfg.space))
    split = split_archs(cfg, len(data.archs))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    in_train = np.zeros(len(data.archs), dtype=bool)
    in_train[split.train] = True
    write_predictions(out / "predictions.parquet", data.arch_strs, data.index, pred, data.labels, in_train)
    report = ranking_report(pred, data.labels, data.iso, split.train)
    summary = {**headline(report, cfg.data.eval_label), "eval_label": cfg.data.eval_label,
               "train_label": cfg.data.train_label, "members": [str(d) for d in run_dirs],
               "weights": list(weights) if weights else None, "num_train": int(len(split.train)),
               "seed": cfg.train.seed, "metrics": report, "score_time_s": 0.0}
    what = f"ensemble of {len(run_dirs)} runs ({', '.join(d.name for d in run_dirs)}), z-scored predictions " \
           f"averaged{' with weights ' + str(list(weights)) if weights else ''}."
    write_results(out, summary, results_markdown(out.name, summary, what))
    return summary


def ensemble_cv(names: Sequence[str], root: str | Path, folds: int, weights: Sequence[float] | None = None
                ) -> dict[str, Any]:
    """CV τ of the blend of runs `names` (run names without the -cv suffix), fold by fold."""
    root = Path(root)
    taus = []
    label = None
    for k in range(folds):
        members = []
        for name in names:
            path = root / f"{name}-cv{k}of{folds}" / "cv_predictions.parquet"
            t = pq.read_table(path) if path.is_file() else None
            if t is None:
                raise DataError(f"{path} does not exist (run `python -m pipeline.cv ... --folds {folds}` first)")
            members.append(t)
        label = [c for c in members[0].column_names if c not in ("index", "arch", "prediction", "in_train")][0]
        for name, t in zip(names[1:], members[1:]):
            if t.column("arch").to_pylist() != members[0].column("arch").to_pylist():
                raise DataError(f"fold {k} of {name} held out other cells than {names[0]}: members must share folds")
        p = blend([t.column("prediction").to_numpy() for t in members], weights, names)
        taus.append(kendall_tau(p, members[0].column(label).to_numpy()))
    taus_np = np.asarray(taus)
    return {"members": list(names), "weights": list(weights) if weights else None, "folds": folds,
            "cv_tau": float(taus_np.mean()), "cv_tau_std": float(taus_np.std(ddof=1)) if folds > 1 else 0.0,
            "fold_taus": taus, "train_label": label}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.ensemble", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories (or, with --cv, run names under --root)")
    p.add_argument("--out", help="output directory (trained runs)")
    p.add_argument("--weights", default=None, help="comma-separated member weights (default: equal)")
    p.add_argument("--cv", action="store_true", help="blend the members' CV folds instead")
    p.add_argument("--root", default="runs", help="with --cv: the run root holding <name>-cv<k>of<K>/")
    p.add_argument("--folds", type=int, default=5)
    args = p.parse_args(argv)
    try:
        weights = [float(w) for w in args.weights.split(",")] if args.weights else None
        if len(args.runs) < 2:
            raise UserError("give at least two members")
        if args.cv:
            s = ensemble_cv(args.runs, args.root, args.folds, weights)
            print(f"cv tau {s['cv_tau']:.4f} ± {s['cv_tau_std']:.4f} over {s['folds']} folds ({s['train_label']})")
            return 0
        if not args.out:
            raise UserError("--out DIR is required for trained runs")
        s = ensemble_runs(args.runs, args.out, weights)
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Kendall tau {s['kendall_tau']:.4f}  Spearman {s['spearman']:.4f}  ({s['eval_label']}, "
          f"{s['n_eval']} architectures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
