"""npz: a .npz file with x_<split> (N,H,W,3) uint8 and y_<split> arrays (e.g. cifar10_subset.npz).

Optional arrays: `class_names` (strings), `dataset` (the default dataset name).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.images.base import Catalog, Source, SourceOptions, split_order
from data_prep.images.sources.arrays import arrays_catalog, max_label
from data_prep.images.sources.registry import SOURCES
from pipeline.errors import DataError


@SOURCES.register("npz")
def detect_npz(p: Path, options: SourceOptions) -> Source | None:
    if not (p.is_file() and p.suffix == ".npz"):
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            dataset = str(z["dataset"]) if "dataset" in keys else None
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read npz ({e})") from e
    splits = split_order(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
    if not splits:
        raise DataError(f"{p}: npz has no x_<split>/y_<split> array pairs (arrays: {sorted(keys)})")
    # cifar10_subset.npz -> "cifar10": the stem up to the first underscore, unless the file names itself
    default = dataset or p.stem.split("_")[0].lower()

    def catalog(dataset: str, wanted: list[str]) -> Catalog:
        with np.load(p, allow_pickle=False) as z:
            class_names = [str(c) for c in z["class_names"]] if "class_names" in z.files else None
            arrays = {s: (z[f"x_{s}"], z[f"y_{s}"]) for s in wanted}
        num_classes = len(class_names) if class_names else max_label(arrays) + 1
        return arrays_catalog(p, arrays, class_names or [str(i) for i in range(num_classes)])

    return Source(p, "npz", default, splits, [p], catalog)
