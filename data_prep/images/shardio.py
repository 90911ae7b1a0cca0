"""Worker side of sharding: write one shard (or check one) from a picklable task.

A shard is written to a hidden temp file in the staging folder, fsynced, then renamed to its name, and
only then is its sidecar `<name>.json` (count, size, sha256, skipped samples, plan id) written: a shard
with a sidecar is complete, whatever happened to the process afterwards. Members are plain USTAR with
fixed metadata (mtime 0, uid 0, no user names), so the same plan gives byte-identical shards.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from data_prep.images.base import Payload
from data_prep.images.encode import CorruptImage, CorruptImageError, prepare_sample
from pipeline.utils.io import atomic_write_json, file_sha256


@dataclass
class ShardTask:
    name: str
    split: str
    staging: str
    plan_id: str
    keys: list[int]            # source index of each sample: its key is {split}_{index:07d}
    labels: list[int]
    names: list[str]           # where each sample comes from (errors, `skipped`)
    payload: Payload
    resize: int | None = None
    jpeg_quality: int = 90
    skip_corrupt: bool = False


class _HashingWriter:
    """The file object tarfile writes to: forwards bytes, hashes and counts them (no second read pass)."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # defaults: mtime 0, uid/gid 0, empty user names
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def sidecar(staging: Path, name: str) -> Path:
    return staging / f"{name}.json"


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Write the task's shard into its staging folder; return its entry (also saved as the sidecar)."""
    staging = Path(task.staging)
    tmp = staging / f".{task.name}.{os.getpid()}.tmp"
    skipped: list[dict[str, str]] = []
    count = 0
    try:
        with open(tmp, "wb") as fh:
            sink = _HashingWriter(fh)
            with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tar, \
                    task.payload.open() as get:
                for j, (index, label, name) in enumerate(zip(task.keys, task.labels, task.names)):
                    try:
                        ext, data = prepare_sample(get(j), task.resize, task.jpeg_quality)
                    except (CorruptImage, OSError) as e:
                        reason = str(e) if isinstance(e, CorruptImage) else f"cannot read ({type(e).__name__}: {e})"
                        if not task.skip_corrupt:
                            raise CorruptImageError(f"{name}: corrupt image ({reason}); fix or remove the file, "
                                                    "or pass --skip-corrupt to leave such images out") from None
                        skipped.append({"path": name, "error": reason, "shard": task.name})
                        continue
                    # no dots in keys: webdataset splits the sample key from the field at the first dot
                    key = f"{task.split}_{index:07d}"
                    _add(tar, f"{key}.cls", str(label).encode("ascii"))
                    _add(tar, f"{key}.{ext}", data)
                    count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, staging / task.name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    entry = {"name": task.name, "count": count, "size": sink.size, "sha256": sink.sha.hexdigest(),
             "skipped": skipped, "plan_id": task.plan_id}
    atomic_write_json(sidecar(staging, task.name), entry)
    return entry


def shard_intact(args: tuple[str, int, str]) -> bool:
    """Is the file at `path` exactly `size` bytes with this sha256? (resume: only verified shards are kept)"""
    path, size, sha = args
    try:
        return os.stat(path).st_size == size and file_sha256(path) == sha
    except OSError:
        return False


def worker_init() -> None:
    # Ctrl-C goes to the whole process group: the parent alone handles it (it cancels the queued shards and
    # waits for the ones being written), so a worker never dies halfway through a shard or a result.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
