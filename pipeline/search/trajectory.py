"""The queried set, in query order: the search's only state, rewritten atomically after every oracle call.

`trajectory.parquet` (one row per query):

  order          int64    1, 2, ... (the query's position in the budget)
  arch           string   canonical architecture string
  iso_class      string   its isomorphism class
  round          int64    the oracle call that queried it (0 = the initial sample)
  predicted      float64  the predictor's value when it was proposed (NaN for random / evolution picks)
  label          float64  what the oracle returned (data.train_label)
  best_so_far    float64  max label over orders 1..order
  best_so_far_eval float64  data.eval_label of the best-so-far architecture: added when the search ends,
                           for reporting only (the search never reads it)

A killed search loses at most the oracle call in flight; a re-run reloads the file and continues, so no
architecture is ever queried twice. Every round draws its randomness from (seed, round), so a resumed
search makes the same choices as an uninterrupted one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import DataError
from pipeline.utils.io import atomic_path

_META = b"hypernas_search"


@dataclass
class Query:
    arch: Hashable
    arch_str: str
    iso: str
    round: int
    predicted: float
    label: float


class Trajectory:
    def __init__(self, path: str | Path, space):
        self.path, self.space = Path(path), space
        self.rows: list[Query] = []

    @classmethod
    def load(cls, path: str | Path, space) -> "Trajectory":
        traj = cls(path, space)
        if not traj.path.is_file():
            return traj
        try:
            t = pq.read_table(traj.path).to_pydict()
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{traj.path}: unreadable search trajectory ({e}); delete the run directory to "
                            f"start over") from e
        for s, c, r, p, y in zip(t["arch"], t["iso_class"], t["round"], t["predicted"], t["label"]):
            traj.rows.append(Query(space.parse(s), s, c, int(r), float("nan") if p is None else float(p), float(y)))
        return traj

    # -- what the search reads -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def archs(self) -> list[Hashable]:
        return [q.arch for q in self.rows]

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([q.label for q in self.rows], dtype=np.float64)

    @property
    def classes(self) -> set[str]:
        return {q.iso for q in self.rows}

    @property
    def next_round(self) -> int:
        return self.rows[-1].round + 1 if self.rows else 0

    def before_round(self, k: int) -> list[Query]:
        return [q for q in self.rows if q.round < k]

    def best_so_far(self) -> np.ndarray:
        return np.maximum.accumulate(self.labels) if self.rows else np.zeros(0)

    def best_index_so_far(self) -> np.ndarray:
        """Row of the best label among rows 0..i (the first to attain it)."""
        out, best = [], -1
        for i, q in enumerate(self.rows):
            if best < 0 or q.label > self.rows[best].label:
                best = i
            out.append(best)
        return np.asarray(out, dtype=np.int64)

    # -- the one write ---------------------------------------------------------------------------
    def append(self, archs: Sequence[Hashable], classes: Sequence[str], labels: np.ndarray, round_: int,
               predicted: Sequence[float] | None = None) -> None:
        """Record one oracle call's answers, then rewrite the file atomically."""
        predicted = list(predicted) if predicted is not None else [float("nan")] * len(archs)
        for a, c, y, p in zip(archs, classes, labels, predicted):
            self.rows.append(Query(a, self.space.to_str(a), c, round_, float(p), float(y)))
        self.write()

    def table(self, eval_of_best: np.ndarray | None = None, meta: dict | None = None) -> pa.Table:
        cols = {"order": pa.array(np.arange(1, len(self.rows) + 1), pa.int64()),
                "arch": pa.array([q.arch_str for q in self.rows], pa.string()),
                "iso_class": pa.array([q.iso for q in self.rows], pa.string()),
                "round": pa.array([q.round for q in self.rows], pa.int64()),
                "predicted": pa.array([q.predicted for q in self.rows], pa.float64()),
                "label": pa.array(self.labels, pa.float64()),
                "best_so_far": pa.array(self.best_so_far(), pa.float64())}
        if eval_of_best is not None:
            cols["best_so_far_eval"] = pa.array(np.asarray(eval_of_best, dtype=np.float64), pa.float64())
        t = pa.table(cols)
        return t.replace_schema_metadata({_META: json.dumps(meta or {}).encode()})

    def write(self, eval_of_best: np.ndarray | None = None, meta: dict | None = None) -> None:
        with atomic_path(self.path, suffix=".parquet") as tmp:
            pq.write_table(self.table(eval_of_best, meta), tmp)
