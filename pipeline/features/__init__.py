"""Per-architecture feature vectors: a registry of feature sets, each a function of the space's own data.

    block = compute_features(["graf"], space, archs)     # FeatureBlock: names + (P, F) float64 values

A feature set is registered with `@register_feature_set(name)` and maps `(space, archs, table)` to a
`FeatureBlock` (`table`: the ArchTable the archs come from, or None). They feed the random-forest baseline
(pipeline/baselines) and, with `model.features`, the regressor beside the GCN embedding. Feature sets never
read labels. Registered: `graf` (graph features, pipeline/features/graf.py), `cost` (params and FLOPs of the
benchmark network, `space.cost`), `zc` (the table's zero-cost proxy columns `zc_*`, written by
`python -m pipeline.zero_cost --out TABLE`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from pipeline.registry import Registry


@dataclass
class FeatureBlock:
    names: list[str]
    values: np.ndarray  # (P, F) float64, one row per architecture

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"feature block of shape {self.values.shape} for {len(self.names)} names")


FeatureFn = Callable[..., FeatureBlock]
FEATURE_SETS: Registry[FeatureFn] = Registry("feature set")


def register_feature_set(name: str) -> Callable[[FeatureFn], FeatureFn]:
    return FEATURE_SETS.register(name)


def compute_features(names: Sequence[str], space, archs: Sequence[Hashable], table=None) -> FeatureBlock:
    """The named feature sets side by side (columns prefixed `<set>:`)."""
    blocks = [FEATURE_SETS.get(n)(space, archs, table) for n in names]
    if not blocks:
        return FeatureBlock([], np.zeros((len(archs), 0)))
    cols = [f"{n}:{c}" for n, b in zip(names, blocks) for c in b.names]
    return FeatureBlock(cols, np.concatenate([b.values for b in blocks], axis=1))


from pipeline.features import graf, table_columns  # noqa: E402,F401  (register "graf", "cost", "zc")

__all__ = ["FeatureBlock", "FEATURE_SETS", "register_feature_set", "compute_features"]
