"""Image-source formats behind one registry (`SOURCES`), and `detect_source` that picks one for a path.

One module per format: npz.py, cifar.py (CIFAR-10/100 python batches), imagenet16.py (ImageNet16-120
pickled batches), imagenet_tar.py (the official ILSVRC2012 train / val tars), imagefolder.py (class
folders of JPEGs). A new format is a module with a `@SOURCES.register(name)` detector, imported here and
placed in `registry.DETECT_ORDER`.
"""
from __future__ import annotations

import os
from pathlib import Path

from data_prep.images.base import Source, SourceOptions
from data_prep.images.sources import cifar, imagefolder, imagenet16, imagenet_tar, npz  # noqa: F401 (register)
from data_prep.images.sources.registry import DETECT_ORDER, SOURCES
from pipeline.errors import DataError

__all__ = ["SOURCES", "DETECT_ORDER", "detect_source"]


def detect_source(path: str | os.PathLike, kind: str | None = None, labels: str | os.PathLike | None = None) -> Source:
    """The image source at `path` (format `kind`, or detected); DataError naming the path if none fits."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataError(f"{p}: image source does not exist")
    options = SourceOptions(labels=Path(labels).expanduser().resolve() if labels else None)
    if kind is not None:
        src = SOURCES.get(kind)(p, options)
        if src is None:
            raise DataError(f"{p}: not a {kind!r} image source")
        return src
    for name in DETECT_ORDER:
        src = SOURCES.get(name)(p, options)
        if src is not None:
            return src
    raise DataError(
        f"{p}: not an image source: expected a .npz file, cifar-10-batches-py/, cifar-100-python/, ImageNet16 "
        "batches (train_data_batch_*, val_data), ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar (or a folder "
        "holding them) or an image folder (root/<split>/<class>/*.jpg|png or root/<class>/*.jpg|png)"
    )
