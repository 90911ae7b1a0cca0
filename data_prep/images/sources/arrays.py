"""Helpers for sources that hold decoded pixels: pickled batches (CIFAR, ImageNet16) and npz files.

Security: the official CIFAR / ImageNet16 batches are Python pickles; only prepare sources you trust.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.images.base import ArrayPayload, Catalog, SplitItems
from pipeline.errors import DataError


def unpickle(f: Path) -> dict[str, Any]:
    try:
        with open(f, "rb") as fh:
            # latin1 reads both python-2 pickles (the official files) and python-3 ones
            obj = pickle.load(fh, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(f"{f}: cannot unpickle batch file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{f}: expected a pickled dict, got {type(obj).__name__}")
    return {text(k): v for k, v in obj.items()}


def text(s: Any) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def read_batches(files: list[Path], label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Pickled dicts with 'data' (N, 3*side*side) CHW-flattened uint8 and a label list -> NHWC images, labels."""
    xs, ys = [], []
    for f in files:
        d = unpickle(f)
        keys = [k for k in (label_key, "label", "labels") if k in d]
        if "data" not in d or not keys:
            raise DataError(f"{f}: batch dict lacks 'data' or '{label_key}' (keys: {sorted(d)})")
        x, y = np.asarray(d["data"]), np.asarray(d[keys[0]])
        if x.ndim != 2 or x.shape[1] != 3 * side * side or x.dtype != np.uint8:
            raise DataError(
                f"{f}: array 'data' has shape {x.shape} dtype {x.dtype}, expected (N, {3 * side * side}) uint8"
            )
        if y.shape != (len(x),) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
            raise DataError(f"{f}: array '{keys[0]}' has shape {y.shape} dtype {y.dtype}, "
                            f"expected ({len(x)},) integers to match 'data'")
        xs.append(x.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))  # CHW-flattened -> NHWC
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def max_label(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    return max(int(np.max(y)) if len(y) else 0 for _, y in arrays.values())


def arrays_catalog(p: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str]) -> Catalog:
    """Validate in-memory (N,H,W,3) uint8 images + labels (arrays named x_<split> / y_<split> in messages)."""
    shape: list[int] | None = None
    splits: dict[str, SplitItems] = {}
    for split, (x, y) in arrays.items():
        if x.ndim != 4 or x.shape[3] != 3 or x.dtype != np.uint8:
            raise DataError(f"{p}: array 'x_{split}' has shape {x.shape} dtype {x.dtype}, expected (N, H, W, 3) uint8")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: array 'y_{split}' has shape {y.shape} dtype {y.dtype}, expected (N,) integers")
        if len(y) != len(x):
            raise DataError(f"{p}: array 'y_{split}' has {len(y)} labels but 'x_{split}' has {len(x)} images")
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DataError(f"{p}: array 'y_{split}' has labels in [{y.min()}, {y.max()}], "
                            f"expected [0, {len(class_names)})")
        if shape is not None and list(x.shape[1:]) != shape:
            raise DataError(f"{p}: array 'x_{split}' has images of shape {x.shape[1:]}, other splits {tuple(shape)}")
        shape = list(x.shape[1:])
        splits[split] = SplitItems(
            labels=y.astype(np.int64),
            name=lambda i, _s=split: f"{p}: x_{_s}[{i}]",
            # default args bind this split's array (a plain closure would see the last split's)
            payload=lambda idx, _x=x: ArrayPayload(np.ascontiguousarray(_x[idx])),
        )
    return Catalog(class_names, shape, splits)
