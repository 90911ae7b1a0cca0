"""Paths as results record them: relative to the repository, so committed results name no machine."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository root when it lies inside it, else unchanged (a user's own storage)."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(p)
