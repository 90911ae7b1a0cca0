"""data_prep.images sharding: shard sizes, seeded shuffle, resize, parallel = serial, resume after a crash or kill -9."""
from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import images as prep
from data_prep.images import shardio, writer
from data_prep.images.plan import ShardSize, parse_shard_size
from pipeline.data.images import load_split
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _files(out: Path) -> dict[str, bytes]:
    """Every visible file's bytes (shards and manifest), for byte-identity checks."""
    return {f.name: f.read_bytes() for f in sorted(out.iterdir()) if f.is_file() and not f.name.startswith(".")}


@pytest.fixture
def folder(tmp_path, formats) -> Path:
    """A 2-split ImageFolder of 60 JPEGs of varying sizes (3 classes)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "src"
    formats.image_folder(root, {
        "train": {f"c{k}": [formats.jpeg(rng, 30 + 7 * i % 50, 24 + 5 * i % 40) for i in range(16)] for k in range(3)},
        "val": {f"c{k}": [formats.jpeg(rng) for _ in range(4)] for k in range(3)},
    })
    return root


def test_parse_shard_size():
    assert parse_shard_size(1000) == parse_shard_size("1000") == ShardSize(samples=1000)
    assert parse_shard_size("256MB") == parse_shard_size("256M") == ShardSize(bytes=256_000_000)
    assert parse_shard_size("1GiB") == ShardSize(bytes=2**30)
    assert parse_shard_size("500kB") == ShardSize(bytes=500_000)
    assert parse_shard_size("1.5 MB") == ShardSize(bytes=1_500_000)
    for bad in ("", "0", "many", "12 parsecs", "100B"):  # 100 bytes: not even one image
        with pytest.raises(ConfigError, match="shard size"):
            parse_shard_size(bad)


def test_byte_target_sets_the_shard_count(folder, tmp_path):
    sizes = [f.stat().st_size for f in (folder / "train").rglob("*.JPEG")]
    target = (sum(sizes) + 48 * 1792) // 5 + 1  # a bit more than a fifth of the split's tar bytes
    m = prep.prepare_images(folder, tmp_path / "out", shard_size=f"{target}B", min_shards=1)
    shards = m["splits"]["train"]["shards"]
    assert len(shards) == 5 and sorted({s["count"] for s in shards}) == [9, 10]  # equal counts (+-1)
    assert all(s["size"] < 1.3 * target for s in shards)
    assert m["settings"]["shard_bytes"] == target and m["settings"]["shard_samples"] is None
    assert m["splits"]["train"]["bytes"] == sum(s["size"] for s in shards)


def test_seeded_shuffle_across_the_set(folder, tmp_path):
    def keys(out: Path, shard: str) -> list[str]:
        with tarfile.open(out / shard) as t:
            return [n[:-4] for n in t.getnames() if n.endswith(".cls")]

    a = prep.prepare_images(folder, tmp_path / "a", splits=["train"], shard_size=12)
    b = prep.prepare_images(folder, tmp_path / "b", splits=["train"], shard_size=12, seed=1)
    c = prep.prepare_images(folder, tmp_path / "c", splits=["train"], shard_size=12, shuffle=False)
    first = keys(tmp_path / "a", "src-train-000000.tar")
    assert keys(tmp_path / "c", "src-train-000000.tar") == [f"train_{i:07d}" for i in range(12)]  # class 0 only
    assert first != keys(tmp_path / "b", "src-train-000000.tar")
    labels = {int(k[-7:]) // 16 for k in first}
    assert len(labels) > 1  # shuffled across classes, not class by class
    all_keys = [k for s in a["splits"]["train"]["shards"] for k in keys(tmp_path / "a", s["name"])]
    assert sorted(all_keys) == [f"train_{i:07d}" for i in range(48)]
    assert a["settings"]["seed"] == 0 and c["settings"]["seed"] is None
    # the loaded set is in key order whatever the shuffle
    assert load_split(tmp_path / "a", "train", image_size=8)[1].tolist() == \
        load_split(tmp_path / "c", "train", image_size=8)[1].tolist() == [0] * 16 + [1] * 16 + [2] * 16


def test_resize_reencodes_large_images_only(tmp_path, formats):
    rng = np.random.default_rng(1)
    root = tmp_path / "src"
    big, small, big_png = formats.jpeg(rng, 80, 60), formats.jpeg(rng, 30, 20), formats.png(rng, 90, 50)
    formats.image_folder(root, {"train": {"a": [big, small], "b": [big_png]}})
    m = prep.prepare_images(root, tmp_path / "out", resize=32, jpeg_quality=85, min_shards=1, shuffle=False)
    assert m["settings"]["resize"] == 32 and m["settings"]["jpeg_quality"] == 85
    with tarfile.open(tmp_path / "out" / "src-train-000000.tar") as t:
        members = {i.name: t.extractfile(i).read() for i in t}
    sizes = {k: Image.open(io.BytesIO(v)).size for k, v in members.items() if not k.endswith(".cls")}
    assert sizes == {"train_0000000.jpg": (43, 32), "train_0000001.jpg": (30, 20), "train_0000002.jpg": (58, 32)}
    assert members["train_0000001.jpg"] == small  # already small enough: bytes kept
    assert Image.open(io.BytesIO(members["train_0000002.jpg"])).format == "JPEG"  # the PNG re-encoded


@pytest.mark.parametrize("source", ["folder_resized", "npz"])
def test_parallel_workers_write_byte_identical_output(folder, tmp_path, source):
    if source == "npz":
        rng = np.random.default_rng(2)
        src = tmp_path / "toy.npz"
        np.savez(src, x_train=rng.integers(0, 256, (90, 8, 8, 3), dtype=np.uint8), y_train=rng.integers(0, 5, 90),
                 x_test=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), y_test=rng.integers(0, 5, 20))
        kwargs = {"shard_size": 7}
    else:
        src, kwargs = folder, {"shard_size": 5, "resize": 20}
    one = prep.prepare_images(src, tmp_path / "w1", workers=1, **kwargs)
    three = prep.prepare_images(src, tmp_path / "w3", workers=3, **kwargs)
    assert one["splits"] == three["splits"] and len(one["splits"]["train"]["shards"]) >= 9
    assert _files(tmp_path / "w1") == _files(tmp_path / "w3")  # shards and manifest, byte for byte


def _count_writes(monkeypatch, fail_after: int | None = None) -> list[str]:
    real, calls = shardio.write_shard, []  # the real one, not an earlier wrapper

    def counting(task):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("simulated crash")
        calls.append(task.name)
        return real(task)

    monkeypatch.setattr(writer, "write_shard", counting)
    return calls


def test_resume_after_a_crash_writes_only_the_missing_shards(folder, tmp_path, monkeypatch):
    clean = prep.prepare_images(folder, tmp_path / "clean", shard_size=4)
    n = sum(len(v["shards"]) for v in clean["splits"].values())
    out = tmp_path / "out"
    _count_writes(monkeypatch, fail_after=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prep.prepare_images(folder, out, shard_size=4)
    staging = out / ".src.staging"
    staged = sorted(p.name for p in staging.glob("*.tar"))
    assert len(staged) == 5 and not list(out.glob("*.tar"))
    # a half-written shard of a killed writer, and one staged shard damaged on disk
    (staging / f".{staged[0]}.4242.tmp").write_bytes(b"half a shard")
    victim = staging / staged[1]
    raw = bytearray(victim.read_bytes())
    raw[700] ^= 0xFF
    victim.write_bytes(bytes(raw))

    calls = _count_writes(monkeypatch)
    m = prep.prepare_images(folder, out, shard_size=4)
    assert len(calls) == n - 4 and staged[1] in calls and staged[0] not in calls  # 4 verified shards kept
    assert _files(out) == _files(tmp_path / "clean") and not staging.exists()
    assert m["splits"] == clean["splits"]


def test_verify_rewrites_only_damaged_installed_shards(folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = prep.prepare_images(folder, out, shard_size=6)
    before = _files(out)
    victim = out / first["splits"]["train"]["shards"][2]["name"]
    raw = bytearray(victim.read_bytes())
    raw[900] ^= 0xFF
    victim.write_bytes(bytes(raw))
    calls = _count_writes(monkeypatch)
    assert prep.prepare_images(folder, out, shard_size=6)["skipped"]  # sizes match: not noticed without verify
    again = prep.prepare_images(folder, out, shard_size=6, verify=True)
    assert not again["skipped"] and calls == [victim.name]
    assert _files(out) == before


def test_settings_change_rebuilds_and_drops_stale_staging(folder, tmp_path, monkeypatch):
    out = tmp_path / "out"
    _count_writes(monkeypatch, fail_after=2)
    with pytest.raises(RuntimeError):
        prep.prepare_images(folder, out, shard_size=4)
    calls = _count_writes(monkeypatch)
    m = prep.prepare_images(folder, out, shard_size=5)  # another plan: nothing staged is reused
    assert len(calls) == sum(len(v["shards"]) for v in m["splits"].values())


def test_kill_9_mid_run_then_rerun_resumes(folder, tmp_path, formats):
    rng = np.random.default_rng(3)
    root = tmp_path / "big"
    formats.image_folder(root, {"train": {f"c{k}": [formats.jpeg(rng, 64, 48) for _ in range(500)]
                                          for k in range(4)}})
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "data_prep.images", "--source", str(root), "--out", str(out), "--shard-size", "10",
           "--resize", "24", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    staging = out / ".big.staging"
    deadline = time.monotonic() + 60
    while len(list(staging.glob("*.tar.json"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(out.glob("*.tar")) and not list(out.glob("*manifest.json"))
    done_before = len(list(staging.glob("*.tar.json")))

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    kept = re.search(r"(\d+) of 200 shards already written and verified, kept", rerun.stderr)
    assert kept and done_before <= int(kept.group(1)) < 200
    clean = prep.prepare_images(root, tmp_path / "clean", shard_size=10, resize=24)
    assert _files(out) == _files(tmp_path / "clean")
    assert clean["splits"]["train"]["count"] == 2000


def test_progress_bar_on_request(folder, tmp_path, capsys):
    prep.prepare_images(folder, tmp_path / "out", progress=True)
    assert "img" in capsys.readouterr().err  # tqdm: "src: 100%|...| 60/60 [...img/s]"


def test_cli_new_options(folder, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["--source", str(folder), "--out", str(out), "--workers", "2", "--shard-size", "20kB", "--resize", "24",
            "--seed", "3", "--no-progress"]
    assert prep.main(args) == 0
    assert "wrote" in capsys.readouterr().out
    m = prep.prepare_images(folder, out, shard_size="20kB", resize=24, seed=3, workers=1)
    assert m["skipped"]  # the CLI wrote exactly what the function would
    assert prep.main(["--source", str(folder), "--out", str(out), "--shard-size", "lots"]) == 2
    assert "shard size 'lots'" in capsys.readouterr().err


class _DyingPayload:
    """A payload whose reader kills its worker process, as the OOM killer would."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def open(self):
        os._exit(9)


def test_a_dead_worker_fails_the_run_instead_of_hanging(tmp_path, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from data_prep.images.base import Catalog, Source, SplitItems

    items = SplitItems(labels=np.zeros(8, dtype=np.int64), name=lambda i: f"sample {i}",
                       payload=lambda idx: _DyingPayload(len(idx)))
    src = Source(tmp_path, "npz", "dying", ["train"], [], lambda dataset, wanted: Catalog(["a"], None, {"train": items}))
    monkeypatch.setattr(writer, "detect_source", lambda *a, **k: src)
    t0 = time.monotonic()
    with pytest.raises(BrokenProcessPool):
        prep.prepare_images(tmp_path, tmp_path / "out", shard_size=2, workers=2)
    assert time.monotonic() - t0 < 60 and not list((tmp_path / "out").glob("*.tar"))
