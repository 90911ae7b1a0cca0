"""What an image source hands the writer: a cheap listing of its samples, and how a worker reads them.

A source never decodes pixels to list itself: `Source.catalog()` returns per split the labels, a name per
sample (for errors and the manifest's `skipped` list) and, where the container knows them, the encoded
sizes. `SplitItems.payload(indices)` describes a subset of samples as a small picklable object that a
worker process opens and reads (file paths, byte ranges in a tar, or pixel arrays), so shards can be
written in parallel without shipping the whole set to every worker.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence, Union

import numpy as np

from pipeline.errors import DataError

# A raw sample: encoded file bytes (JPEG / PNG as stored by the source) or an (H, W, 3) uint8 array.
Raw = Union[bytes, np.ndarray]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


class FilePayload:
    """Samples that are whole files."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    @contextlib.contextmanager
    def open(self) -> Iterator[Callable[[int], Raw]]:
        yield lambda i: Path(self.paths[i]).read_bytes()


class TarRangePayload:
    """Samples that are byte ranges of one (possibly nested) tar file: read with pread, no extraction."""

    def __init__(self, tar: str, ranges: Sequence[tuple[int, int]]):
        self.tar, self.ranges = tar, list(ranges)

    def __len__(self) -> int:
        return len(self.ranges)

    @contextlib.contextmanager
    def open(self) -> Iterator[Callable[[int], Raw]]:
        fd = os.open(self.tar, os.O_RDONLY)
        try:
            def read(i: int) -> bytes:
                offset, size = self.ranges[i]
                data = os.pread(fd, size, offset)
                if len(data) != size:  # the index checked the bounds; the file changed since
                    raise DataError(f"{self.tar}: truncated at byte {offset + len(data)} (expected {size} bytes "
                                    f"at offset {offset}); was the file modified while sharding?")
                return data
            yield read
        finally:
            os.close(fd)


class ArrayPayload:
    """Samples that are decoded pixels (npz, CIFAR, ImageNet16): the worker encodes them."""

    def __init__(self, images: np.ndarray):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    @contextlib.contextmanager
    def open(self) -> Iterator[Callable[[int], Raw]]:
        yield lambda i: self.images[i]


Payload = Union[FilePayload, TarRangePayload, ArrayPayload]


@dataclass
class SplitItems:
    """The samples of one split, in the source's canonical order (their index is the sample key)."""

    labels: np.ndarray                              # int64, one per sample
    name: Callable[[int], str]                      # where sample i comes from (path, tar member, array row)
    payload: Callable[[np.ndarray], Payload]        # a worker-side reader for these sample indices
    sizes: np.ndarray | None = None                 # encoded bytes per sample, when known without reading

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Catalog:
    class_names: list[str]
    image_shape: list[int] | None                   # [H, W, C] when every image has it, else None
    splits: dict[str, SplitItems]


@dataclass
class SourceOptions:
    labels: Path | None = None                      # label file for flat ImageNet val images


@dataclass
class Source:
    path: Path
    kind: str
    default_dataset: str
    split_names: list[str]
    files: list[Path]                               # what the fingerprint covers
    catalog: Callable[[str, list[str]], Catalog]    # (dataset name, wanted splits) -> listing
    hash_content: bool = True
    notes: dict[str, str] = field(default_factory=dict)  # recorded in the manifest (e.g. the label format)


def split_order(names) -> list[str]:
    """train, val, test first (the order people read manifests in), then the rest alphabetically."""
    rank = {"train": 0, "val": 1, "valid": 1, "test": 2}
    return sorted(set(names), key=lambda s: (rank.get(s, 3), s))


def is_image_name(name: str) -> bool:
    return not Path(name).name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
