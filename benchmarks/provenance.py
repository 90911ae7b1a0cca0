"""Which code a benchmark summary was measured on: one line for every summary.md."""
from __future__ import annotations

from pipeline.rundir import source_version


def code_line() -> str:
    """`Code: commit abc1234567` (+ a note when pipeline/ had uncommitted edits), from
    `pipeline.rundir.source_version()`; no final period, so a summary can continue the sentence."""
    version = source_version()
    if not version.get("git_commit"):
        return "Code: not a git checkout (commit unknown)"
    dirty = " with uncommitted edits in pipeline/" if version.get("git_dirty_pipeline") else ""
    return f"Code: commit {str(version['git_commit'])[:10]}{dirty}"
