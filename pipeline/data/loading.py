"""What a run trains and evaluates on: the table, its labels, graphs, features and aux images, and the split.

    data = load_data(cfg, space)                 # prepares missing data first (rank 0 under a launcher)
    split = split_archs(cfg, len(data.archs))    # training cells, monitoring cells, cross-validation fold

The trainer, the baselines, evaluation and search all load data through here, so a table means the same
thing to each of them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable

import numpy as np

from pipeline.data.graphs import GraphTable, build_graph_table
from pipeline.errors import DataError

log = logging.getLogger("hypernas.data")


@dataclass
class TrainData:
    archs: list[Hashable]          # parsed architectures, table order
    arch_strs: list[str]
    index: np.ndarray
    labels: dict[str, np.ndarray]  # train and eval label columns
    graphs: GraphTable | None      # cell-graph sequences of the variant's scope (None for baselines)
    aux: Any | None                # AuxBatches of the aux train split (hyper task)
    num_classes: int               # of the aux images (the manifest's count); 0 without aux images
    iso: np.ndarray                # isomorphism class per architecture (equal strings = equivalent)
    features: Any | None = None    # pipeline.features.FeatureBlock of the requested feature sets
    table_path: str = ""


@dataclass
class Split:
    train: np.ndarray              # the labelled budget the predictor trains on
    monitor: np.ndarray            # data.val_archs cells beyond the budget: per-epoch tau, never a choice
    holdout: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # CV fold (budget cells)


def ensure_prepared(cfg: Any, space: Any, need_images: bool) -> None:
    """Build the Parquet table / image shards when missing (or fail, naming what is missing)."""
    table = Path(cfg.data.table)
    if not table.is_file():
        if not cfg.data.prepare:
            raise DataError(f"table {str(table)!r} does not exist (data.prepare=false); build it with "
                            f"`python -m data_prep.tables prepare --space {space.name} --benchmark-dir DIR --out {table}`")
        from data_prep.tables import prepare_table
        log.info("preparing table %s from %s", table, cfg.data.benchmark_dir)
        prepare_table(space.name, cfg.data.benchmark_dir, table)
    if need_images:
        shards = Path(cfg.data.aux_shards)
        if not any(shards.glob("*-manifest.json")):
            if not cfg.data.prepare:
                raise DataError(f"no shard manifest in {str(shards)!r} (data.prepare=false); build it with "
                                f"`python -m data_prep.images --source SRC --out {shards}`")
            from data_prep.images import prepare_images
            log.info("sharding aux images %s -> %s", cfg.data.aux_source, shards)
            prepare_images(cfg.data.aux_source, shards, dataset=cfg.data.aux_dataset,
                           workers=cfg.data.prepare_workers)


def check_labels(name: str, values: np.ndarray, archs: list[str], lo: float, hi: float, table: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"label column {name!r} of {table!r} has {int(bad.sum())} NaN/inf values "
                        f"(first at row {i}, arch {archs[i]!r})")
    bad = (values < lo) | (values > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"label column {name!r} of {table!r} has {int(bad.sum())} values outside "
                        f"data.label_range [{lo}, {hi}] (first: {values[i]} at row {i}, arch {archs[i]!r})")


def open_aux(cfg: Any, split: str, augment: bool, rank: int | None = None, world: int | None = None) -> Any:
    """The aux images of `split`: in memory or streamed (pipeline/data/aux_source.py), per the data.aux_* keys."""
    from pipeline.config import model_seed
    from pipeline.data.aux_source import open_aux_source
    d = cfg.data
    return open_aux_source(d.aux_shards, split, d.aux_dataset, image_size=cfg.model.hyper.image_size, augment=augment,
                           memory_budget_mb=d.aux_memory_mb, mode=d.aux_loader, num_workers=d.aux_workers,
                           shuffle_buffer=d.aux_shuffle_buffer, seed=model_seed(cfg), rank=rank, world=world)


def load_data(cfg: Any, space: Any, *, scope: str | None = None, need_images: bool = False,
              features: list[str] | None = None, rank: int | None = None, world: int | None = None) -> TrainData:
    """The table's architectures and labels; graphs of `scope` (None: none), aux images, feature sets."""
    from pipeline.data.tables import load_table

    ensure_prepared(cfg, space, need_images=need_images)
    table = load_table(cfg.data.table)
    labels = {}
    for name in dict.fromkeys([cfg.data.train_label, cfg.data.eval_label]):
        values = table.label(name)
        check_labels(name, values, table.archs, *cfg.data.label_range, table=str(cfg.data.table))
        labels[name] = values
    archs = space.parse_many(table.archs)
    graphs = build_graph_table(space, archs, scope) if scope else None
    aux, num_classes = None, 0
    if need_images:
        aux = open_aux(cfg, cfg.data.aux_split, augment=cfg.model.hyper.augment, rank=rank, world=world)
        num_classes = aux.num_classes  # the manifest's class count (a split may miss the last classes)
    index = np.asarray(table.columns["index"]) if "index" in table.columns else np.arange(len(archs))
    if "iso_class" in table.columns:
        iso = np.asarray(table.columns["iso_class"], dtype=object)
    else:
        iso = np.asarray([space.isomorphism_class(a) for a in archs], dtype=object)
    block = None
    if features:
        from pipeline.features import compute_features
        block = compute_features(features, space, archs, table)
    return TrainData(archs, list(table.archs), index, labels, graphs, aux, num_classes, iso, block,
                     str(cfg.data.table))


def split_archs(cfg: Any, n_total: int) -> Split:
    """The training budget (METHOD.md §7: each seed draws its own), monitoring cells beyond it, and, with
    data.cv_folds = K, fold data.cv_fold of the budget held out (the run then trains on the other K−1)."""
    from pipeline.data.tables import split_train

    budget = split_train(n_total, cfg.data.num_train, cfg.train.seed)
    rest = np.setdiff1d(np.arange(n_total), budget)
    rng = np.random.default_rng(cfg.train.seed + 7919)
    monitor = np.sort(rng.choice(rest, size=min(cfg.data.val_archs, len(rest)), replace=False))
    k, fold = cfg.data.cv_folds, cfg.data.cv_fold
    if not k:
        return Split(budget, monitor)
    # fold membership from a seeded permutation of the budget: the same K folds for every setting
    order = np.random.default_rng(cfg.train.seed + 104_723).permutation(len(budget))
    held = np.zeros(len(budget), dtype=bool)
    held[order[fold::k]] = True
    return Split(budget[~held], monitor, np.sort(budget[held]))
