"""CIFAR-10 / CIFAR-100 python batches, as the official tarballs (and torchvision) unpack them.

  cifar-10-batches-py/   data_batch_1..5, test_batch (dicts: data (N, 3072) CHW-flattened uint8, labels),
                         batches.meta (label_names)
  cifar-100-python/      train, test (data, fine_labels, coarse_labels), meta (fine_label_names)

A torchvision download root (the folder that holds cifar-10-batches-py/) is found one level down.
Labels are the fine labels for CIFAR-100.
"""
from __future__ import annotations

from pathlib import Path

from data_prep.images.base import Catalog, Source, SourceOptions
from data_prep.images.sources.arrays import arrays_catalog, read_batches, text, unpickle
from data_prep.images.sources.registry import SOURCES
from pipeline.errors import DataError


def _root(p: Path, sub: str) -> Path:
    return p / sub if p.is_dir() and (p / sub).is_dir() else p


@SOURCES.register("cifar10")
def detect_cifar10(p: Path, options: SourceOptions) -> Source | None:
    p = _root(p, "cifar-10-batches-py")
    if not (p.is_dir() and (p / "data_batch_1").is_file() and (p / "test_batch").is_file()):
        return None
    files = {"train": [p / f"data_batch_{i}" for i in range(1, 6)], "test": [p / "test_batch"]}
    return batches_source(p, "cifar10", "cifar10", files, p / "batches.meta", "label_names", "labels")


@SOURCES.register("cifar100")
def detect_cifar100(p: Path, options: SourceOptions) -> Source | None:
    p = _root(p, "cifar-100-python")
    if not (p.is_dir() and (p / "train").is_file() and (p / "test").is_file() and (p / "meta").is_file()):
        return None
    files = {"train": [p / "train"], "test": [p / "test"]}
    return batches_source(p, "cifar100", "cifar100", files, p / "meta", "fine_label_names", "fine_labels")


def batches_source(p: Path, kind: str, default: str, files: dict[str, list[Path]], meta: Path,
                   names_key: str, label_key: str) -> Source:
    for split_files in files.values():
        for f in split_files:
            if not f.is_file():
                raise DataError(f"{f}: missing batch file of {kind} source {p}")
    all_files = [f for fs in files.values() for f in fs] + ([meta] if meta.is_file() else [])

    def catalog(dataset: str, wanted: list[str]) -> Catalog:
        arrays = {s: read_batches(files[s], label_key, side=32) for s in wanted}
        if not meta.is_file():
            raise DataError(f"{meta}: missing class-name file of {kind} source {p}")
        d = unpickle(meta)
        if names_key not in d:
            raise DataError(f"{meta}: class-name dict lacks '{names_key}' (keys: {sorted(d)})")
        return arrays_catalog(p, arrays, [text(n) for n in d[names_key]])

    return Source(p, kind, default, list(files), all_files, catalog)
