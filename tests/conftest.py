"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only benchmark data (HYPERNAS_SHARED_DATA, default <repo>/../shared/data)."""
    return Path(os.environ.get("HYPERNAS_SHARED_DATA", REPO.parent / "shared" / "data"))
