"""data_prep.images sources in their official layouts, and bad input named in the error.

Every file here is written by the test itself (tests/data_prep/conftest.py): ImageFolder trees, the
ILSVRC2012 train tar (a tar of per-class tars) and val tar with the devkit / LOC csv / text labels,
ImageNet16 and CIFAR-100 pickles.
"""
from __future__ import annotations

import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data_prep import images as prep
from pipeline.data.images import load_split, read_manifest
from pipeline.errors import DataError

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _tars_under(out: Path) -> list[Path]:
    return sorted(out.rglob("*.tar")) if out.exists() else []


def _sha(m: dict, split: str) -> list[str]:
    return [s["sha256"] for s in m["splits"][split]["shards"]]


@pytest.fixture
def classes(formats) -> dict[str, list[bytes]]:
    rng = np.random.default_rng(0)
    out = {w: [formats.jpeg(rng, 40 + i, 30) for i in range(3 + k)] for k, w in enumerate(WNIDS)}
    out[WNIDS[1]][0] = formats.png(rng)  # ImageNet has a PNG (and CMYK JPEGs) named .JPEG
    return out


def test_train_tar_shards_like_the_extracted_folder(tmp_path, formats, classes):
    tar = tmp_path / "ILSVRC2012_img_train.tar"
    formats.train_tar(tar, classes)
    folder = tmp_path / "imagenet"
    formats.image_folder(folder, {"train": {w: [d for d in imgs] for w, imgs in classes.items()}})

    m_tar = prep.prepare_images(tar, tmp_path / "from_tar", dataset="imagenet1k", min_shards=3)
    m_dir = prep.prepare_images(folder, tmp_path / "from_dir", dataset="imagenet1k", min_shards=3)
    assert m_tar["source"]["kind"] == "imagenet-tar" and m_dir["source"]["kind"] == "imagefolder"
    assert m_tar["class_names"] == WNIDS and m_tar["image_shape"] is None
    assert m_tar["splits"]["train"]["count"] == 12
    # same keys, labels and bytes in the same seeded order: byte-identical shards
    assert _sha(m_tar, "train") == _sha(m_dir, "train")
    members = {}
    for shard in m_tar["splits"]["train"]["shards"]:
        with tarfile.open(tmp_path / "from_tar" / shard["name"]) as t:
            members.update({i.name: t.extractfile(i).read() for i in t})
    originals = {d for imgs in classes.values() for d in imgs}
    assert {v for k, v in members.items() if not k.endswith(".cls")} == originals  # bytes kept as they are
    assert members["train_0000003.png"] == classes[WNIDS[1]][0]  # the field follows the content, not the name
    _, y = load_split(tmp_path / "from_tar", "train", image_size=16)
    assert y.tolist() == [0] * 3 + [1] * 4 + [2] * 5  # class index = position of the sorted WNID


def _val(tmp_path: Path, formats, n: int = 6) -> tuple[Path, list[str]]:
    rng = np.random.default_rng(1)
    tar = tmp_path / "ILSVRC2012_img_val.tar"
    return tar, formats.val_tar(tar, [formats.jpeg(rng) for _ in range(n)])


# ILSVRC2012_IDs are not in WNID order: id 1 is the last WNID here (as kit fox n02119789 is id 1 for real)
SYNSETS = [(1, WNIDS[2], 0), (2, WNIDS[0], 0), (3, WNIDS[1], 0), (4, "n00001740", 3)]  # id 4: not a leaf
GROUND_TRUTH = [1, 2, 3, 3, 2, 1]
EXPECTED = [2, 0, 1, 1, 0, 2]


@pytest.mark.parametrize("label_format", ["devkit_tar_found", "devkit_dir", "ground_truth_txt", "loc_csv",
                                          "text_wnid", "text_index"])
def test_val_tar_with_each_label_format(tmp_path, formats, label_format):
    tar, names = _val(tmp_path, formats)
    labels = None
    if label_format == "devkit_tar_found":
        formats.devkit(tmp_path, SYNSETS, GROUND_TRUTH)  # ILSVRC2012_devkit_t12.tar.gz next to the tar: found
    elif label_format == "devkit_dir":
        labels = formats.devkit(tmp_path / "kit", SYNSETS, GROUND_TRUTH, as_tar=False)
    elif label_format == "ground_truth_txt":
        labels = formats.devkit(tmp_path / "kit", SYNSETS, GROUND_TRUTH, as_tar=False) / "data" / \
            "ILSVRC2012_validation_ground_truth.txt"
    elif label_format == "loc_csv":
        labels = tmp_path / "LOC_val_solution.csv"
        wnid = dict((i, w) for i, w, _ in SYNSETS)
        rows = [f"{Path(n).stem},{wnid[g]} 1 2 30 40 {wnid[g]} 5 6 7 8" for n, g in zip(names, GROUND_TRUTH)]
        labels.write_text("ImageId,PredictionString\n" + "\n".join(reversed(rows)) + "\n")  # any row order
    elif label_format == "text_wnid":
        labels = tmp_path / "val.txt"
        labels.write_text("".join(f"{n} {WNIDS[e]}\n" for n, e in zip(names, EXPECTED)))
    else:
        labels = tmp_path / "val.txt"
        labels.write_text("# caffe-style val.txt\n" + "".join(f"{n} {e}\n" for n, e in zip(names, EXPECTED)))
    m = prep.prepare_images(tar, tmp_path / "out", labels=labels, min_shards=2)
    assert m["source"]["kind"] == "imagenet-tar" and list(m["splits"]) == ["val"]
    _, y = load_split(tmp_path / "out", "val", image_size=16)
    assert y.tolist() == EXPECTED
    if label_format == "text_index":
        assert m["class_names"] == ["0", "1", "2"]
    else:
        assert m["class_names"] == WNIDS
    assert m["source"]["val_labels"].split(":")[0] == {"loc_csv": "loc_csv", "text_wnid": "text",
                                                       "text_index": "text"}.get(label_format, "devkit")


def test_folder_with_both_tars_shares_the_classes(tmp_path, formats, classes):
    formats.train_tar(tmp_path / "ILSVRC2012_img_train.tar", classes)
    _, names = _val(tmp_path, formats, 4)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"{Path(n).stem},{WNIDS[i % 3]} 0 0 9 9\n" for i, n in enumerate(names)))
    m = prep.prepare_images(tmp_path, tmp_path / "out", min_shards=2)
    assert m["dataset"] == "imagenet1k" and set(m["splits"]) == {"train", "val"} and m["class_names"] == WNIDS
    assert load_split(tmp_path / "out", "val", image_size=16)[1].tolist() == [0, 1, 2, 0]
    only_val = prep.prepare_images(tmp_path, tmp_path / "val_only", splits=["val"], min_shards=1)
    assert only_val["class_names"] == WNIDS  # still the train tar's classes

    # a val label outside the train classes is named
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"{Path(n).stem},n09999999 0 0 9 9\n" for n in names))
    with pytest.raises(DataError, match="LOC_val_solution.csv.*n09999999"):
        prep.prepare_images(tmp_path, tmp_path / "out2")


def test_val_without_labels_names_the_tar(tmp_path, formats):
    tar, _ = _val(tmp_path, formats)
    with pytest.raises(DataError, match="ILSVRC2012_img_val.tar.*--labels"):
        prep.prepare_images(tar, tmp_path / "out")
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG n01440764\n")  # 5 images unlabelled
    with pytest.raises(DataError, match="ILSVRC2012_val_00000002.*no label"):
        prep.prepare_images(tar, tmp_path / "out", labels=tmp_path / "val.txt")


@pytest.mark.parametrize("cut", ["outer_mid_member", "outer_member_boundary", "inner"])
def test_truncated_tar_is_named(tmp_path, formats, classes, cut):
    tar = tmp_path / "ILSVRC2012_img_train.tar"
    formats.train_tar(tar, classes)
    raw = tar.read_bytes()
    if cut == "inner":  # a class tar cut short, inside an intact outer tar
        with tarfile.open(tar) as t:
            inner = {m.name: t.extractfile(m).read() for m in t}
        inner[f"{WNIDS[1]}.tar"] = inner[f"{WNIDS[1]}.tar"][:1500]
        tar.write_bytes(formats.tar_bytes(inner))
        culprit = f"ILSVRC2012_img_train.tar:{WNIDS[1]}.tar"
    else:
        with tarfile.open(tar) as t:
            first = t.getmembers()[0]
        end_of_first = first.offset_data + (first.size + 511) // 512 * 512
        tar.write_bytes(raw[:end_of_first - 700] if cut == "outer_mid_member" else raw[:end_of_first])
        culprit = "ILSVRC2012_img_train.tar"
    with pytest.raises(DataError, match=f"{culprit}.*truncated"):
        prep.prepare_images(tar, tmp_path / "out")
    assert not _tars_under(tmp_path / "out")


def _folder_with_corrupt(tmp_path: Path, formats) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(2)
    root = tmp_path / "imagenet"
    formats.image_folder(root, {"train": {w: [formats.jpeg(rng) for _ in range(5)] for w in WNIDS[:2]}})
    truncated = root / "train" / WNIDS[0] / f"{WNIDS[0]}_3.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:300])
    garbage = root / "train" / WNIDS[1] / f"{WNIDS[1]}_1.JPEG"
    garbage.write_bytes(b"<html>not an image</html>")
    return root, truncated, garbage


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_jpeg_fails_naming_the_file_and_leaves_no_shard(tmp_path, formats, workers):
    root, truncated, garbage = _folder_with_corrupt(tmp_path, formats)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="--skip-corrupt") as exc:
        prep.prepare_images(root, out, shard_size=2, workers=workers)
    assert str(truncated) in str(exc.value) or str(garbage) in str(exc.value)
    assert not _tars_under(out) and not list(out.glob("*manifest.json"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_skip_corrupt_lists_warns_and_counts(tmp_path, formats, caplog, capsys):
    root, truncated, garbage = _folder_with_corrupt(tmp_path, formats)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="data_prep.images"):
        m = prep.prepare_images(root, out, skip_corrupt=True, min_shards=2)
    info = m["splits"]["train"]
    assert (info["count"], info["source_count"]) == (8, 10)
    skipped = {s["path"]: s for s in info["skipped"]}
    assert set(skipped) == {str(truncated), str(garbage)}
    assert "truncated" in skipped[str(truncated)]["error"].lower() and "neither a JPEG nor a PNG" in skipped[str(garbage)]["error"]
    assert all(s["shard"] in {sh["name"] for sh in info["shards"]} for s in info["skipped"])
    assert read_manifest(out)["splits"]["train"]["skipped"] == info["skipped"]  # written to the file
    assert str(truncated) in caplog.text and str(garbage) in caplog.text  # warned, never silent
    assert len(load_split(out, "train", image_size=16)[0]) == 8
    # the CLI says so too
    assert prep.main(["--source", str(root), "--out", str(tmp_path / "cli"), "--skip-corrupt"]) == 0
    assert "2 corrupt images were left out" in capsys.readouterr().err
    assert prep.main(["--source", str(root), "--out", str(tmp_path / "cli2")]) == 2
    assert "error:" in capsys.readouterr().err


def test_pickle_with_wrong_keys_is_named(tmp_path, formats):
    rng = np.random.default_rng(3)
    in16 = tmp_path / "ImageNet16"
    in16.mkdir()
    formats.pickle(in16 / "train_data_batch_1", {"data": rng.integers(0, 256, (4, 768), dtype=np.uint8),
                                                 "labels": [1, 2, 3, 4]})
    formats.pickle(in16 / "val_data", {"images": rng.integers(0, 256, (4, 768), dtype=np.uint8), "labels": [1] * 4})
    with pytest.raises(DataError, match="val_data.*lacks 'data'"):
        prep.prepare_images(in16, tmp_path / "out")

    c100 = tmp_path / "cifar-100-python"
    c100.mkdir()
    for name in ("train", "test"):
        formats.pickle(c100 / name, {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"coarse_labels": [0] * 3})
    formats.pickle(c100 / "meta", {b"fine_label_names": [b"a"]})
    with pytest.raises(DataError, match="cifar-100-python/train.*'fine_labels'"):
        prep.prepare_images(c100, tmp_path / "out")
    for name in ("train", "test"):
        formats.pickle(c100 / name, {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"fine_labels": [0] * 3})
    formats.pickle(c100 / "meta", {b"coarse_label_names": [b"a"]})
    with pytest.raises(DataError, match="meta.*'fine_label_names'"):
        prep.prepare_images(c100, tmp_path / "out")
    (c100 / "train").write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(DataError, match="cifar-100-python/train.*unpickle"):
        prep.prepare_images(c100, tmp_path / "out")
    assert not _tars_under(tmp_path / "out")


def test_imagenet16_120_round_trip(tmp_path, formats):
    rng = np.random.default_rng(4)
    in16 = tmp_path / "Imagenet16"
    in16.mkdir()
    batches = [rng.integers(0, 256, (5, 768), dtype=np.uint8) for _ in range(3)]
    labels = [[1, 120, 121, 7, 1000], [2, 2, 2, 300, 119], [120, 1, 5, 6, 7]]
    for i, (d, lab) in enumerate(zip(batches[:2], labels[:2]), start=1):
        formats.pickle(in16 / f"train_data_batch_{i}", {"data": d, "labels": lab, "mean": np.zeros(768)})
    formats.pickle(in16 / "val_data", {"data": batches[2], "labels": labels[2]})
    m = prep.prepare_images(in16, tmp_path / "out", dataset="ImageNet16-120", min_shards=2)
    assert m["splits"]["train"]["count"] == 7 and m["num_classes"] == 120
    x, y = load_split(tmp_path / "out", "train")
    keep = [0, 1, 3, 5, 6, 7, 9]
    assert y.tolist() == [v - 1 for v in np.concatenate(labels[:2])[keep]]
    assert np.array_equal(x.numpy(), np.concatenate(batches[:2])[keep].reshape(-1, 3, 16, 16))


def test_folder_that_is_not_a_class_is_named(tmp_path, formats):
    rng = np.random.default_rng(5)
    root = tmp_path / "imagenet"
    formats.image_folder(root, {"train": {w: [formats.jpeg(rng)] * 2 for w in WNIDS[:2]}})
    notes = root / "train" / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("downloaded 2012")
    with pytest.raises(DataError, match=f"{notes}: not a class folder"):
        prep.prepare_images(root, tmp_path / "out")
    notes.rename(root / "train" / WNIDS[0] / "nested")  # a folder inside a class folder
    with pytest.raises(DataError, match=f"{root / 'train' / WNIDS[0] / 'nested'}.*inside the class folder"):
        prep.prepare_images(root, tmp_path / "out")
    (root / "train" / WNIDS[0] / "nested" / "readme.txt").unlink()
    (root / "train" / WNIDS[0] / "nested").rmdir()
    (root / WNIDS[2]).mkdir()  # a class folder next to the split folders
    (root / WNIDS[2] / "x.JPEG").write_bytes(formats.jpeg(rng))
    with pytest.raises(DataError, match=f"{root}: mixes class folders \\({WNIDS[2]}/"):
        prep.prepare_images(root, tmp_path / "out")
    assert not _tars_under(tmp_path / "out")


def test_imagefolder_layouts(tmp_path, formats):
    rng = np.random.default_rng(6)
    root = tmp_path / "imagenet"
    formats.image_folder(root, {"train": {w: [formats.jpeg(rng) for _ in range(2)] for w in WNIDS}})
    # root/<class>/: the folder is one split, named after it
    m = prep.prepare_images(root / "train", tmp_path / "one", dataset="in")
    assert list(m["splits"]) == ["train"] and m["class_names"] == WNIDS and m["splits"]["train"]["count"] == 6
    # a flat val/ next to train/, labelled by a text file found in root
    (root / "val").mkdir()
    for i in range(1, 4):
        (root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(formats.jpeg(rng))
    (root / "val_labels.txt").write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG {WNIDS[3 - i]}\n" for i in range(1, 4)))
    m = prep.prepare_images(root, tmp_path / "both", dataset="in", min_shards=1)
    assert set(m["splits"]) == {"train", "val"} and m["source"]["val_labels"].startswith("text")
    assert load_split(tmp_path / "both", "val", image_size=16)[1].tolist() == [2, 1, 0]
    json.dumps(m)  # plain JSON


def test_kind_forces_a_format(tmp_path, formats):
    tar, _ = _val(tmp_path, formats)
    with pytest.raises(DataError, match="not a 'cifar10' image source"):
        prep.prepare_images(tar, tmp_path / "out", kind="cifar10")
