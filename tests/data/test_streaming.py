"""pipeline.data.streaming / aux_source: the aux stream (disjoint per rank, per data epoch) and the memory/stream choice."""
from __future__ import annotations

import io
import json
import multiprocessing
import socket
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from data_prep.images import prepare_images
from pipeline.data.aux_source import open_aux_source
from pipeline.data.images import AuxBatches
from pipeline.data.streaming import EpochShards, StreamingAux
from pipeline.errors import DataError

N_CLASSES, PER_CLASS = 4, 60  # 240 images in 12 shards of 20


def _jpeg(rng: np.random.Generator, w: int, h: int) -> bytes:
    img = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """ImageFolder of variable-size JPEGs -> 12 train shards of 20 (+ a val split)."""
    root = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    for split, n in (("train", PER_CLASS), ("val", 3)):
        for c in range(N_CLASSES):
            d = root / "src" / split / f"n{c:08d}"
            d.mkdir(parents=True)
            for i in range(n):
                (d / f"{i}.JPEG").write_bytes(_jpeg(rng, 40 + (i % 5) * 6, 32 + (i % 3) * 4))
    prepare_images(root / "src", root / "shards", dataset="toy", shard_size=20)
    return root / "shards"


def _epochs(aux: StreamingAux, n_batches: int, n: int) -> dict[int, list[str]]:
    seen = defaultdict(list)
    for step in range(n_batches):
        aux.batch(step, n)
        for key, epoch in zip(aux.last_keys, aux.last_epochs):
            seen[epoch].append(key)
    return seen


def test_batches_have_the_promised_shape(shards):
    aux = StreamingAux(shards, "train", image_size=24, augment=True, num_workers=0, rank=0, world=1)
    x, y = aux.batch(0, 50)  # more than one chunk: assembled across loader batches
    assert x.shape == (50, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert aux.num_classes == N_CLASSES and len(aux) == N_CLASSES * PER_CLASS and aux.mode == "stream"
    assert 0 <= int(y.min()) and int(y.max()) < N_CLASSES
    assert abs(float(x.mean())) < 1.5  # normalised (ImageNet mean/std)
    x2, _ = aux.batch(1, 7)
    assert x2.shape == (7, 3, 24, 24)
    ev = StreamingAux(shards, "train", image_size=24, augment=False, num_workers=0, rank=0, world=1)
    assert ev.batch(0, 5)[0].shape == (5, 3, 24, 24)  # resize + centre crop


def test_one_data_epoch_reads_every_sample_once(shards):
    aux = StreamingAux(shards, "train", image_size=16, num_workers=2, rank=0, world=1, seed=4)
    seen = _epochs(aux, 20, 32)
    for e in (0, 1):
        assert len(seen[e]) == len(set(seen[e])) == 240
    aux.close()


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_from_env_read_disjoint_shards(shards, monkeypatch, workers):
    """Ranks simulated with RANK/WORLD_SIZE (what torchrun sets), one after the other in this process."""
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        aux = open_aux_source(shards, "train", "toy", image_size=16, mode="stream", num_workers=workers, seed=1)
        assert (aux.rank, aux.world) == (rank, 2)
        per_rank.append(_epochs(aux, 9, 32))  # 288 images: the first two data epochs of 120
        aux.close()
    for e in (0, 1):
        a, b = set(per_rank[0][e]), set(per_rank[1][e])
        assert len(a) == len(b) == 120 and not a & b and len(a | b) == 240
    assert set(per_rank[0][0]) != set(per_rank[0][1])  # every data epoch deals the shards anew


def test_shard_assignment_per_epoch():
    urls = [f"s{i}" for i in range(10)]
    plans = {(r, w): EpochShards(urls, [1] * 10, seed=0, start=0, rank=r, world=2, shuffle_buffer=0).shards(0, w, 2)
             for r in (0, 1) for w in (0, 1)}
    used = [u for v in plans.values() for u in v]
    assert len(used) == len(set(used)) == 8  # 10 shards, 2 x 2 readers: 8 used this epoch, 2 each
    assert all(len(v) == 2 for v in plans.values())
    again = EpochShards(urls, [1] * 10, seed=0, start=0, rank=0, world=2, shuffle_buffer=0)
    assert again.shards(0, 0, 2) == plans[(0, 0)] and again.shards(1, 0, 2) != plans[(0, 0)]
    resumed = EpochShards(urls, [1] * 10, seed=0, start=57, rank=0, world=2, shuffle_buffer=0)
    assert resumed.shards(0, 0, 2) != plans[(0, 0)]  # a resumed run starts a fresh, seeded stream


def test_stream_is_reproducible_for_a_seed_and_start(shards):
    def keys(**kw):
        aux = StreamingAux(shards, "train", image_size=16, num_workers=2, rank=0, world=1, **kw)
        aux.batch(0, 64)
        out = list(aux.last_keys)
        aux.close()
        return out

    a = keys(seed=3, start=0)
    assert a == keys(seed=3, start=0)
    assert a != keys(seed=3, start=100) and a != keys(seed=4, start=0)
    # seek (what a resumed trainer calls after loading its checkpoint) = constructing with that start
    aux = StreamingAux(shards, "train", image_size=16, num_workers=2, rank=0, world=1, seed=3)
    aux.batch(0, 8)
    aux.seek(100)
    aux.batch(0, 64)
    assert aux.last_keys == keys(seed=3, start=100)
    aux.close()


def test_too_few_shards_for_ranks_times_workers(shards):
    with pytest.raises(DataError, match="12 shards, fewer than 4 ranks x 4 loader workers.*--min-shards 16"):
        StreamingAux(shards, "train", image_size=16, num_workers=4, rank=0, world=4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank: int, world: int, port: int, shards: str, out: str) -> None:
    # a rank started by torchrun is a fresh process whose DataLoader forks its workers; one started by
    # mp.spawn would spawn them (seconds of imports each), so restore the torchrun situation
    multiprocessing.set_start_method("fork", force=True)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        # rank and world from torch.distributed, as under torchrun; 2 loader workers per rank
        aux = open_aux_source(shards, "train", "toy", image_size=16, mode="stream", num_workers=2, seed=7)
        seen = _epochs(aux, 9, 32)
        gathered = [None] * world
        dist.all_gather_object(gathered, {e: seen[e] for e in (0, 1)})
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
        aux.close()
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_see_disjoint_data_per_epoch(shards, tmp_path):
    out = tmp_path / "seen.json"
    mp.start_processes(_gloo_rank, args=(2, _free_port(), str(shards), str(out)), nprocs=2, start_method="spawn")
    seen = json.loads(out.read_text())
    for e in ("0", "1"):
        a, b = set(seen[0][e]), set(seen[1][e])
        assert len(a) == len(seen[0][e]) == 120 and len(b) == 120
        assert not a & b and len(a | b) == 240


def test_open_aux_source_chooses_by_memory_budget(shards, tmp_path):
    # 240 images at 24 x 24 x 3 = 0.4 MB decoded
    small = open_aux_source(shards, "train", "toy", image_size=24, memory_budget_mb=1, augment=False)
    assert isinstance(small, AuxBatches) and small.mode == "memory" and small.num_classes == N_CLASSES
    x, y = small.batch(3, 10, 0)
    assert x.shape == (10, 3, 24, 24) and torch.equal(x, small.batch(3, 10, 0)[0])  # exact per sample id
    big = open_aux_source(shards, "train", "toy", image_size=24, memory_budget_mb=0.1, num_workers=0, rank=0, world=1)
    assert isinstance(big, StreamingAux) and big.batch(0, 4)[0].shape == (4, 3, 24, 24)
    forced = open_aux_source(shards, "val", "toy", image_size=24, mode="memory", memory_budget_mb=0)
    assert len(forced) == 12
    with pytest.raises(DataError, match="vary in size"):
        open_aux_source(shards, "train", "toy", image_size=None, mode="memory")

    # a fixed-shape set (CIFAR-like npz) keeps its stored size in memory and is resized per batch
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tiny.npz", x_train=rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 40), class_names=np.array([f"c{i}" for i in range(10)]))
    prepare_images(tmp_path / "tiny.npz", tmp_path / "tiny")
    aux = open_aux_source(tmp_path / "tiny", "train", image_size=16)
    assert aux.mode == "memory" and aux.num_classes == 10 and aux.batch(0, 8, 0)[0].shape == (8, 3, 16, 16)
