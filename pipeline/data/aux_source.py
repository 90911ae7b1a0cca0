"""The trainer's aux images: in memory when the split fits a memory budget, streamed otherwise.

    aux = open_aux_source(shard_dir, "train", dataset, image_size=hyp.image_size, augment=hyp.augment,
                          memory_budget_mb=2048, seed=seed, start=start_update, rank=rank, world=world)
    images, labels = aux.batch(sample_id, n, seed)   # float (n, 3, S, S) normalised, int64 (n,)
    aux.num_classes, len(aux), aux.mode              # manifest's class count, split size, "memory" | "stream"
    aux.seek(start_update)                           # after loading a checkpoint (a no-op in memory)

"memory": `AuxBatches` (images.py) on every rank; the batch of a sample id is exactly reproducible
(resume replays it). "stream": `StreamingAux` (streaming.py); each rank reads its own disjoint shards;
sample ids do not pick images (see streaming.py for what resume gives). The choice compares the split's
decoded size (manifest: count x H x W x 3 bytes, at image_size when the images vary in size) with the
budget, per rank; `mode` forces one.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.data.images import AuxBatches
from pipeline.data.manifest import decoded_bytes, read_manifest, split_info
from pipeline.data.streaming import StreamingAux
from pipeline.errors import ConfigError, DataError

log = logging.getLogger("hypernas.data")
MODES = ("auto", "memory", "stream")


def open_aux_source(
    shard_dir: str | Path,
    split: str,
    dataset: str | None = None,
    *,
    image_size: int | None = None,
    augment: bool = True,
    memory_budget_mb: float = 2048,
    seed: int = 0,
    start: int = 0,
    rank: int | None = None,
    world: int | None = None,
    mode: str = "auto",
    num_workers: int = 2,
    shuffle_buffer: int = 2000,
    timm_options: dict[str, Any] | None = None,
) -> AuxBatches | StreamingAux:
    """An object with .batch(sample_id, n, seed) -> (images, labels), .num_classes, len() and .mode.

    `image_size`: the side of the images a batch returns (in memory: resized per batch, None keeps the
    stored size; streaming: timm's crop size, default 224). `start`: the update the run starts or
    resumes from, the same on every rank (seeds the stream; unused in memory). `rank`/`world`: default
    from RANK/WORLD_SIZE or torch.distributed. `num_workers`, `shuffle_buffer`, `timm_options`: streaming only.
    """
    if mode not in MODES:
        raise ConfigError(f"aux source mode {mode!r}, expected one of {MODES}")
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir, dataset)
    split_info(shard_dir, manifest, split)
    varying = manifest["image_shape"] is None
    need = decoded_bytes(manifest, split, image_size if image_size is not None else (224 if varying else None))
    budget = memory_budget_mb * 2**20
    use_memory = mode == "memory" or (mode == "auto" and need <= budget)
    log.info("aux images %s/%s: %s (decoded %.0f MB, budget %.0f MB)", manifest["dataset"], split,
             "in memory" if use_memory else "streamed", need / 2**20, memory_budget_mb)
    if use_memory:
        if varying and image_size is None:
            raise DataError(f"{shard_dir}: {manifest['dataset']} images vary in size: set an image size to load "
                            "them in memory")
        if varying:
            # resized + centre-cropped once while loading; the per-batch crop/flip then works on equal sizes
            return AuxBatches.from_shards(shard_dir, split, dataset, augment=augment, image_size=image_size)
        return AuxBatches.from_shards(shard_dir, split, dataset, augment=augment, resize=image_size)
    return StreamingAux(shard_dir, split, dataset, image_size=image_size or 224, augment=augment, seed=seed,
                        start=start, rank=rank, world=world, num_workers=num_workers,
                        shuffle_buffer=shuffle_buffer, timm_options=timm_options)
