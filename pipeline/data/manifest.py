"""The manifest of an image-shard set (`{dataset}-manifest.json`, written by `data_prep.images`).

    m = read_manifest(shard_dir, dataset)     # validated dict; DataError naming the file otherwise
    info = split_info(shard_dir, m, "train")  # the split's entry; every listed shard must exist
    decoded_bytes(m, "train", image_size=224) # what the split takes in memory as uint8 pixels

Format 2 (data_prep/README.md) adds per split `bytes`, `source_count` and `skipped`, and the settings
of the run (shuffle seed, resize, shard size); format 1 manifests are still read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.errors import DataError

FORMAT_VERSIONS = (1, 2)


def read_manifest(shard_dir: str | Path, dataset: str | None = None) -> dict[str, Any]:
    """Load and validate the manifest of `dataset` (or the only manifest) in `shard_dir`."""
    shard_dir = Path(shard_dir)
    if dataset is not None:
        path = shard_dir / f"{dataset}-manifest.json"
        if not path.is_file():
            raise DataError(f"{path}: manifest not found (prepare the shards with `python -m data_prep.images`)")
    else:
        found = sorted(shard_dir.glob("*-manifest.json"))
        if not found:
            raise DataError(f"{shard_dir}: no *-manifest.json (prepare the shards with `python -m data_prep.images`)")
        if len(found) > 1:
            raise DataError(f"{shard_dir}: several manifests {[f.name for f in found]}; pass dataset=")
        path = found[0]
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e})") from e
    _validate_manifest(path, manifest)
    return manifest


def _validate_manifest(path: Path, m: Any) -> None:
    def bad(what: str) -> DataError:
        return DataError(f"{path}: invalid manifest: {what}")

    if not isinstance(m, dict):
        raise bad("not a JSON object")
    if m.get("format_version") not in FORMAT_VERSIONS:
        raise bad(f"format_version {m.get('format_version')!r}, this reader knows {list(FORMAT_VERSIONS)}")
    for key in ("dataset", "num_classes", "class_names", "image_shape", "splits"):
        if key not in m:
            raise bad(f"missing key '{key}'")
    if not isinstance(m["num_classes"], int) or m["num_classes"] < 1:
        raise bad(f"num_classes {m['num_classes']!r}")
    if not isinstance(m["class_names"], list) or len(m["class_names"]) != m["num_classes"]:
        raise bad("class_names does not have num_classes entries")
    shape = m["image_shape"]
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise bad(f"image_shape {shape!r}, expected [H, W, C] or null")
    if not isinstance(m["splits"], dict) or not m["splits"]:
        raise bad("no splits")
    for split, info in m["splits"].items():
        try:
            shards = info["shards"]
            names = [s["name"] for s in shards]
            counts = [s["count"] for s in shards]
            _ = [s["sha256"] for s in shards]
        except (KeyError, TypeError) as e:
            raise bad(f"split '{split}' lacks {e}") from None
        if any(Path(n).name != n for n in names):
            raise bad(f"split '{split}' has shard names with directories")
        if not shards or sum(counts) != info.get("count"):
            raise bad(f"split '{split}': shard counts sum to {sum(counts)}, count is {info.get('count')}")


def split_info(shard_dir: Path, manifest: dict[str, Any], split: str) -> dict[str, Any]:
    if split not in manifest["splits"]:
        raise DataError(
            f"{shard_dir / (manifest['dataset'] + '-manifest.json')}: no split '{split}' "
            f"(has {sorted(manifest['splits'])})"
        )
    info = manifest["splits"][split]
    for shard in info["shards"]:
        if not (shard_dir / shard["name"]).is_file():
            raise DataError(f"{shard_dir / shard['name']}: shard listed in the manifest is missing")
    return info


def decoded_bytes(manifest: dict[str, Any], split: str, image_size: int | None) -> int:
    """Bytes of the split's images decoded to uint8: at their stored shape when the manifest has one
    (in-memory sets are resized per batch), else at image_size x image_size (resized when loaded)."""
    count = int(manifest["splits"][split]["count"])
    shape = manifest.get("image_shape")
    if shape is not None:
        return count * shape[0] * shape[1] * shape[2]
    if image_size is None:
        raise DataError(f"{manifest['dataset']}: images of varying size (image_shape null): an image size is needed")
    return count * image_size * image_size * 3
