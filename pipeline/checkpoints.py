"""Checkpoint identity: which config a checkpoint belongs to, and whether a run may resume from it.

A checkpoint stores the *fingerprint* of its run's config: every key that changes the math. Keys that
do not (run directory and logging, evaluation, launcher settings, thread count, device) are left out, so
a run can resume under another launcher or thread count, but not with another learning rate.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import Config, to_dict
from pipeline.errors import ConfigError

# Keys that may differ between a checkpoint's run and the resuming one (they do not change the math).
_RESUMABLE_SECTIONS = ("run", "eval", "dist", "search")
_RESUMABLE_TRAIN_KEYS = ("threads", "device")
_RESUMABLE_DATA_KEYS = ("aux_workers", "aux_shuffle_buffer", "prepare_workers")  # stream order / speed only


def config_fingerprint(cfg: Config) -> dict[str, Any]:
    tree = to_dict(cfg)
    for section in _RESUMABLE_SECTIONS:
        tree.pop(section)
    for key in _RESUMABLE_TRAIN_KEYS:
        tree["train"].pop(key)
    for key in _RESUMABLE_DATA_KEYS:
        tree["data"].pop(key, None)
    return tree


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """ConfigError listing every key whose value differs between the checkpoint's config and this one."""
    diffs = []
    defaults = config_fingerprint(Config())

    def walk(a: Any, b: Any, d: Any, prefix: str, in_saved: bool) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), d.get(k) if isinstance(d, dict) else None, f"{prefix}{k}.", k in a)
        elif not in_saved and b == d:
            pass  # a key added after the checkpoint was written, at its default: same math as before
        elif a != b:
            diffs.append(f"{prefix[:-1]}: checkpoint {a!r} vs now {b!r}")

    walk(saved, current, defaults, "", True)
    if diffs:
        raise ConfigError(f"checkpoint {str(path)!r} was written by another config ({'; '.join(diffs)}); "
                          f"use another run.name or run.resume=false to start over")
