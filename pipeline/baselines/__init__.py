"""Baseline predictors without a neural network, run by the same command as the neural variants.

    python -m pipeline.train model.variant=rf [model.baseline="{n_estimators: 500}"]

A baseline is registered with `@register_baseline(name)`: a class built from `model.baseline` settings
(checked against its constructor), with `feature_sets` (what `load_data` computes for it), `fit(data,
train_idx, y, seed)` and `predict(data) -> (P,)` in label units. `run_baseline(cfg)` fits it on the run's
training cells and writes the same run directory as the trainer (config, env, predictions, results).
"""
from __future__ import annotations

import inspect
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.errors import ConfigError
from pipeline.registry import Registry

log = logging.getLogger("hypernas.baselines")

BASELINES: Registry[type] = Registry("baseline")


def register_baseline(name: str) -> Callable[[type], type]:
    return BASELINES.register(name)


def build_baseline(name: str, settings: dict[str, Any]) -> Any:
    cls = BASELINES.get(name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ConfigError(f"config key 'model.baseline': unknown setting(s) {unknown} for baseline {name!r}; "
                          f"accepted: {', '.join(accepted) or '(none)'}")
    return cls(**settings)


@register_baseline("rf")
class RandomForest:
    """A random forest on per-architecture features (default: GRAF-style graph features of the cells;
    Kadlecová et al., ICML 2024), trained on the raw training label. No neural network, no proxies."""

    def __init__(self, features: list | None = None, n_estimators: int = 500, max_features: float = 1.0,
                 min_samples_leaf: int = 1, n_jobs: int = 1):
        self.feature_sets = list(features or ["graf"])
        self.kwargs = dict(n_estimators=int(n_estimators), max_features=max_features,
                           min_samples_leaf=int(min_samples_leaf), n_jobs=int(n_jobs))
        self.model = None

    def fit(self, data: Any, train_idx: np.ndarray, y: np.ndarray, seed: int) -> None:
        from sklearn.ensemble import RandomForestRegressor
        self.model = RandomForestRegressor(random_state=seed, **self.kwargs)
        self.model.fit(data.features.values[train_idx], y[train_idx])

    def predict(self, data: Any) -> np.ndarray:
        return self.model.predict(data.features.values).astype(np.float64)


@register_baseline("params")
class ParamCount:
    """The floor: rank by the benchmark network's parameter count (`space.cost`), no training."""

    feature_sets: list = []

    def __init__(self, cost: str = "params"):
        self.cost = cost
        self.space = None

    def fit(self, data: Any, train_idx: np.ndarray, y: np.ndarray, seed: int) -> None:
        pass

    def predict(self, data: Any) -> np.ndarray:
        costs = [self.space.cost(a) for a in data.archs]
        if self.cost not in costs[0]:
            raise ConfigError(f"config key 'model.baseline': space {self.space.name!r} reports no cost "
                              f"{self.cost!r} (has {sorted(costs[0])})")
        return np.asarray([c[self.cost] for c in costs], dtype=np.float64)


def run_baseline(cfg: Any) -> dict[str, Any]:
    """Fit the baseline `cfg.model.variant` on the run's training cells, score the table, write the run dir."""
    from pipeline.config import dump_yaml, model_seed, run_name
    from pipeline.data.loading import load_data, split_archs
    from pipeline.evaluate import results_markdown, score_and_write, write_results
    from pipeline.rundir import RunDir
    from pipeline.spaces import space_from_config

    t0 = time.time()
    baseline = build_baseline(cfg.model.variant, dict(cfg.model.baseline))
    space = space_from_config(cfg.space)
    baseline.space = space
    data = load_data(cfg, space, features=baseline.feature_sets)
    split = split_archs(cfg, len(data.archs))
    run = RunDir(Path(cfg.run.root) / run_name(cfg)).create()
    run.write_config(dump_yaml(cfg))
    run.write_env()
    t_fit = time.time()
    baseline.fit(data, split.train, data.labels[cfg.data.train_label], model_seed(cfg))
    train_time = time.time() - t_fit
    t_score = time.time()
    pred = baseline.predict(data)
    score_time = time.time() - t_score
    summary = score_and_write(cfg, data, pred, run, split, run_name(cfg), score_time)
    summary.update({"run_dir": str(run.path), "train_time_s": train_time, "total_time_s": time.time() - t0,
                    "variant": cfg.model.variant, "num_train": int(len(split.train)), "seed": cfg.train.seed})
    what = f"baseline `{cfg.model.variant}` {dict(cfg.model.baseline)}, {len(split.train)} training cells, " \
           f"seed {cfg.train.seed}, train label `{cfg.data.train_label}`."
    write_results(run.path, summary, results_markdown(run_name(cfg), summary, what))
    return summary
