"""The registry of image-source formats: name -> detector(path, options) -> Source | None.

A detector returns None when the path does not look like its format and raises DataError (naming the
file) when it does but is broken. `DETECT_ORDER` tries the specific layouts before the generic image folder.
"""
from __future__ import annotations

from pipeline.registry import Registry

SOURCES: Registry = Registry("image source")
DETECT_ORDER = ["npz", "cifar10", "cifar100", "imagenet16", "imagenet-tar", "imagefolder"]
