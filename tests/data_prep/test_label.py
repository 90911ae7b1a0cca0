"""The label stage (`python -m data_prep.label`): sampled architectures trained briefly on tiny shards, an
arch-accuracy table in the core schema, resume per architecture, a dead worker losing only its own
architecture, and the generic builder reading MobileNetV3 labels from elsewhere."""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from data_prep.label.cli import main
from data_prep.label.job import make_job, part_path, parts_dir, sample_archs, write_part
from data_prep.label.runner import run_processes
from data_prep.tables import build_generic_table, read_meta
from pipeline.data.tables import load_table
from pipeline.spaces import get_space

REPO = Path(__file__).resolve().parents[2]
FAST = ["--image-size", "16", "--batch-size", "16", "--bn-images", "32", "--set", "benchmark_width_mult=0.25",
        "--set", "benchmark_image_size=16", "--set", "benchmark_classes=10"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """10 classes of 16x16 images: 64 train, 32 test (class = mean brightness band, so it is learnable)."""
    from data_prep.images import prepare_images
    root = tmp_path_factory.mktemp("label")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 64), ("test", 32)):
        y = rng.integers(0, 10, n)
        x = np.clip(rng.normal(y[:, None, None, None] * 25, 20, (n, 16, 16, 3)), 0, 255).astype(np.uint8)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    np.savez(root / "tiny_images.npz", **arrays)
    prepare_images(root / "tiny_images.npz", root / "shards", dataset="tiny", min_shards=2)
    return root / "shards"


def _label(shards: Path, out: Path, *extra: str, n: int = 4) -> int:
    return main(["--space", "mobilenetv3", "--shards", str(shards), "--num-archs", str(n), "--epochs", "1",
                 "--seed", "3", "--out", str(out), *FAST, *extra])


def test_labels_four_architectures_into_a_core_schema_table(shards, tmp_path, capsys):
    out = tmp_path / "mbv3.parquet"
    assert _label(shards, out, "--holdout", "16") == 0
    table = load_table(out)
    space = get_space("mobilenetv3", benchmark_width_mult=0.25, benchmark_image_size=16, benchmark_classes=10)
    assert table.archs == sample_archs(space, 4, 3) and len(set(table.archs)) == 4
    assert table.label_columns == ["tiny_val_1ep", "tiny_test_1ep"]
    for name in table.label_columns:
        values = table.label(name)
        assert ((values >= 0) & (values <= 100)).all()
        # accuracies of 16 / 32 images: multiples of 100/16 and 100/32
        assert np.allclose(values * (16 if "val" in name else 32) / 100, np.round(values * (16 if "val" in name else 32) / 100))
    for arch, p, f in zip(table.archs, table.columns["params"], table.columns["flops"]):
        cost = space.cost(space.parse(arch))
        assert p == pytest.approx(cost["params"]) and f == pytest.approx(cost["flops"])
    assert list(table.columns["iso_class"]) == table.archs
    meta = read_meta(out)
    assert meta["space"] == "mobilenetv3" and meta["builder"] == "label"
    assert meta["label_job"]["epochs"] == 1 and meta["label_job"]["holdout"] == 16
    parts = sorted(parts_dir(out).glob("*.json"))
    assert len(parts) == 4
    part = json.loads(parts[0].read_text())
    assert part["train_images"] == 48 and part["eval_images"] == {"val": 16, "test": 32}


def test_a_rerun_labels_only_the_missing_architectures_with_the_same_result(shards, tmp_path, capsys):
    out = tmp_path / "mbv3.parquet"
    assert _label(shards, out) == 0
    first = load_table(out)
    lost = first.archs[2]
    part = part_path(parts_dir(out), lost)
    before = json.loads(part.read_text())
    kept = {a: part_path(parts_dir(out), a).stat().st_mtime_ns for a in first.archs if a != lost}
    part.unlink()  # as if the worker labelling it had been killed
    out.unlink()
    capsys.readouterr()
    assert _label(shards, out) == 0
    err = capsys.readouterr().err
    assert "3 already labelled, 1 to label" in err and lost in err
    assert {a: part_path(parts_dir(out), a).stat().st_mtime_ns for a in kept} == kept  # the others untouched
    again = load_table(out)
    assert again.archs == first.archs
    # the relabelled architecture gets the label it had: its training depends on (seed, arch) only
    assert json.loads(part.read_text())["labels"] == before["labels"]
    np.testing.assert_array_equal(again.label("tiny_test_1ep"), first.label("tiny_test_1ep"))


def test_parts_of_a_job_with_other_settings_are_refused(shards, tmp_path, capsys):
    out = tmp_path / "mbv3.parquet"
    assert _label(shards, out, n=2) == 0
    capsys.readouterr()
    assert _label(shards, out, "--lr", "0.01", n=2) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and "labelled with lr=0.05, this run has lr=0.01" in err


@pytest.mark.parametrize("extra, match", [
    (["--eval-split", "val"], r"no split 'val' to evaluate on \(splits: .*test.*train"),
    (["--holdout", "64"], r"--holdout 64 leaves no image of the 'train' split \(64\)"),
    (["--set", "dw_heads=crop9"], r"space\.settings\.dw_heads"),
    (["--workers", "0"], r"--workers must be >= 1"),
    (["--loader", "stream", "--holdout", "8"], r"--holdout needs the train split in memory"),
])
def test_bad_input_exits_2_and_writes_nothing(shards, tmp_path, capsys, extra, match):
    import re
    out = tmp_path / "t.parquet"
    assert _label(shards, out, *extra) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not out.exists() and not parts_dir(out).exists()


def test_a_corrupt_shard_stops_the_run_with_its_name(shards, tmp_path, capsys):
    import shutil
    bad = tmp_path / "shards"
    shutil.copytree(shards, bad)
    shard = sorted(bad.glob("tiny-train-*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:-700])
    out = tmp_path / "t.parquet"
    assert _label(bad, out) == 2
    err = capsys.readouterr().err
    assert f"error: {shard}" in err and "sha256" in err
    assert not out.exists() and not parts_dir(out).exists()


def test_streamed_images_label_too_and_their_parts_are_not_the_in_memory_ones(shards, tmp_path, capsys):
    out = tmp_path / "mbv3.parquet"
    assert _label(shards, out, "--loader", "stream", n=2) == 0
    assert len(load_table(out).archs) == 2 and read_meta(out)["label_job"]["loader"] == "stream"
    capsys.readouterr()
    assert _label(shards, out, n=2) == 2  # auto resolves to memory here: other augmentation, other labels
    assert "labelled with loader='stream', this run has loader='memory'" in capsys.readouterr().err


# -- worker processes --------------------------------------------------------------------------------

def fake_label(job, parts: Path, arch: str) -> dict:
    """Stands in for training (spawned workers import it from this module): the third architecture's
    worker is killed mid-label; the others are recorded at once."""
    if arch == os.environ["LABEL_TEST_VICTIM"]:
        os.kill(os.getpid(), signal.SIGKILL)
    result = {"labels": {name: 50.0 for name in job.label_columns}, "seconds": 0.0}
    write_part(parts, job, arch, result)
    return result


def test_a_killed_worker_loses_only_its_own_architecture(shards, tmp_path, monkeypatch):
    job = make_job("mobilenetv3", {}, shards, None, 1)
    archs = sample_archs(job.make_space(), 6, 0)
    monkeypatch.setenv("LABEL_TEST_VICTIM", archs[2])
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # spawned workers import fake_label from here
    parts = tmp_path / "parts"
    reports: dict[str, str | None] = {}
    run_processes(job, parts, archs, 2, lambda a, r, e: reports.__setitem__(a, e),
                  label=sys.modules[__name__].fake_label)
    assert set(reports) == set(archs)
    assert "died (exit code -9)" in reports[archs[2]]
    assert all(reports[a] is None and part_path(parts, a).is_file() for a in archs if a != archs[2])
    assert not part_path(parts, archs[2]).exists()


@pytest.mark.slow
def test_two_worker_processes_label_like_one(shards, tmp_path):
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    assert _label(shards, one, n=3) == 0
    assert _label(shards, two, "--workers", "2", n=3) == 0
    a, b = load_table(one), load_table(two)
    assert a.archs == b.archs
    np.testing.assert_array_equal(a.label("tiny_test_1ep"), b.label("tiny_test_1ep"))


@pytest.mark.ray
@pytest.mark.slow
def test_ray_tasks_label_like_one_process(shards, tmp_path):
    import subprocess
    one, ray = tmp_path / "one.parquet", tmp_path / "ray.parquet"
    assert _label(shards, one, n=2) == 0
    cmd = [sys.executable, "-m", "data_prep.label", "--space", "mobilenetv3", "--shards", str(shards), "--num-archs",
           "2", "--epochs", "1", "--seed", "3", "--out", str(ray), *FAST, "--ray", "--ray-cpus", "2"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    np.testing.assert_array_equal(load_table(one).label("tiny_test_1ep"), load_table(ray).label("tiny_test_1ep"))


# -- labels from elsewhere -----------------------------------------------------------------------------

def test_generic_builder_reads_canonical_strings_and_ofa_json(tmp_path):
    space = get_space("mobilenetv3")
    archs = sample_archs(space, 3, 0)
    csv = tmp_path / "ofa_labels.csv"
    rows = [archs[0], space.to_json(space.parse(archs[1])), archs[2]]
    with open(csv, "w") as f:
        f.write("arch,imagenet_val_top1,flops\n")
        for i, text in enumerate(rows):
            f.write('"' + text.replace('"', '""') + f'",{70 + i},{300 + i}\n')
    table = build_generic_table([csv], "mobilenetv3")
    assert table["arch"].to_pylist() == archs
    assert table["imagenet_val_top1"].to_pylist() == [70.0, 71.0, 72.0]
    out = tmp_path / "t.parquet"
    pq.write_table(table, out)
    assert load_table(out).label_columns == ["imagenet_val_top1"]
