"""Score architectures with a trained run: the hot path of evaluation and search (hypernetwork off).

    scorer = Scorer.from_run("runs/nb201-hypernas-n156-s0")
    acc = scorer.score_table("prepared/tables/nb201.parquet")     # predicted accuracy per table row
    acc = scorer.score(archs)                                      # any parsed architectures

A run directory's `config.yaml` and latest checkpoint rebuild the predictor (encoder + regressor + the
feature standardisation); predictions come back in label units (the run's training-label mean and std).
Graph tables and feature vectors of a whole table are cached on disk (`<table>.inputs-<key>.pt` beside it,
keyed by the table's sha256, the space and its settings, the encoding scope and the feature sets), so scoring a
benchmark again skips encoding and feature computation.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from pipeline.config import Config, load_config
from pipeline.data.graphs import GraphTable, build_graph_table
from pipeline.errors import DataError, UserError
from pipeline.evaluate import predict_all
from pipeline.models.predictor import VARIANTS, HyperNASModel
from pipeline.rundir import RunDir
from pipeline.spaces import SearchSpace, space_from_config
from pipeline.utils.io import atomic_path, file_sha256

log = logging.getLogger("hypernas.scoring")


def inputs_cached(space: SearchSpace, archs: Sequence[Hashable], scope: str, features: Sequence[str],
                  table_path: str | Path, table: Any = None) -> tuple[GraphTable, Any]:
    """(graph table, feature block or None) of a table file's rows, cached beside the table."""
    from pipeline.features import FeatureBlock, compute_features

    table_path = Path(table_path)
    key = hashlib.sha256(json.dumps({"table": file_sha256(table_path), "space": space.name, "scope": scope,
                                     "features": list(features), "settings": space.settings.__dict__},
                                    sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = table_path.with_name(f"{table_path.name}.inputs-{key}.pt")
    if cache.is_file():
        try:
            d = torch.load(cache, map_location="cpu", weights_only=True)
            if d["arch_graphs"].shape[0] == len(archs):
                block = FeatureBlock(list(d["feature_names"]), d["features"].numpy()) if features else None
                return GraphTable(d["node_types"], d["adj"], d["arch_graphs"]), block
        except Exception as e:  # a damaged cache is rebuilt, never trusted
            log.warning("rebuilding damaged input cache %s (%s)", cache, e)
    table = build_graph_table(space, archs, scope)
    block = compute_features(features, space, archs, table) if features else None
    try:
        with atomic_path(cache, suffix=".pt") as tmp:
            torch.save({"node_types": table.node_types, "adj": table.adj, "arch_graphs": table.arch_graphs,
                        "features": torch.from_numpy(block.values) if block is not None else torch.zeros(0),
                        "feature_names": block.names if block is not None else []}, tmp)
    except OSError as e:  # a read-only data directory: score without a cache
        log.info("no input cache for %s (%s)", table_path, e)
    return table, block


@dataclass
class Scorer:
    cfg: Config
    space: SearchSpace
    model: HyperNASModel
    label_mean: float
    label_std: float
    feature_names: list[str]
    run_dir: Path

    @classmethod
    def from_run(cls, run_dir: str | Path, threads: int = 0) -> "Scorer":
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise UserError(f"{str(run_dir)!r} is not a run directory (no config.yaml)")
        cfg = load_config(run_dir / "config.yaml")
        variant = VARIANTS.get(cfg.model.variant)
        if not variant.predict:
            raise UserError(f"run {str(run_dir)!r} is a {cfg.model.variant} run: it has no accuracy regressor")
        ckpt = RunDir(run_dir).latest_checkpoint()
        if ckpt is None:
            raise UserError(f"run {str(run_dir)!r} has no checkpoint to score with")
        torch.set_flush_denormal(True)  # see pipeline/train.py setup_runtime: trained weights, 20x slower without
        if threads:
            torch.set_num_threads(threads)
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        weights = state["objective"]
        space = space_from_config(cfg.space)
        num_features = int(weights["model.feature_mean"].shape[0]) if "model.feature_mean" in weights else 0
        num_classes = int(state.get("num_classes") or 10)
        model = HyperNASModel(cfg.model, space, num_classes, num_features)
        own = {k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")}
        model.load_state_dict(own)
        model.eval()
        return cls(cfg, space, model, float(state["label_mean"]), float(state["label_std"]),
                   list(state.get("feature_names", [])), run_dir)

    @property
    def scope(self) -> str:
        return VARIANTS.get(self.cfg.model.variant).scope

    def _features(self, archs: Sequence[Hashable], block: Any = None) -> torch.Tensor | None:
        if not self.cfg.model.features:
            return None
        if block is None:
            from pipeline.data.tables import load_table
            from pipeline.features import compute_features
            # table-backed feature sets (zc) look the architectures up in the run's own table
            table = load_table(self.cfg.data.table) if "zc" in self.cfg.model.features else None
            block = compute_features(self.cfg.model.features, self.space, archs, table)
        if self.feature_names and block.names != self.feature_names:
            raise DataError(f"features of these architectures ({len(block.names)} columns) do not match the run's "
                            f"({len(self.feature_names)}): the space's feature definition changed")
        return torch.tensor(block.values, dtype=torch.float32)

    def score_graphs(self, graphs: GraphTable, archs: Sequence[Hashable], block: Any = None) -> np.ndarray:
        pred = predict_all(self.model, graphs, self.cfg.eval.batch_size, features=self._features(archs, block))
        return pred * self.label_std + self.label_mean

    def score(self, archs: Sequence[Hashable]) -> np.ndarray:
        """Predicted accuracy (label units) of parsed architectures."""
        return self.score_graphs(build_graph_table(self.space, archs, self.scope), archs)

    def score_table(self, table_path: str | Path) -> tuple[Any, list[Hashable], np.ndarray]:
        """(table, parsed archs, predictions) for every row of a prepared table."""
        from pipeline.data.tables import load_table
        table = load_table(table_path)
        archs = self.space.parse_many(table.archs)
        graphs, block = inputs_cached(self.space, archs, self.scope, self.cfg.model.features, table_path, table)
        return table, archs, self.score_graphs(graphs, archs, block)
