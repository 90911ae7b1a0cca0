"""The run directory contract.

    runs/<name>/
      config.yaml          resolved config (what actually ran)
      env.json             versions of python, torch and the libraries, host, start time, git commit
      metrics.jsonl        one JSON object per line: {"event": "update"|"epoch"|"eval"|"final", ...}
      tb/                  TensorBoard event files
      checkpoints/         epoch_0001.pt ... and `latest` (a text file naming the newest one); a graceful
                           stop adds a mid-epoch epoch_0001_u00003.pt (1 epoch + 3 updates done);
                           DeepSpeed runs write checkpoints/deepspeed/<tag>/ instead
      predictions.parquet  arch, index, labels, prediction, in_train  (after evaluation)
      results.json / results.md / scatter.png

Every file is written atomically (temp + rename), so a killed run never leaves a half-written
checkpoint or table behind, and `latest` only ever names a complete checkpoint.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import REPO_ROOT

_LIBS = ("torch", "torchvision", "torch-geometric", "webdataset", "timm", "pyarrow", "numpy", "deepspeed", "ray")


def source_version() -> dict[str, Any]:
    """The code a run used: git commit, the tree id of `pipeline/` at that commit (equal ids = the same
    package code, whatever else the commits changed) and whether `pipeline/` had edits or files git does
    not know (none outside a git checkout)."""
    def git(*args: str) -> str | None:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        commit = git("rev-parse", "HEAD")
        if commit is None:
            return {}
        tree = git("rev-parse", "HEAD:pipeline")
        dirty = git("status", "--porcelain", "--", "pipeline")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"git_commit": commit, "pipeline_tree": tree, "git_dirty_pipeline": bool(dirty)}


def environment() -> dict[str, Any]:
    versions = {}
    for lib in _LIBS:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    return {"python": sys.version.split()[0], "platform": platform.platform(), "host": socket.gethostname(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "versions": versions,
            "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **source_version()}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"

    def create(self) -> "RunDir":
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        return self

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.file("config.yaml"), yaml_text)

    def write_env(self) -> None:
        atomic_write_json(self.file("env.json"), environment())

    # -- checkpoints -----------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        pointer = self.ckpt_dir / "latest"
        if not pointer.is_file():
            return None
        path = self.ckpt_dir / pointer.read_text().strip()
        return path if path.is_file() else None

    def save_checkpoint(self, state: dict[str, Any], epoch: int | None = None, keep: int = 2, *,
                        tag: str | None = None) -> Path:
        """Write `epoch_NNNN.pt` (or `<tag>.pt`, e.g. a mid-epoch `epoch_NNNN_uNNNNN.pt`), point `latest` at it."""
        path = self.ckpt_dir / (f"{tag}.pt" if tag else f"epoch_{epoch:04d}.pt")
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        atomic_write_text(self.ckpt_dir / "latest", path.name + "\n")
        for old in sorted(self.ckpt_dir.glob("epoch_*.pt"))[:-keep]:
            old.unlink(missing_ok=True)
        return path


class MetricsLogger:
    """JSONL + TensorBoard. JSONL lines are appended and flushed one at a time (a line is complete
    or absent); on resume, lines past the checkpoint's step are dropped so the log has no repeats."""

    def __init__(self, run: RunDir, tensorboard: bool = True, resume_step: int | None = None):
        self.path = run.file("metrics.jsonl")
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(str(run.file("tb")), purge_step=resume_step)

    def _truncate_after(self, step: int) -> None:
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if rec.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def log(self, event: str, step: int, **values: Any) -> None:
        rec = {"event": event, "step": step, "time": round(time.time(), 3), **values}
        self._fh.write(json.dumps(rec, default=_plain) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{event}/{k}", v, step)

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _plain(obj: Any) -> Any:
    return obj.item() if hasattr(obj, "item") else str(obj)
