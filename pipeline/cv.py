"""K-fold cross-validation inside the training budget: the honest way to choose a setting.

    python -m pipeline.cv --config configs/nb201_cpu.yaml --folds 5 [--jobs 2] [key=value ...]

The run's `data.num_train` training cells (drawn by `train.seed`) are cut into K folds; each fold is held
out once while the trainer fits the other K−1, then scores the held-out cells on `data.train_label`. No
test label and no architecture beyond the budget is read, so the mean CV τ may select defaults, settings
and sweep winners (the sweep report ranks by it). Each fold is the one trainer in its own process
(`run.name=<name>-cv<k>of<K>`), so folds resume like any run. Writes `<run.root>/<name>-cv/cv.json` and
prints `cv tau MEAN ± STD over K folds`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import load_config, run_name
from pipeline.errors import UserError
from pipeline.utils.io import atomic_write_json
from pipeline.utils.paths import REPO_ROOT


def fold_overrides(name: str, k: int, folds: int) -> list[str]:
    return [f"data.cv_folds={folds}", f"data.cv_fold={k}", f"run.name={name}-cv{k}of{folds}"]


def run_fold(config: str, overrides: list[str], name: str, k: int, folds: int, root: Path) -> dict[str, Any]:
    results = root / f"{name}-cv{k}of{folds}" / "results.json"
    if not results.is_file():
        cmd = [sys.executable, "-m", "pipeline.train", "--config", config, *overrides,
               *fold_overrides(name, k, folds), "run.progress=false"]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"cross-validation fold {k} of {name!r} failed:\n{proc.stderr[-2000:]}")
    return json.loads(results.read_text())


def cross_validate(config: str, overrides: list[str], folds: int = 5, jobs: int = 1) -> dict[str, Any]:
    """Run (or resume) the K folds of the run `config` + `overrides`; return and write the CV summary."""
    cfg = load_config(config, overrides)
    if folds < 2:
        raise UserError(f"--folds must be >= 2, got {folds}")
    if cfg.data.num_train < 2 * folds:
        raise UserError(f"data.num_train={cfg.data.num_train} is too small for {folds} folds (>= 2 cells each)")
    name = run_name(cfg)
    root = Path(cfg.run.root)
    if not root.is_absolute():
        root = REPO_ROOT / root
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        results = list(pool.map(lambda k: run_fold(config, overrides, name, k, folds, root), range(folds)))
    taus = np.array([r["cv_tau"] for r in results], dtype=np.float64)
    summary = {"name": name, "folds": folds, "cv_tau": float(np.nanmean(taus)),
               "cv_tau_std": float(np.nanstd(taus, ddof=1)) if folds > 1 else 0.0, "fold_taus": taus.tolist(),
               "train_label": cfg.data.train_label, "num_train": cfg.data.num_train, "seed": cfg.train.seed,
               "config": config, "overrides": overrides}
    atomic_write_json(root / f"{name}-cv" / "cv.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.cv", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/nb201_cpu.yaml")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=1, help="folds trained at once (one process each)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = p.parse_args(argv)
    try:
        s = cross_validate(args.config, args.overrides, args.folds, args.jobs)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"cv tau {s['cv_tau']:.4f} ± {s['cv_tau_std']:.4f} over {s['folds']} folds "
          f"({s['num_train']} x {s['train_label']}, seed {s['seed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
