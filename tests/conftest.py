"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread per test process: the tests' tensors are small, and on a 2-core machine the default
# (all cores) made small convolutions ~30x slower under load. Runs the tests start set their own.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only benchmark data (HYPERNAS_SHARED_DATA, default <repo>/../shared/data)."""
    return Path(os.environ.get("HYPERNAS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, shared_data) -> dict:
    """The NB201 table and CIFAR-10 shards prepared once per session under a temp dir."""
    from data_prep.images import prepare_images
    from data_prep.tables import prepare_table

    root = tmp_path_factory.mktemp("prepared")
    table = prepare_table("nb201", shared_data / "nasbench201", root / "nb201.parquet")
    prepare_images(shared_data / "cifar10" / "cifar10_subset.npz", root / "shards", dataset="cifar10")
    return {"table": table, "shards": root / "shards", "root": root}


@pytest.fixture
def tiny_overrides(prepared, tmp_path) -> list[str]:
    """Overrides that point the tiny config at the session's prepared data and a fresh run root."""
    return [f"data.table={prepared['table']}", f"data.aux_shards={prepared['shards']}", "data.prepare=false",
            f"run.root={tmp_path / 'runs'}", "run.tensorboard=true"]
