"""data_prep.images: sources -> WebDataset shards + manifest (round trips, idempotence, atomicity, validation)."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import images as prep
from data_prep.images import writer
from data_prep.images.plan import sample_order
from pipeline.data.images import load_split, read_manifest
from pipeline.errors import DataError

CLASSES = [f"c{i}" for i in range(10)]


def _subset(shared_data: Path, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """The first images of the real CIFAR-10 subset, or random ones when the shared data is absent."""
    real = shared_data / "cifar10" / "cifar10_subset.npz"
    if real.is_file():
        with np.load(real) as z:
            return {"x_train": z["x_train"][:n_train], "y_train": z["y_train"][:n_train],
                    "x_test": z["x_test"][:n_test], "y_test": z["y_test"][:n_test], "class_names": z["class_names"]}
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
            "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
            "x_test": rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
            "y_test": rng.integers(0, 10, n_test).astype(np.uint8), "class_names": np.array(CLASSES)}


@pytest.fixture
def small_npz(tmp_path: Path, shared_data: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = _subset(shared_data, 300, 100)
    path = tmp_path / "cifar10_small.npz"
    np.savez(path, **arrays)
    return path, arrays


def _shards(out: Path) -> list[Path]:
    return sorted(out.glob("*.tar"))


def test_plan_shards_balanced():
    assert prep.plan_shards(5000, 1000, 4) == [1000] * 5
    assert prep.plan_shards(300, 1000, 4) == [75] * 4
    assert prep.plan_shards(10, 3, 4) == [3, 3, 2, 2]
    assert prep.plan_shards(3, 1000, 4) == [1, 1, 1]
    assert prep.plan_shards(0, 1000, 4) == []


def test_npz_round_trip(small_npz, tmp_path):
    path, arrays = small_npz
    out = tmp_path / "shards"
    m = prep.prepare_images(path, out)
    assert not m["skipped"]
    assert m["dataset"] == "cifar10"  # stem up to the first underscore
    assert m["image_shape"] == [32, 32, 3] and m["num_classes"] == 10
    assert m["source"]["kind"] == "npz" and m["source"]["path"] == str(path.resolve())
    assert m["settings"]["splits"] == ["train", "test"]
    assert [s["count"] for s in m["splits"]["train"]["shards"]] == [75] * 4
    assert m["splits"]["test"]["shards"][0]["name"] == "cifar10-test-000000.tar"
    assert read_manifest(out) == {k: v for k, v in m.items() if k != "skipped"}
    for split in ("train", "test"):
        x, y = load_split(out, split)
        assert m["splits"][split]["count"] == len(x) == len(arrays[f"x_{split}"])
        assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), arrays[f"x_{split}"])  # byte-identical, same order
        assert np.array_equal(y.numpy(), arrays[f"y_{split}"].astype(np.int64))
    # keys without dots (the source index), `.cls` + `.png` fields, shards filled in the seeded order
    with tarfile.open(out / "cifar10-train-000001.tar") as tar:
        names = tar.getnames()
    first = int(sample_order(300, "train", 0)[75])
    assert names[:2] == [f"train_{first:07d}.cls", f"train_{first:07d}.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert not (out / ".cifar10.staging").exists()  # removed once installed


def test_real_npz_test_split(shared_data, tmp_path):
    real = shared_data / "cifar10" / "cifar10_subset.npz"
    if not real.is_file():
        pytest.skip(f"{real} not present")
    m = prep.prepare_images(real, tmp_path, splits=["test"])
    assert m["splits"]["test"]["count"] == 1000 and len(m["splits"]["test"]["shards"]) == 4
    x, y = load_split(tmp_path, "test")
    with np.load(real) as z:
        assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), z["x_test"])
        assert np.array_equal(y.numpy(), z["y_test"])
    assert y[:5].tolist() == [3, 8, 8, 0, 6]
    assert m["class_names"][0] == "airplane"


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def test_cifar10_python_batches_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "download" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    data, labels = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        d = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, 6).tolist()
        _pickle(root / name, {b"batch_label": b"x", b"labels": lab, b"data": d, b"filenames": [b"f"] * 6})
        data.append(d)
        labels.append(lab)
    _pickle(root / "batches.meta", {b"label_names": [n.encode() for n in CLASSES], b"num_vis": 3072})

    out = tmp_path / "out"
    m = prep.prepare_images(tmp_path / "download", out, shard_size=10)  # torchvision root: found one level down
    assert m["source"]["kind"] == "cifar10" and m["dataset"] == "cifar10"
    assert m["class_names"] == CLASSES
    assert m["splits"]["train"]["count"] == 30 and len(m["splits"]["train"]["shards"]) == 4
    x, y = load_split(out, "train")
    # official layout: rows are CHW-flattened
    assert np.array_equal(x.numpy(), np.concatenate(data[:5]).reshape(-1, 3, 32, 32))
    assert y.tolist() == sum(labels[:5], [])
    xt, yt = load_split(out, "test")
    assert np.array_equal(xt.numpy(), data[5].reshape(-1, 3, 32, 32)) and yt.tolist() == labels[5]


def test_cifar100_and_imagenet16_layouts(tmp_path):
    rng = np.random.default_rng(2)
    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name in ("train", "test"):
        _pickle(c100 / name, {b"data": rng.integers(0, 256, (5, 3072), dtype=np.uint8),
                              b"fine_labels": [0, 99, 5, 7, 1], b"coarse_labels": [0] * 5})
    _pickle(c100 / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    m = prep.prepare_images(c100, tmp_path / "o100")
    assert (m["dataset"], m["num_classes"]) == ("cifar100", 100)
    assert load_split(tmp_path / "o100", "test")[1].tolist() == [0, 99, 5, 7, 1]

    in16 = tmp_path / "ImageNet16"
    in16.mkdir()
    val = rng.integers(0, 256, (6, 768), dtype=np.uint8)
    for name in ("train_data_batch_1", "train_data_batch_2"):
        _pickle(in16 / name, {"data": rng.integers(0, 256, (4, 768), dtype=np.uint8), "labels": [1, 2, 120, 121]})
    _pickle(in16 / "val_data", {"data": val, "label": [1, 500, 120, 3, 999, 2]})  # 1-based
    m = prep.prepare_images(in16, tmp_path / "o16")
    assert (m["dataset"], m["num_classes"], m["image_shape"]) == ("ImageNet16-120", 120, [16, 16, 3])
    assert m["splits"]["train"]["count"] == 6  # label 121 is not one of the 120 classes
    x, y = load_split(tmp_path / "o16", "val")
    assert y.tolist() == [0, 119, 2, 1]
    assert np.array_equal(x.numpy(), val[[0, 2, 3, 5]].reshape(-1, 3, 16, 16))


def _encoded(img: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def test_imagefolder_keeps_encoded_bytes(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "imagenet"
    files = {}
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                img = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                # one PNG hidden behind a .JPEG name, as in ImageNet
                name, fmt = (f"{i}.JPEG", "JPEG") if i else (f"{i}.JPEG", "PNG")
                files[(split, cls, i)] = _encoded(img, fmt)
                (root / split / cls / name).write_bytes(files[(split, cls, i)])
    out = tmp_path / "out"
    m = prep.prepare_images(root, out, min_shards=2)
    assert m["source"]["kind"] == "imagefolder" and m["image_shape"] is None
    assert m["class_names"] == ["n01", "n02"] and m["splits"]["val"]["count"] == 6
    members = {}
    for shard in m["splits"]["train"]["shards"]:
        with tarfile.open(out / shard["name"]) as tar:
            members.update({t.name: tar.extractfile(t).read() for t in tar})
    assert members["train_0000000.png"] == files[("train", "n01", 0)]
    assert members["train_0000001.jpg"] == files[("train", "n01", 1)]  # not re-encoded
    assert members["train_0000004.cls"] == b"1"


def test_idempotent_rerun_does_nothing(small_npz, tmp_path):
    path, _ = small_npz
    out = tmp_path / "shards"
    first = prep.prepare_images(path, out)
    before = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    for verify in (False, True):
        again = prep.prepare_images(path, out, verify=verify)
        assert again["skipped"] and again["splits"] == first["splits"]
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == before

    # other settings: rewritten, and shards only the old manifest listed are removed
    m = prep.prepare_images(path, out, shard_size=50, min_shards=1)
    assert not m["skipped"] and len(m["splits"]["train"]["shards"]) == 6
    assert {p.name for p in _shards(out)} == {s["name"] for v in m["splits"].values() for s in v["shards"]}
    # a damaged shard with the same size is only noticed with verify
    victim = out / m["splits"]["train"]["shards"][0]["name"]
    raw = bytearray(victim.read_bytes())
    raw[2000] ^= 0xFF
    victim.write_bytes(bytes(raw))
    assert prep.prepare_images(path, out, shard_size=50, min_shards=1)["skipped"]
    assert not prep.prepare_images(path, out, shard_size=50, min_shards=1, verify=True)["skipped"]
    load_split(out, "train")  # repaired


def test_shards_are_reproducible(small_npz, tmp_path):
    path, _ = small_npz
    a = prep.prepare_images(path, tmp_path / "a")
    b = prep.prepare_images(path, tmp_path / "b")
    assert a["splits"] == b["splits"]  # same sha256: fixed tar mtimes, deterministic PNG encoding


def _visible(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in out.iterdir() if f.is_file() and not f.name.startswith(".")}


def test_failure_mid_write_leaves_nothing(small_npz, tmp_path, monkeypatch):
    path, _ = small_npz
    out = tmp_path / "shards"
    real_write = writer.write_shard
    calls = []

    def failing(task):
        calls.append(task.name)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return real_write(task)

    monkeypatch.setattr(writer, "write_shard", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        prep.prepare_images(path, out)
    assert not _shards(out) and not list(out.glob("*manifest.json"))  # nothing a reader could pick up
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # the shard finished before the crash waits, complete, in the staging folder; nothing half-written
    staged = out / ".cifar10.staging"
    assert sorted(p.name for p in staged.glob("*.tar")) == [calls[0]] and not list(staged.glob(".*"))


def test_failure_mid_write_keeps_previous_state(small_npz, tmp_path, monkeypatch):
    path, arrays = small_npz
    out = tmp_path / "shards"
    prep.prepare_images(path, out)
    before = _visible(out)
    real_write = writer.write_shard
    calls = []

    def failing(task):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # even an interrupt must not leave half a state
        return real_write(task)

    monkeypatch.setattr(writer, "write_shard", failing)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare_images(path, out, shard_size=40)
    assert _visible(out) == before
    x, _ = load_split(out, "test")
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), arrays["x_test"])


def test_not_an_image_source(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for bad in (tmp_path / "notes.txt", tmp_path, tmp_path / "missing.npz"):
        with pytest.raises(DataError, match=str(bad.name)):
            prep.prepare_images(bad, tmp_path / "out")


@pytest.mark.parametrize(
    "change, culprit",
    [
        ({"x_train": np.zeros((4, 32, 32), np.uint8)}, "x_train"),  # no channel axis
        ({"x_train": np.zeros((4, 32, 32, 3), np.float32)}, "x_train"),  # not uint8
        ({"x_test": np.zeros((4, 3, 32, 32), np.uint8)}, "x_test"),  # NCHW
        ({"y_train": np.zeros(3, np.uint8)}, "y_train"),  # 3 labels for 4 images
        ({"y_train": np.array([0, 1, 2, 10], np.uint8)}, "y_train"),  # label >= num_classes
    ],
)
def test_bad_arrays_raise_data_error(tmp_path, change, culprit):
    arrays = {"x_train": np.zeros((4, 32, 32, 3), np.uint8), "y_train": np.zeros(4, np.uint8),
              "x_test": np.zeros((2, 32, 32, 3), np.uint8), "y_test": np.zeros(2, np.uint8),
              "class_names": np.array(CLASSES), **change}
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as exc:
        prep.prepare_images(path, tmp_path / "out")
    assert "broken.npz" in str(exc.value) and culprit in str(exc.value)
    assert not _shards(tmp_path / "out")


def test_bad_batch_file_raises_data_error(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        _pickle(root / name, {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    _pickle(root / "data_batch_3", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    _pickle(root / "batches.meta", {b"label_names": [n.encode() for n in CLASSES]})
    with pytest.raises(DataError, match="data_batch_3.*'data'"):
        prep.prepare_images(root, tmp_path / "out")


def test_cli(small_npz, tmp_path, capsys):
    path, _ = small_npz
    out = tmp_path / "cli"
    assert prep.main(["--source", str(path), "--out", str(out), "--dataset", "tiny", "--splits", "test"]) == 0
    assert "wrote 4 shards" in capsys.readouterr().out
    assert json.loads((out / "tiny-manifest.json").read_text())["settings"]["splits"] == ["test"]
    assert prep.main(["--source", str(path), "--out", str(out), "--dataset", "tiny", "--splits", "test"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert prep.main(["--source", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err
