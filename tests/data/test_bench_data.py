"""benchmarks.data at toy sizes: it measures every row, compares with the update's consumption, writes its files."""
from __future__ import annotations

import json

import numpy as np

from benchmarks import data as bench


def test_bench_data_writes_summary_json_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    cifar = tmp_path / "cifar.npz"
    np.savez(cifar, x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 64),
             x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 16))
    out = tmp_path / "out"
    assert bench.main(["--jpegs", "16", "--load-images", "32", "--workers", "2", "--cifar", str(cifar),
                       "--out", str(out)]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert set(result["rows"]) == set(bench.LABELS)
    assert all(r["images_per_s"] > 0 for r in result["rows"].values())
    assert result["rows"]["jpeg_shard_keep"]["images"] == 16
    assert result["consumption_images_per_s"]["cpu_measured"] == bench.PAPER_IMAGES_PER_UPDATE / result["cpu_update_s"]
    assert 80_000 < result["mean_jpeg_bytes"] < 140_000  # ImageNet-like JPEG sizes
    md = (out / "summary.md").read_text()
    assert "**assumed**" in md and "32-core node" in md and "load average" in md
    assert (out / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # atomic writes left no temp files
