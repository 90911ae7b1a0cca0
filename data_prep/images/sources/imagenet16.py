"""ImageNet16-120: the down-sampled ImageNet 16x16 batches (Chrabaszcz et al. 2017), as NAS-Bench-201 uses them.

  train_data_batch_1..10, val_data: pickled dicts with data (N, 768) CHW-flattened uint8 and labels 1..1000

The dataset name `ImageNet16-<k>` keeps the images of the original labels 1..k and shifts them to 0..k-1
(NAS-Bench-201's ImageNet16-120 is k = 120); another name keeps all 1000 classes.
"""
from __future__ import annotations

import re
from pathlib import Path


from data_prep.images.base import Catalog, Source, SourceOptions
from data_prep.images.sources.arrays import arrays_catalog, read_batches
from data_prep.images.sources.registry import SOURCES
from pipeline.errors import DataError


@SOURCES.register("imagenet16")
def detect_imagenet16(p: Path, options: SourceOptions) -> Source | None:
    if not (p.is_dir() and ((p / "train_data_batch_1").is_file() or (p / "val_data").is_file())):
        return None
    train = sorted(p.glob("train_data_batch_*"), key=lambda f: int(f.name.rsplit("_", 1)[-1])
                   if f.name.rsplit("_", 1)[-1].isdigit() else 10**9)
    bad = [f.name for f in train if not f.name.rsplit("_", 1)[-1].isdigit()]
    if bad:
        raise DataError(f"{p / bad[0]}: not an ImageNet16 batch name (expected train_data_batch_<n>)")
    files = {k: v for k, v in {"train": train, "val": [p / "val_data"]}.items() if v and all(f.is_file() for f in v)}

    def catalog(dataset: str, wanted: list[str]) -> Catalog:
        m = re.search(r"-(\d+)$", dataset)
        k = int(m.group(1)) if m else 1000
        arrays = {}
        for s in wanted:
            x, y = read_batches(files[s], "labels", side=16)
            if len(y) and (y.min() < 1 or y.max() > 1000):
                raise DataError(f"{files[s][0].parent}: {s} labels in [{y.min()}, {y.max()}], expected the "
                                "1-based ImageNet ids 1..1000")
            keep = y <= k
            arrays[s] = (x[keep], y[keep] - 1)
        return arrays_catalog(p, arrays, [str(i) for i in range(1, k + 1)])

    return Source(p, "imagenet16", "ImageNet16-120", list(files), [f for fs in files.values() for f in fs], catalog)
