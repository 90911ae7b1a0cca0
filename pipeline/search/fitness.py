"""Predictors as search fitness: fitted on the queried set each round, then scoring candidates.

- `TrainerFitness` (method hypernas): the run config's predictor, trained by THE trainer
  (`pipeline.train.train`) on a small core-schema table of the queried (arch, label) pairs, one run
  directory per round (`<search run>/rounds/round<k>/`), scored with `pipeline.scoring.Scorer`
  (hypernetwork off). A search killed mid-training resumes that round's training from its checkpoint.
- `ForestFitness` (method rf): the random-forest baseline of pipeline/baselines on its feature sets
  (GRAF graph features by default), fitted with sklearn in-process (it has no checkpoint to score from).
"""
from __future__ import annotations

import abc
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Hashable, Sequence

import numpy as np

from pipeline.errors import UserError

log = logging.getLogger("hypernas.search")


class SearchPreempted(UserError):
    """The trainer was stopped by SIGTERM / SIGUSR1 mid-round (its checkpoint is written)."""


class Fitness(abc.ABC):
    @abc.abstractmethod
    def fit(self, queried: Sequence[Any], round_: int) -> dict[str, Any]:
        """Fit on the queried rows (pipeline.search.trajectory.Query); return what to record of it."""

    @abc.abstractmethod
    def score(self, archs: Sequence[Hashable]) -> np.ndarray:
        """Predicted label (label units) of each architecture."""


def write_round_table(space, queried: Sequence[Any], label: str, path: Path) -> Path:
    """The queried pairs as a prepared table in the core schema (data_prep/tables/schema.py)."""
    import pyarrow as pa

    from data_prep.tables import write_table
    from data_prep.tables.build import finish_table
    from data_prep.tables.parts import ArchCache

    cache = ArchCache(space)
    order = [cache.canon(q.arch_str) for q in queried]
    table = finish_table(cache, order, np.arange(len(order)), {label: pa.array([q.label for q in queried], pa.float64())},
                         builder="search", label_columns=[label], sources=[])
    return write_table(table, path)


class TrainerFitness(Fitness):
    def __init__(self, cfg, search, space, run_dir: Path):
        self.cfg, self.search, self.space, self.run_dir = cfg, search, space, Path(run_dir)
        self.scorer = None

    def round_overrides(self, table: Path, n: int, round_: int) -> list[str]:
        label = self.cfg.data.train_label
        out = [f"data.table={table}", f"data.num_train={n}", "data.prepare=false", f"data.eval_label={label}",
               "data.val_archs=0", "data.cv_folds=0", f"run.root={self.run_dir / 'rounds'}",
               f"run.name=round{round_:02d}", "run.resume=true", "run.tensorboard=false", "run.progress=false",
               "run.keep_checkpoints=1", "eval.every=0"]
        if self.search.retrain_epochs:
            out.append(f"train.epochs={self.search.retrain_epochs}")
        return out

    def fit(self, queried: Sequence[Any], round_: int) -> dict[str, Any]:
        from pipeline.config import replace
        from pipeline.scoring import Scorer
        from pipeline.train import train

        table = self.run_dir / "tables" / f"round{round_:02d}.parquet"
        if not table.is_file():  # a resumed round keeps its table (the same rows: the trajectory is append-only)
            write_round_table(self.space, queried, self.cfg.data.train_label, table)
        # == load_config(config, overrides + these): the run config was loaded once, then overridden
        round_cfg = replace(self.cfg, *self.round_overrides(table, len(queried), round_))
        round_dir = self.run_dir / "rounds" / f"round{round_:02d}"
        t0 = time.time()
        if (round_dir / "results.json").is_file():  # trained before a kill; results.json is written last
            summary = {"run_dir": str(round_dir), "reused": True}
        else:
            summary = train(round_cfg)
            if summary.get("preempted"):
                raise SearchPreempted(f"stopped by a signal while training round {round_} ({summary['run_dir']}); "
                                      f"re-run the same command to resume")
        self.scorer = Scorer.from_run(round_dir, threads=self.cfg.train.threads)
        info = {"n_train": len(queried), "train_time_s": round(time.time() - t0, 2),
                "epochs": round_cfg.train.epochs, "reused": bool(summary.get("reused"))}
        if summary.get("degenerate"):
            log.warning("round %d: the predictor's predictions are (near) constant", round_)
            info["degenerate"] = True
        return info

    def score(self, archs: Sequence[Hashable]) -> np.ndarray:
        return self.scorer.score(list(archs))


class ForestFitness(Fitness):
    def __init__(self, space, settings: dict, seed: int):
        from pipeline.baselines import build_baseline
        self.space, self.settings, self.seed = space, dict(settings), seed
        self.forest = build_baseline("rf", self.settings)
        self._rows: dict[Hashable, np.ndarray] = {}
        self._names: list[str] | None = None

    def _features(self, archs: Sequence[Hashable]):
        from pipeline.features import FeatureBlock, compute_features
        missing = [a for a in dict.fromkeys(archs) if a not in self._rows]
        if missing:
            block = compute_features(self.forest.feature_sets, self.space, missing)
            self._names = block.names
            self._rows.update(zip(missing, block.values))
        return FeatureBlock(list(self._names or []), np.stack([self._rows[a] for a in archs]))

    def fit(self, queried: Sequence[Any], round_: int) -> dict[str, Any]:
        from pipeline.baselines import build_baseline
        t0 = time.time()
        self.forest = build_baseline("rf", self.settings)
        data = SimpleNamespace(features=self._features([q.arch for q in queried]))
        y = np.asarray([q.label for q in queried], dtype=np.float64)
        self.forest.fit(data, np.arange(len(queried)), y, self.seed * 1_000 + round_)
        return {"n_train": len(queried), "train_time_s": round(time.time() - t0, 2)}

    def score(self, archs: Sequence[Hashable]) -> np.ndarray:
        return self.forest.predict(SimpleNamespace(features=self._features(list(archs))))
