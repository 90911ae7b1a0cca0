"""The aux-image stream for sets that do not fit in memory (ImageNet-1k): webdataset + timm transforms.

    aux = StreamingAux(shard_dir, "train", image_size=224, augment=True, seed=0, start=0, rank=r, world=w)
    images, labels = aux.batch(sample_id, 128)      # float (128, 3, 224, 224) normalised, int64 (128,)

How the data is split. The stream is endless and made of *data epochs*. In data epoch e every rank and
worker draws the same seeded permutation of the split's shards (seed, start, e), keeps the first
floor(S / (W x K)) x W x K of them (W ranks, K DataLoader workers; the few left over sit out this epoch,
a different few each epoch) and takes its share: rank r the shards r, r + W, ... (what wds.split_by_node
does, with the rank given explicitly), worker k every K-th of those (wds.split_by_worker). So within a data
epoch the ranks read disjoint shards, hence disjoint samples, and all ranks and workers read the same
number of shards. Each worker shuffles its samples in a buffer seeded by (seed, start, e, rank, worker),
flushed at the end of the epoch, then decodes them and applies timm's transform (RandomResizedCrop, flip,
colour jitter at `image_size` for training; resize + centre crop for evaluation), normalised with ImageNet's
mean and std (timm's default; the in-memory AuxBatches normalises with the set's own statistics).

Sample ids and resume. `batch(sample_id, n, seed)` returns the next n images of this rank's stream: the
sample id and seed are accepted for the AuxBatches interface but do not choose the images (the in-memory
AuxBatches reproduces each sample id exactly; a stream cannot seek). The stream is reproducible for the
same (seed, start, world, workers): the same images in the same order. A run that resumes passes the
update it resumes from as `start` (or calls `seek(start)` before its first batch; the same value on every
rank): it gets a fresh stream seeded by (seed, start), with the same statistics (every rank disjoint, each data epoch a new shard permutation),
not a replay of the images the interrupted run would have seen next.

Key log (debugging, tests). With HYPERNAS_AUX_KEY_LOG=DIR every batch a rank takes appends one JSON line
{"split", "rank", "world", "node", "node_name", "keys", "epochs"} to DIR/aux-keys-<split>-rank<r>-of<w>.jsonl
(node, node_name: SLURM_NODEID, SLURMD_NODENAME, null outside SLURM): what each rank trained on, where it
ran. tests/test_cluster_multinode.py reads it to check that ranks on two SLURM nodes see disjoint data.
"""
from __future__ import annotations

import functools
import itertools
import json
import os
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from pipeline.data.images import _check_counts, _mix, _shard_error, decode_sample
from pipeline.data.manifest import read_manifest, split_info
from pipeline.errors import ConfigError, DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KEY_LOG_ENV = "HYPERNAS_AUX_KEY_LOG"  # a directory: log every batch's sample keys there (module docstring)


class EpochShards(IterableDataset):
    """Raw webdataset samples of this rank and DataLoader worker, data epoch after data epoch (endless)."""

    def __init__(self, urls: list[str], counts: list[int], seed: int, start: int, rank: int, world: int,
                 shuffle_buffer: int):
        self.urls, self.expected = list(urls), dict(zip(urls, counts))
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self.shuffle_buffer = shuffle_buffer

    def shards(self, epoch: int, worker: int, num_workers: int) -> list[str]:
        """The shards that (this rank, `worker` of `num_workers`) reads in data epoch `epoch`."""
        perm = list(self.urls)
        random.Random(_mix(self.seed, self.start, epoch)).shuffle(perm)  # the same on every rank and worker
        used = len(perm) // (self.world * num_workers) * (self.world * num_workers)
        mine = perm[:used][self.rank::self.world]       # split by node
        return mine[worker::num_workers]                 # split by worker

    def __iter__(self) -> Iterator[dict[str, Any]]:
        _, _, worker, num_workers = wds.utils.pytorch_worker_info()  # the DataLoader worker we run in
        for epoch in itertools.count():
            urls = self.shards(epoch, worker, num_workers)
            samples = wds.tarfile_samples(iter([{"url": u} for u in urls]), handler=_shard_error)
            samples = _check_counts(samples, self.expected)
            if self.shuffle_buffer > 1:
                rng = random.Random(_mix(self.seed, self.start, epoch, self.rank, worker))
                samples = wds.filters.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(samples)
            for sample in samples:
                sample["__epoch__"] = epoch
                yield sample


def build_transform(image_size: int, augment: bool, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    **timm_options: Any) -> Callable:
    """timm's ImageNet transform (timm.data.create_transform) at `image_size`: PIL image -> float CHW."""
    from timm.data import create_transform  # timm's import is slow; only the streaming path needs it

    return create_transform(input_size=image_size, is_training=augment, mean=mean, std=std, **timm_options)


def _decode_transform(sample: dict[str, Any], transform: Callable) -> tuple[torch.Tensor, int, str, int]:
    key, x, label = decode_sample(sample, transform)
    return x, label, key, sample["__epoch__"]


def _collate(samples: list[tuple[torch.Tensor, int, str, int]]):
    return (torch.stack([s[0] for s in samples]), torch.tensor([s[1] for s in samples], dtype=torch.int64),
            [s[2] for s in samples], [s[3] for s in samples])


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # K workers x all cores each would oversubscribe the node


class StreamingAux:
    """Aux batches from a webdataset stream of this rank's shards (see the module docstring)."""

    mode = "stream"

    def __init__(self, shard_dir: str | Path, split: str, dataset: str | None = None, *, image_size: int = 224,
                 augment: bool = True, seed: int = 0, start: int = 0, rank: int | None = None,
                 world: int | None = None, num_workers: int = 2, shuffle_buffer: int = 2000, chunk: int = 32,
                 timm_options: dict[str, Any] | None = None):
        shard_dir = Path(shard_dir)
        manifest = read_manifest(shard_dir, dataset)
        info = split_info(shard_dir, manifest, split)
        if rank is None or world is None:
            rank, world, _, _ = wds.utils.pytorch_worker_info()  # RANK/WORLD_SIZE, else torch.distributed
        if not 0 <= rank < world:
            raise ConfigError(f"rank {rank} is outside [0, world={world})")
        if num_workers < 0 or chunk < 1:
            raise ConfigError(f"num_workers must be >= 0 and chunk >= 1 (got {num_workers}, {chunk})")
        shards = [s for s in info["shards"] if s["count"] > 0]  # a shard whose images were all skipped adds nothing
        urls = [str(shard_dir / s["name"]) for s in shards]
        readers = world * max(1, num_workers)
        if len(urls) < readers:
            raise DataError(f"{shard_dir}: split '{split}' has {len(urls)} shards, fewer than {world} ranks x "
                            f"{max(1, num_workers)} loader workers = {readers}: re-shard with "
                            f"`python -m data_prep.images ... --min-shards {readers}` (or fewer loader workers)")
        self.num_classes = int(manifest["num_classes"])
        self.count = int(info["count"])
        self.rank, self.world, self.image_size = rank, world, image_size
        self.last_keys: list[str] = []    # sample keys of the last batch (debugging, tests)
        self.last_epochs: list[int] = []  # their data epochs
        self.split = split
        key_log = os.environ.get(KEY_LOG_ENV)
        self._key_log = Path(key_log) / f"aux-keys-{split}-rank{rank}-of{world}.jsonl" if key_log else None
        self._stream = EpochShards(urls, [s["count"] for s in shards], seed, start, rank, world,
                                   shuffle_buffer)
        transform = build_transform(image_size, augment, **(timm_options or {}))
        pipeline = wds.DataPipeline(
            self._stream,
            wds.map(functools.partial(_decode_transform, transform=transform)),
            wds.batched(chunk, collation_fn=_collate, partial=False),  # the stream is endless: no partial batch
        )
        self._loader = wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers,
                                     worker_init_fn=_one_thread if num_workers else None)
        self._it: Iterator | None = None  # started on the first batch: constructing is cheap
        self._pending: list[tuple[torch.Tensor, torch.Tensor, list[str], list[int]]] = []

    def __len__(self) -> int:
        return self.count

    def batch(self, sample_id: int, n: int, generator_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next n (normalised float images (n, 3, S, S), int64 labels) of this rank's stream."""
        if self._it is None:
            self._it = iter(self._loader)
        have = sum(len(p[1]) for p in self._pending)
        while have < n:
            part = next(self._it)
            self._pending.append(part)
            have += len(part[1])
        x = torch.cat([p[0] for p in self._pending])
        y = torch.cat([p[1] for p in self._pending])
        keys = [k for p in self._pending for k in p[2]]
        epochs = [e for p in self._pending for e in p[3]]
        self._pending = [(x[n:].clone(), y[n:].clone(), keys[n:], epochs[n:])] if have > n else []
        self.last_keys, self.last_epochs = keys[:n], epochs[:n]
        if self._key_log is not None:
            self._log_keys()
        return x[:n], y[:n]

    def _log_keys(self) -> None:
        line = {"split": self.split, "rank": self.rank, "world": self.world,
                "node": os.environ.get("SLURM_NODEID"), "node_name": os.environ.get("SLURMD_NODENAME"),
                "keys": self.last_keys, "epochs": self.last_epochs}
        self._key_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self._key_log, "a") as f:  # a line per batch, appended: readable while the run goes on
            f.write(json.dumps(line) + "\n")

    def seek(self, start: int) -> None:
        """Re-seed the stream for a run that (re)starts at update `start` (the same on every rank).

        Call it before the first batch (after loading a checkpoint); a started stream is restarted.
        """
        self.close()
        self._stream.start = int(start)

    def close(self) -> None:
        """Stop the loader workers (they also stop when the object is garbage-collected)."""
        self._it = None
        self._pending = []
