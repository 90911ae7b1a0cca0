"""Image sets -> WebDataset shards + `{dataset}-manifest.json`: idempotent, resumable, parallel, atomic.

    prepare_images(source, out_dir, dataset=None, shard_size=1000, ..., workers=1, resize=None, seed=0)

1. Up to date? The manifest in `out_dir` records the source fingerprint and the settings; when both match
   and the shards are present (sizes; sha256 with `verify`), nothing is done.
2. Plan (plan.py): seeded shuffle of each split, equal-count shards. The plan id hashes everything the
   shard bytes depend on (source fingerprint, settings); the number of workers is not part of it.
3. Write: shards go to `out_dir/.{dataset}.staging/` (temp file -> rename -> sidecar, shardio.py), in
   `workers` processes. A re-run with the same plan keeps every shard whose sidecar and sha256 check out
   (after a crash, kill -9 or Ctrl-C), as well as intact shards of an older manifest with the same plan,
   and writes the rest.
4. Install: drop the old manifest (readers then see "no manifest", never one pointing at the wrong
   shards), move the new shards in, delete shards only the old manifest listed, write the manifest,
   remove the staging folder.

A corrupt image stops the run, naming the file, and removes the staging folder (no shard is left
behind), unless `skip_corrupt`: then it is left out, listed in the manifest (`skipped`) and logged.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from data_prep.images.base import Catalog, Source, split_order
from data_prep.images.encode import CorruptImageError, short_side_size
from data_prep.images.plan import ShardSize, parse_shard_size, sample_order, shard_counts
from data_prep.images.shardio import ShardTask, shard_intact, sidecar, worker_init, write_shard
from data_prep.images.sources import detect_source
from pipeline.errors import ConfigError, DataError
from pipeline.utils.io import atomic_write_json

log = logging.getLogger("data_prep.images")

FORMAT_VERSION = 2
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9]+$")
# Sources bigger than this are fingerprinted by (name, size, mtime) instead of by content.
_HASH_CONTENT_LIMIT = 4 << 30
_WARN_LISTED = 20  # skipped files named one by one in the log; the manifest lists them all


def manifest_path(out_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(out_dir) / f"{dataset}-manifest.json"


def fingerprint(source: Source) -> str:
    """sha256 over the source files' content, or over (name, size, mtime) for big sources."""
    h = hashlib.sha256()
    stats = [(f, f.stat()) for f in sorted(source.files)]
    hash_content = source.hash_content and sum(st.st_size for _, st in stats) <= _HASH_CONTENT_LIMIT
    h.update(b"content" if hash_content else b"stat")
    for f, st in stats:
        rel = f.relative_to(source.path).as_posix() if f.is_relative_to(source.path) and f != source.path else f.name
        h.update(f"\0{rel}\0{st.st_size}\0".encode())
        if hash_content:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def prepare_images(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset: str | None = None,
    shard_size: int | str = 1000,
    min_shards: int = 4,
    splits: Sequence[str] | None = None,
    verify: bool = False,
    *,
    workers: int = 1,
    resize: int | None = None,
    jpeg_quality: int = 90,
    seed: int = 0,
    shuffle: bool = True,
    skip_corrupt: bool = False,
    labels: str | os.PathLike | None = None,
    kind: str | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Write the image source as WebDataset shards plus manifest; return the manifest.

    `shard_size`: samples per shard (int / "1000") or bytes ("256MB"). `resize`: shorter side of
    re-encoded JPEGs (None: bytes kept). `seed`/`shuffle`: the order of samples across shards.
    `labels`: label file of flat ImageNet val images. `kind`: source format (default: detected).
    `progress`: tqdm bar (None: when stderr is a terminal). The returned dict is the manifest plus
    `"skipped": bool` (up to date, nothing done; not written to the file).
    """
    size = parse_shard_size(shard_size)
    if min_shards < 1 or workers < 1:
        raise ConfigError(f"min_shards and workers must be >= 1 (got {min_shards}, {workers})")
    if resize is not None and resize < 8:
        raise ConfigError(f"resize must be >= 8 pixels (got {resize})")
    if not 1 <= jpeg_quality <= 100:
        raise ConfigError(f"jpeg_quality must be in [1, 100] (got {jpeg_quality})")
    src = detect_source(source, kind=kind, labels=labels)
    dataset = dataset or src.default_dataset
    if not _DATASET_NAME.match(dataset):
        raise ConfigError(f"dataset name {dataset!r} may only contain letters, digits, '_' and '-'")
    wanted = split_order(splits) if splits else list(src.split_names)  # order-insensitive settings
    unknown = [s for s in wanted if s not in src.split_names]
    if unknown:
        raise DataError(f"{src.path}: no split(s) {unknown}; the source has {src.split_names}")
    bad = [s for s in wanted if not _SPLIT_NAME.match(s)]
    if bad:
        raise ConfigError(f"split names {bad} may only contain letters and digits (they go into keys and file names)")

    out = Path(out_dir).expanduser().resolve()
    settings = {"shard_samples": size.samples, "shard_bytes": size.bytes, "min_shards": min_shards,
                "splits": wanted, "resize": resize, "jpeg_quality": jpeg_quality if resize else None,
                "shuffle": shuffle, "seed": seed if shuffle else None, "skip_corrupt": skip_corrupt}
    header = {"format_version": FORMAT_VERSION, "dataset": dataset,
              "source": {"path": str(src.path), "kind": src.kind, "fingerprint": fingerprint(src), **src.notes},
              "settings": settings}
    with _locked(out, dataset):
        existing = _up_to_date(out, dataset, header, verify)
        if existing is not None:
            shutil.rmtree(_staging(out, dataset), ignore_errors=True)  # left by a crash after the install
            log.info("%s: shards of %s are up to date, nothing to do", out, dataset)
            return {**existing, "skipped": True}
        catalog = src.catalog(dataset, wanted)
        for split in wanted:
            if len(catalog.splits[split]) == 0:
                raise DataError(f"{src.path}: split '{split}' has no images")
        manifest = _Build(out, dataset, header, catalog, size, workers, progress).run()
    return {**manifest, "skipped": False}


def _staging(out: Path, dataset: str) -> Path:
    return out / f".{dataset}.staging"


def _plan_id(header: dict[str, Any]) -> str:
    # skip_corrupt is not part of it: a shard written without skips is the same with or without the flag
    settings = {k: v for k, v in header["settings"].items() if k != "skip_corrupt"}
    ident = {"format_version": header["format_version"], "dataset": header["dataset"],
             "fingerprint": header["source"]["fingerprint"], "settings": settings}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text())
    return None


def _up_to_date(out: Path, dataset: str, wanted: dict[str, Any], verify: bool) -> dict[str, Any] | None:
    """The existing manifest if it matches `wanted` (source fingerprint, settings) and its shards are intact."""
    manifest = _read_json(manifest_path(out, dataset))
    try:
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("dataset") != dataset:
            return None
        if manifest["source"]["fingerprint"] != wanted["source"]["fingerprint"]:
            return None
        if manifest.get("settings") != wanted["settings"]:
            return None
        for info in manifest["splits"].values():
            for shard in info["shards"]:
                f = out / shard["name"]
                if not f.is_file() or f.stat().st_size != shard["size"]:
                    return None
                if verify and not shard_intact((str(f), shard["size"], shard["sha256"])):
                    return None
    except (KeyError, TypeError, AttributeError):
        return None  # missing or unreadable manifest: rebuild
    return manifest


@contextlib.contextmanager
def _locked(out: Path, dataset: str) -> Iterator[None]:
    """Serialise concurrent preparations of the same dataset (e.g. several ranks finding shards missing)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f".{dataset}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class _ShardPlan:
    name: str
    split: str
    idx: np.ndarray  # the samples (catalog indices) of this shard, in order


class _Build:
    """One (re)build of a dataset's shards: plan, reuse what is intact, write the rest, install."""

    def __init__(self, out: Path, dataset: str, header: dict[str, Any], catalog: Catalog, size: ShardSize,
                 workers: int, progress: bool | None):
        self.out, self.dataset, self.header, self.catalog = out, dataset, header, catalog
        self.settings = header["settings"]
        self.size, self.workers, self.progress = size, workers, progress
        self.plan_id = _plan_id(header)
        self.staging = _staging(out, dataset)

    def run(self) -> dict[str, Any]:
        plans = self._plan()
        self._open_staging()
        done: dict[str, tuple[Path, dict[str, Any]]] = {}
        pool = None
        if self.workers > 1:
            # spawn, not fork: the caller may hold threads (torch, tqdm) or a CUDA context. An executor, not a
            # Pool: a worker that dies (OOM killer) fails the run (BrokenProcessPool) instead of hanging it.
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=worker_init)
        try:
            done.update(self._reusable(plans, pool))
            todo = [p for p in plans if p.name not in done]
            total = sum(len(p.idx) for p in plans)
            with _progress_bar(total, total - sum(len(p.idx) for p in todo), self.dataset, self.progress) as bar:
                tasks = (self._task(p) for p in todo)  # built lazily: each carries its samples' payload
                results = _bounded(pool, write_shard, tasks, 2 * self.workers) if pool else map(write_shard, tasks)
                for entry in results:
                    done[entry["name"]] = (self.staging / entry["name"], entry)
                    bar.update(entry["count"] + len(entry["skipped"]))
            if pool:
                pool.shutdown(wait=True)
        except CorruptImageError:
            self._abort(pool)
            shutil.rmtree(self.staging, ignore_errors=True)  # the input is bad: leave no shard behind
            raise
        except BaseException:
            self._abort(pool)  # crash / Ctrl-C: finished shards stay staged for the next run
            raise
        manifest = self._manifest(plans, done)
        self._install(manifest, done)
        return manifest

    # ---------------------------------------------------------------- plan

    def _plan(self) -> list[_ShardPlan]:
        s = self.settings
        plans = []
        for split in s["splits"]:
            items = self.catalog.splits[split]
            order = sample_order(len(items), split, s["seed"])
            start = 0
            for i, count in enumerate(shard_counts(items, order, self.size, s["min_shards"], s["resize"],
                                                   s["jpeg_quality"] or 90)):
                plans.append(_ShardPlan(f"{self.dataset}-{split}-{i:06d}.tar", split, order[start:start + count]))
                start += count
        return plans

    def _task(self, plan: _ShardPlan) -> ShardTask:
        s, items = self.settings, self.catalog.splits[plan.split]
        return ShardTask(name=plan.name, split=plan.split, staging=str(self.staging), plan_id=self.plan_id,
                         keys=plan.idx.tolist(), labels=items.labels[plan.idx].tolist(),
                         names=[items.name(int(j)) for j in plan.idx], payload=items.payload(plan.idx),
                         resize=s["resize"], jpeg_quality=s["jpeg_quality"] or 90, skip_corrupt=s["skip_corrupt"])

    # ---------------------------------------------------------------- staging and resume

    def _open_staging(self) -> None:
        plan_file = self.staging / "plan.json"
        if self.staging.exists() and (_read_json(plan_file) or {}).get("plan_id") != self.plan_id:
            log.info("%s: staged shards belong to other settings or another source, discarding", self.staging)
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        for stale in self.staging.glob(".*.tmp"):  # half-written by a killed run
            stale.unlink(missing_ok=True)
        if not plan_file.exists():
            atomic_write_json(plan_file, {"plan_id": self.plan_id, "header": self.header})

    def _reusable(self, tasks: list[_ShardPlan], pool) -> dict[str, tuple[Path, dict[str, Any]]]:
        """Shards of this plan already written (staged, or installed by an older manifest), verified by sha256."""
        old = _read_json(manifest_path(self.out, self.dataset)) or {}
        old_entries = {}
        if old.get("plan_id") == self.plan_id:
            for info in old.get("splits", {}).values():
                skipped = {}
                for sk in info.get("skipped", []):
                    skipped.setdefault(sk.get("shard"), []).append(sk)
                for sh in info.get("shards", []):
                    old_entries[sh["name"]] = {**sh, "skipped": skipped.get(sh["name"], []), "plan_id": self.plan_id}
        candidates = []
        for t in tasks:
            entry = _read_json(sidecar(self.staging, t.name)) or old_entries.get(t.name)
            if not entry or entry.get("plan_id") != self.plan_id:
                continue
            if entry.get("skipped") and not self.settings["skip_corrupt"]:
                continue  # it left corrupt samples out; without --skip-corrupt they must fail the run
            staged = self.staging / t.name
            candidates.append((t.name, staged if staged.exists() else self.out / t.name, entry))
        checks = [(str(path), e["size"], e["sha256"]) for _, path, e in candidates]
        ok = list(pool.map(shard_intact, checks, chunksize=8) if pool else map(shard_intact, checks))
        reused = {name: (path, e) for (name, path, e), good in zip(candidates, ok) if good}
        if reused:
            log.info("%s: %d of %d shards already written and verified, kept", self.dataset, len(reused), len(tasks))
        return reused

    def _abort(self, pool) -> None:
        if pool is not None:
            # queued shards are dropped; the ones being written finish (they are complete, hence kept for
            # a resume) -- workers ignore SIGINT, so Ctrl-C never leaves a pickle or a tar half done
            pool.shutdown(wait=True, cancel_futures=True)
        for stale in self.staging.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # ---------------------------------------------------------------- manifest and install

    def _manifest(self, tasks: list[_ShardPlan], done: dict[str, tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
        shape = self.catalog.image_shape
        resize = self.settings["resize"]
        if shape is not None and resize is not None and min(shape[:2]) > resize:
            w, h = short_side_size((shape[1], shape[0]), resize)
            shape = [h, w, 3]
        splits: dict[str, Any] = {}
        for t in tasks:
            _, e = done[t.name]
            info = splits.setdefault(t.split, {"count": 0, "bytes": 0, "source_count": 0, "skipped": [],
                                               "shards": []})
            info["count"] += e["count"]
            info["bytes"] += e["size"]
            info["source_count"] += len(t.idx)
            info["skipped"] += e["skipped"]
            info["shards"].append({k: e[k] for k in ("name", "count", "size", "sha256")})
        for split, info in splits.items():
            if info["count"] == 0:
                raise DataError(f"{self.header['source']['path']}: every image of split '{split}' is corrupt")
            if info["skipped"]:
                log.warning("%s: %s split: skipped %d corrupt images (listed in the manifest under 'skipped')",
                            self.dataset, split, len(info["skipped"]))
                for sk in info["skipped"][:_WARN_LISTED]:
                    log.warning("  skipped %s: %s", sk["path"], sk["error"])
            log.info("%s: %s split, %d images in %d shards (%.1f MB)", self.dataset, split, info["count"],
                     len(info["shards"]), info["bytes"] / 1e6)
        return {**self.header, "plan_id": self.plan_id, "num_classes": len(self.catalog.class_names),
                "class_names": self.catalog.class_names, "image_shape": shape, "splits": splits}

    def _install(self, manifest: dict[str, Any], done: dict[str, tuple[Path, dict[str, Any]]]) -> None:
        """Move staged shards into `out`, drop shards only the old manifest listed, write the manifest."""
        mpath = manifest_path(self.out, self.dataset)
        old_names: set[str] = set()
        with contextlib.suppress(AttributeError, KeyError, TypeError):
            old_names = {s["name"] for info in (_read_json(mpath) or {})["splits"].values() for s in info["shards"]}
        # Manifest first: while shards are being swapped, readers must not trust a manifest at all.
        mpath.unlink(missing_ok=True)
        for name, (path, _) in sorted(done.items()):
            if path.parent == self.staging:
                os.replace(path, self.out / name)
        new_names = set(done)
        prefix = f"{self.dataset}-"
        for name in sorted(old_names - new_names):
            # only delete plain file names of our own dataset (a hand-edited manifest must not delete elsewhere)
            if Path(name).name == name and name.startswith(prefix) and name.endswith(".tar"):
                (self.out / name).unlink(missing_ok=True)
        atomic_write_json(mpath, manifest)
        shutil.rmtree(self.staging, ignore_errors=True)


@contextlib.contextmanager
def _progress_bar(total: int, initial: int, desc: str, enabled: bool | None):
    from tqdm import tqdm

    # disable=None: tqdm shows the bar only on a terminal (logs stay clean under SLURM / CI)
    with tqdm(total=total, initial=initial, desc=desc, unit="img", unit_scale=True,
              disable=None if enabled is None else not enabled, mininterval=0.5, dynamic_ncols=True) as bar:
        yield bar


def _bounded(pool: ProcessPoolExecutor, fn, tasks: Iterator[Any], limit: int) -> Iterator[Any]:
    """fn(task) in the pool with at most `limit` tasks in flight (pool.map would build every task at once,
    and an array source's tasks hold its pixels); results in submission order."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.submit(fn, task))
        if len(pending) >= limit:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
