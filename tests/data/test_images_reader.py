"""pipeline.data.images: manifest checks, corrupt shards, streaming order, deterministic aux batches."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from data_prep.images import prepare_images
from data_prep.images.plan import sample_order
from pipeline.data.images import AuxBatches, load_split, read_manifest, stream_split
from pipeline.errors import DataError


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """A small, read-only shard set (tests that damage shards work on a copy)."""
    root = tmp_path_factory.mktemp("reader")
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 200).astype(np.uint8),
              "x_test": rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 64).astype(np.uint8),
              "class_names": np.array([f"c{i}" for i in range(10)])}
    np.savez(root / "toy.npz", **arrays)
    prepare_images(root / "toy.npz", root / "shards", shard_size=60)  # train: 4 shards of 50
    return root / "shards", arrays


@pytest.fixture
def shards(built, tmp_path) -> Path:
    out = tmp_path / "shards"
    shutil.copytree(built[0], out)
    return out


def test_read_manifest(built, tmp_path):
    out, _ = built
    m = read_manifest(out)
    assert m["dataset"] == "toy" and m["splits"]["train"]["count"] == 200
    assert read_manifest(out, "toy") == m
    with pytest.raises(DataError, match="no \\*-manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="other-manifest.json"):
        read_manifest(out, "other")


def test_several_manifests_need_a_dataset(shards):
    shutil.copy(shards / "toy-manifest.json", shards / "copy-manifest.json")
    with pytest.raises(DataError, match="copy-manifest.json.*toy-manifest.json"):
        read_manifest(shards)
    assert read_manifest(shards, "toy")["dataset"] == "toy"


def test_broken_manifest(shards):
    path = shards / "toy-manifest.json"
    m = json.loads(path.read_text())
    m["splits"]["train"]["count"] = 201
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match="toy-manifest.json.*train"):
        read_manifest(shards)
    path.write_text("{not json")
    with pytest.raises(DataError, match="toy-manifest.json"):
        read_manifest(shards)


def test_load_split_order_and_content(built):
    out, arrays = built
    x, y = load_split(out, "train")
    assert x.dtype == torch.uint8 and x.shape == (200, 3, 32, 32) and y.dtype == torch.int64
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), arrays["x_train"])
    assert np.array_equal(y.numpy(), arrays["y_train"])
    with pytest.raises(DataError, match="no split 'val'"):
        load_split(out, "val")


def test_flipped_bytes_name_the_shard(shards):
    victim = shards / "toy-train-000002.tar"
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="toy-train-000002.tar.*sha256"):
        load_split(shards, "train")
    load_split(shards, "test")  # other splits are unaffected


@pytest.mark.parametrize("cut", ["mid_member", "member_boundary"])
def test_truncated_shard_names_the_shard(shards, cut):
    victim = shards / "toy-train-000001.tar"
    raw = victim.read_bytes()
    # a cut on a 512-byte boundary between samples makes tarfile stop silently: the count check catches it
    n = len(raw) // 2 + 100 if cut == "mid_member" else _boundary_after_first_sample(raw)
    victim.write_bytes(raw[:n])
    for verify in (True, False):
        with pytest.raises(DataError, match="toy-train-000001.tar"):
            load_split(shards, "train", verify=verify)
    with pytest.raises(DataError, match="toy-train-000001.tar"):
        for _ in stream_split(shards, "train", batch_size=16, seed=0, epoch=0):
            pass


def _boundary_after_first_sample(raw: bytes) -> int:
    """Byte offset just after the first sample's two members (.cls and .png)."""
    import tarfile, io

    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
    png = members[1]
    return png.offset_data + (png.size + 511) // 512 * 512


def test_missing_shard_names_the_shard(shards):
    (shards / "toy-test-000003.tar").unlink()
    with pytest.raises(DataError, match="toy-test-000003.tar.*missing"):
        load_split(shards, "test")
    with pytest.raises(DataError, match="toy-test-000003.tar"):
        stream_split(shards, "test", batch_size=8, seed=0, epoch=0)


def test_wrong_image_shape(shards):
    path = shards / "toy-manifest.json"
    m = json.loads(path.read_text())
    m["image_shape"] = [16, 16, 3]
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match="toy-test-000000.tar.*shape"):
        load_split(shards, "test")


def _collect(ds) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(ds)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_stream_split_is_seeded_and_complete(built):
    out, arrays = built
    x1, y1 = _collect(stream_split(out, "train", batch_size=32, seed=5, epoch=0))
    x2, y2 = _collect(stream_split(out, "train", batch_size=32, seed=5, epoch=0))
    x3, _ = _collect(stream_split(out, "train", batch_size=32, seed=5, epoch=1))
    assert x1.shape == (200, 3, 32, 32) and x1.dtype == torch.uint8 and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    # every sample exactly once, with its label
    ref = torch.from_numpy(arrays["x_train"]).permute(0, 3, 1, 2)
    order = [int(np.flatnonzero((ref == img).flatten(1).all(1))[0]) for img in x1]
    assert sorted(order) == list(range(200))
    assert y1.tolist() == arrays["y_train"][order].tolist()
    # unshuffled, the stream follows the shards: the writer's seeded permutation of the source order
    xs, _ = _collect(stream_split(out, "train", batch_size=32, seed=5, epoch=0, shuffle=False))
    assert torch.equal(xs, ref[torch.from_numpy(sample_order(200, "train", 0))])


def test_stream_split_nodesplitter(built, monkeypatch):
    out, _ = built
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        x, _ = _collect(stream_split(out, "train", batch_size=25, seed=1, epoch=3, nodesplitter=wds.split_by_node))
        assert len(x) == 100  # 2 of the 4 shards each
        seen.append(x)
    both = torch.cat(seen).flatten(1)
    assert len(torch.unique(both, dim=0)) == 200


def test_aux_batches_deterministic(built):
    out, _ = built
    x, y = load_split(out, "train")
    aux = AuxBatches(x, y, augment=True)
    a_img, a_lab = aux.batch(step=7, n=32, generator_seed=123)
    b_img, b_lab = AuxBatches(x.clone(), y.clone()).batch(step=7, n=32, generator_seed=123)  # e.g. after a resume
    assert a_img.dtype == torch.float32 and a_img.shape == (32, 3, 32, 32) and a_lab.dtype == torch.int64
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    c_img, _ = aux.batch(step=8, n=32, generator_seed=123)
    d_img, _ = aux.batch(step=7, n=32, generator_seed=124)
    assert not torch.equal(a_img, c_img) and not torch.equal(a_img, d_img)
    assert aux.batch(0, 500, 0)[0].shape[0] == 500  # more than the set: drawn with replacement
    assert AuxBatches(x, y, resize=16).batch(0, 8, 0)[0].shape == (8, 3, 16, 16)


def test_aux_batches_augmentation(built):
    out, _ = built
    x, y = load_split(out, "train")
    plain = AuxBatches(x, y, augment=False)
    imgs, labs = plain.batch(3, 64, 9)
    # un-normalise and find each image in the set: without augmentation images are untouched
    raw = (imgs * plain.std[None, :, None, None] + plain.mean[None, :, None, None]) * 255
    idx = [int(np.flatnonzero((y == lab).numpy() & (x.float() - r.round()).abs().flatten(1).amax(1).lt(0.5).numpy())[0])
           for r, lab in zip(raw, labs)]
    assert len(set(idx)) == 64  # a batch draws distinct images
    # same indices with augmentation on; with padding 0 the "crop" is the image itself, possibly mirrored
    flipped = AuxBatches(x, y, augment=True, padding=0)
    f_raw = (flipped.batch(3, 64, 9)[0] * plain.std[None, :, None, None] + plain.mean[None, :, None, None]) * 255
    for r, i in zip(f_raw.round(), idx):
        assert torch.equal(r, x[i].float()) or torch.equal(r, x[i].flip(-1).float())
    # with padding, some crops are shifted and contain the zero padding
    cropped = AuxBatches(x, y, augment=True).batch(3, 64, 9)[0]
    assert (cropped.amin(dim=(1, 2, 3)) < plain.batch(3, 64, 9)[0].amin(dim=(1, 2, 3))).any()
