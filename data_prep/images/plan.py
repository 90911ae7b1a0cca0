"""Which samples go into which shard: a seeded shuffle of the whole split, then equal-count shards.

The plan depends only on the source listing and the settings, never on the number of workers, so any
`--workers` writes byte-identical shards and manifests. Shard counts are equal (+-1): under DDP a rank
or worker with fewer samples than the others hangs the job. A byte target (`--shard-size 256MB`) sets
the number of shards from the split's (estimated) size; samples are still split evenly between them.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

from data_prep.images.base import SplitItems
from data_prep.images.encode import CorruptImage, prepare_sample
from pipeline.errors import ConfigError

# Tar bytes per sample besides the image: two 512-byte headers, the .cls block, half a block of padding.
TAR_OVERHEAD = 3 * 512 + 256
_ESTIMATE_SAMPLES = 32
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?(b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ShardSize:
    samples: int | None = None   # at most this many samples per shard
    bytes: int | None = None     # about this many bytes per shard


def parse_shard_size(value: int | str) -> ShardSize:
    """1000 / "1000" -> samples; "256MB", "256M", "1GiB", "500kB" -> bytes (kB/MB/GB decimal, KiB/MiB/GiB binary)."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        n = int(value)
        if n < 1:
            raise ConfigError(f"shard size must be >= 1 sample (got {value!r})")
        return ShardSize(samples=n)
    m = _SIZE.match(str(value))
    if not m or not (m.group(2) or m.group(3)):
        raise ConfigError(f"shard size {value!r}: expected a sample count (1000) or bytes (256MB, 1GiB, 500kB)")
    n = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if n < 4096:
        raise ConfigError(f"shard size {value!r} is below 4 kB: not one image per shard")
    return ShardSize(bytes=n)


def plan_shards(n: int, shard_size: int, min_shards: int) -> list[int]:
    """Samples per shard: ceil(n / shard_size) shards but at least min(min_shards, n), sizes as equal as possible."""
    if n <= 0:
        return []
    return balanced(n, max(math.ceil(n / shard_size), min(min_shards, n)))


def balanced(n: int, k: int) -> list[int]:
    base, extra = divmod(n, k)
    return [base + 1 if i < extra else base for i in range(k)]


def sample_order(n: int, split: str, seed: int | None) -> np.ndarray:
    """A permutation of the split's samples (PCG64: the same on every machine); None: source order."""
    if seed is None:
        return np.arange(n)
    return np.random.default_rng([seed, zlib.crc32(split.encode())]).permutation(n)


def shard_counts(items: SplitItems, order: np.ndarray, size: ShardSize, min_shards: int,
                 resize: int | None, jpeg_quality: int) -> list[int]:
    n = len(order)
    if size.samples is not None:
        return plan_shards(n, size.samples, min_shards)
    if n == 0:
        return []
    k = max(math.ceil(estimate_bytes(items, order, resize, jpeg_quality) / size.bytes), min(min_shards, n))
    return balanced(n, min(k, n))


def estimate_bytes(items: SplitItems, order: np.ndarray, resize: int | None, jpeg_quality: int) -> float:
    """Bytes of the split's shards: exact from the listed sizes when bytes are kept, else from encoding the
    first samples of the plan (deterministic: the same estimate on every run)."""
    n = len(order)
    if items.sizes is not None and resize is None:
        return float(items.sizes.sum()) + n * TAR_OVERHEAD
    probe = order[:_ESTIMATE_SAMPLES]
    out, src = [], []
    with items.payload(probe).open() as get:
        for j, i in enumerate(probe):
            raw = get(j)
            try:
                out.append(len(prepare_sample(raw, resize, jpeg_quality)[1]))
            except CorruptImage:
                continue
            src.append(items.sizes[i] if items.sizes is not None else 0)
    if not out:
        return float(n * TAR_OVERHEAD)
    if items.sizes is not None and sum(src):  # resized: scale the listed total by the probe's ratio
        return float(items.sizes.sum()) * sum(out) / sum(src) + n * TAR_OVERHEAD
    return n * (float(np.mean(out)) + TAR_OVERHEAD)
