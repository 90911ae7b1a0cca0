"""Image sets -> WebDataset shards plus a manifest.

Sources (detected from the path):
  npz          a .npz file with x_<split> (N,H,W,3) uint8 and y_<split> arrays (e.g. cifar10_subset.npz)
  cifar10      the official `cifar-10-batches-py/` directory (pickled batches, as torchvision downloads it)
  cifar100     the official `cifar-100-python/` directory
  imagenet16   the down-sampled ImageNet 16x16 batches (train_data_batch_1..10, val_data; labels 1-based)
  imagefolder  `root/<split>/<class>/*.{jpg,jpeg,png}`; the encoded bytes are stored as they are

Output, in `out_dir`:
  {dataset}-{split}-{000000}.tar   samples `{split}_{index:07d}` with `.png`/`.jpg` and `.cls` fields
  {dataset}-manifest.json          written last; lists every shard with its sample count, size and sha256

A run writes its shards into a temporary directory next to `out_dir` and only then moves them in, so a
crash while encoding leaves the previous state untouched. During the (fast) move phase the old manifest
is removed first: readers then see "no manifest" rather than a manifest that points at the wrong shards.

Security: the official CIFAR / ImageNet16 batches are Python pickles; only prepare sources you trust.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import webdataset as wds
from PIL import Image

from pipeline.errors import ConfigError, DataError, UserError
from pipeline.utils.io import atomic_write_json, file_sha256

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Fixed tar member mtime (not now): the same source and settings then give byte-identical shards (stable sha256).
_TAR_MTIME = 0  # an int: a float mtime makes tarfile add a PAX header to every member
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
_DATASET_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# Sources bigger than this are fingerprinted by (name, size, mtime) instead of by content.
_HASH_CONTENT_LIMIT = 4 << 30

# A sample as the writer sees it: (field extension "png"/"jpg", encoded bytes, integer label).
Sample = tuple[str, bytes, int]


@dataclass
class SplitData:
    count: int
    samples: Callable[[], Iterator[Sample]]  # re-iterable: called once per write


@dataclass
class Loaded:
    class_names: list[str]
    image_shape: list[int] | None  # [H, W, C]; None for variable-size image folders
    splits: dict[str, SplitData]


@dataclass
class Source:
    path: Path
    kind: str
    default_dataset: str
    split_names: list[str]
    files: list[Path]  # what the fingerprint covers
    load: Callable[[str, list[str]], Loaded]  # (dataset name, splits) -> data
    hash_content: bool = True


# --------------------------------------------------------------------------- source detection


def detect_source(path: str | os.PathLike) -> Source:
    """Work out which kind of image source `path` is; DataError naming the path if none fits."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataError(f"{p}: image source does not exist")
    if p.is_file():
        if p.suffix == ".npz":
            return _npz_source(p)
        raise DataError(f"{p}: not an image source (expected a .npz file or a dataset directory)")
    # torchvision's download root holds the batches one level down
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if (p / sub).is_dir():
            p = p / sub
            break
    if (p / "data_batch_1").is_file() and (p / "test_batch").is_file():
        return _cifar10_source(p)
    if (p / "train").is_file() and (p / "test").is_file() and (p / "meta").is_file():
        return _cifar100_source(p)
    if (p / "train_data_batch_1").is_file() or (p / "val_data").is_file():
        return _imagenet16_source(p)
    folder = _imagefolder_source(p)
    if folder is not None:
        return folder
    raise DataError(
        f"{p}: not an image source: expected a .npz file, cifar-10-batches-py/, cifar-100-python/, "
        "ImageNet16 batches (train_data_batch_*, val_data) or an image folder root/<split>/<class>/*.jpg|png"
    )


def _npz_source(p: Path) -> Source:
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            dataset = str(z["dataset"]) if "dataset" in keys else None
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: cannot read npz ({e})") from e
    splits = _split_order(k[2:] for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys)
    if not splits:
        raise DataError(f"{p}: npz has no x_<split>/y_<split> array pairs (arrays: {sorted(keys)})")
    # cifar10_subset.npz -> "cifar10": the stem up to the first underscore, unless the file names itself
    default = dataset or p.stem.split("_")[0].lower()

    def load(dataset: str, wanted: list[str]) -> Loaded:
        with np.load(p, allow_pickle=False) as z:
            class_names = [str(c) for c in z["class_names"]] if "class_names" in z.files else None
            arrays = {s: (z[f"x_{s}"], z[f"y_{s}"]) for s in wanted}
        num_classes = len(class_names) if class_names else _max_label(arrays) + 1
        return _arrays_loaded(p, arrays, class_names or [str(i) for i in range(num_classes)])

    return Source(p, "npz", default, splits, [p], load)


def _split_order(names: Iterable[str]) -> list[str]:
    """train, val, test first (the order people read manifests in), then the rest alphabetically."""
    rank = {"train": 0, "val": 1, "valid": 1, "test": 2}
    return sorted(set(names), key=lambda s: (rank.get(s, 3), s))


def _cifar10_source(p: Path) -> Source:
    files = {"train": [p / f"data_batch_{i}" for i in range(1, 6)], "test": [p / "test_batch"]}
    return _pickled_source(p, "cifar10", "cifar10", files, p / "batches.meta", "label_names", "labels", side=32)


def _cifar100_source(p: Path) -> Source:
    files = {"train": [p / "train"], "test": [p / "test"]}
    return _pickled_source(p, "cifar100", "cifar100", files, p / "meta", "fine_label_names", "fine_labels", side=32)


def _imagenet16_source(p: Path) -> Source:
    train = sorted(p.glob("train_data_batch_*"), key=lambda f: int(f.name.rsplit("_", 1)[-1]))
    files = {k: v for k, v in {"train": train, "val": [p / "val_data"]}.items() if all(f.is_file() for f in v) and v}
    return _pickled_source(p, "imagenet16", "ImageNet16-120", files, None, None, "labels", side=16, one_based=True)


def _pickled_source(
    p: Path,
    kind: str,
    default: str,
    files: dict[str, list[Path]],
    meta: Path | None,
    names_key: str | None,
    label_key: str,
    side: int,
    one_based: bool = False,
) -> Source:
    """The CIFAR / ImageNet16 family: pickled dicts with 'data' (N, 3*side*side) CHW-flattened uint8."""
    for split_files in files.values():
        for f in split_files:
            if not f.is_file():
                raise DataError(f"{f}: missing batch file of {kind} source {p}")
    all_files = [f for fs in files.values() for f in fs] + ([meta] if meta is not None and meta.is_file() else [])

    def load(dataset: str, wanted: list[str]) -> Loaded:
        arrays = {s: _read_batches(files[s], label_key, side) for s in wanted}
        if one_based:
            # ImageNet16-<k> (NAS-Bench-201) keeps original labels 1..k and shifts them to 0..k-1
            m = re.search(r"-(\d+)$", dataset)
            k = int(m.group(1)) if m else 1000
            arrays = {s: _keep_first_classes(x, y, k) for s, (x, y) in arrays.items()}
            class_names = [str(i) for i in range(1, k + 1)]
        elif meta is not None:
            if not meta.is_file():
                raise DataError(f"{meta}: missing class-name file of {kind} source {p}")
            class_names = [_text(n) for n in _unpickle(meta)[names_key]]
        else:
            class_names = [str(i) for i in range(_max_label(arrays) + 1)]
        return _arrays_loaded(p, arrays, class_names)

    return Source(p, kind, default, list(files), all_files, load)


def _unpickle(f: Path) -> dict[str, Any]:
    try:
        with open(f, "rb") as fh:
            # latin1 reads both python-2 pickles (the official files) and python-3 ones
            obj = pickle.load(fh, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(f"{f}: cannot unpickle batch file ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{f}: expected a pickled dict, got {type(obj).__name__}")
    return {_text(k): v for k, v in obj.items()}


def _text(s: Any) -> str:
    return s.decode("utf-8") if isinstance(s, bytes) else str(s)


def _read_batches(files: list[Path], label_key: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for f in files:
        d = _unpickle(f)
        keys = [k for k in (label_key, "label", "labels") if k in d]
        if "data" not in d or not keys:
            raise DataError(f"{f}: batch dict lacks 'data' or '{label_key}' (keys: {sorted(d)})")
        x, y = np.asarray(d["data"]), np.asarray(d[keys[0]])
        if x.ndim != 2 or x.shape[1] != 3 * side * side or x.dtype != np.uint8:
            raise DataError(
                f"{f}: array 'data' has shape {x.shape} dtype {x.dtype}, expected (N, {3 * side * side}) uint8"
            )
        if y.shape != (len(x),):
            raise DataError(f"{f}: array '{keys[0]}' has shape {y.shape}, expected ({len(x)},) to match 'data'")
        xs.append(x.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))  # CHW-flattened -> NHWC
        ys.append(y.astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _keep_first_classes(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = (y >= 1) & (y <= k)
    return x[keep], y[keep] - 1


def _max_label(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    return max(int(np.max(y)) if len(y) else 0 for _, y in arrays.values())


def _arrays_loaded(p: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], class_names: list[str]) -> Loaded:
    """Validate in-memory (N,H,W,3) uint8 images + labels and wrap them as PNG-encoding sample streams."""
    shape: list[int] | None = None
    splits: dict[str, SplitData] = {}
    for split, (x, y) in arrays.items():
        if x.ndim != 4 or x.shape[3] != 3 or x.dtype != np.uint8:
            raise DataError(f"{p}: array 'x_{split}' has shape {x.shape} dtype {x.dtype}, expected (N, H, W, 3) uint8")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{p}: array 'y_{split}' has shape {y.shape} dtype {y.dtype}, expected (N,) integers")
        if len(y) != len(x):
            raise DataError(f"{p}: array 'y_{split}' has {len(y)} labels but 'x_{split}' has {len(x)} images")
        if len(y) and (y.min() < 0 or y.max() >= len(class_names)):
            raise DataError(
                f"{p}: array 'y_{split}' has labels in [{y.min()}, {y.max()}], expected [0, {len(class_names)})"
            )
        if shape is not None and list(x.shape[1:]) != shape:
            raise DataError(f"{p}: array 'x_{split}' has images of shape {x.shape[1:]}, other splits {tuple(shape)}")
        shape = list(x.shape[1:])
        splits[split] = SplitData(len(x), _png_samples(x, y))
    return Loaded(class_names, shape, splits)


def _png_samples(x: np.ndarray, y: np.ndarray) -> Callable[[], Iterator[Sample]]:
    def gen() -> Iterator[Sample]:
        for img, label in zip(x, y):
            buf = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(img), "RGB").save(buf, format="PNG")
            yield "png", buf.getvalue(), int(label)

    return gen


def _imagefolder_source(p: Path) -> Source | None:
    """root/<split>/<class>/<image>; None when `p` does not look like that."""
    layout: dict[str, dict[str, list[Path]]] = {}
    for split_dir in sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")):
        classes = {}
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")):
            images = sorted(
                Path(e.path)
                for e in os.scandir(class_dir)
                if e.is_file() and Path(e.name).suffix.lower() in _IMAGE_SUFFIXES and not e.name.startswith(".")
            )
            if images:
                classes[class_dir.name] = images
        if classes:
            layout[split_dir.name] = classes
    if not layout:
        return None
    # One label space for all splits (a class missing from val must not shift the others' labels)
    class_names = sorted({c for classes in layout.values() for c in classes})
    files = [f for classes in layout.values() for fs in classes.values() for f in fs]

    def load(dataset: str, wanted: list[str]) -> Loaded:
        splits = {}
        for s in wanted:
            items = [(f, class_names.index(c)) for c, fs in layout[s].items() for f in fs]
            splits[s] = SplitData(len(items), _encoded_samples(items))
        return Loaded(class_names, None, splits)

    return Source(p, "imagefolder", p.name.lower(), _split_order(layout), files, load, hash_content=False)


def _encoded_samples(items: list[tuple[Path, int]]) -> Callable[[], Iterator[Sample]]:
    def gen() -> Iterator[Sample]:
        for f, label in items:
            data = f.read_bytes()
            # The field follows the content, not the file name (ImageNet has PNGs named .JPEG)
            if data[:2] == b"\xff\xd8":
                ext = "jpg"
            elif data[:8] == b"\x89PNG\r\n\x1a\n":
                ext = "png"
            else:
                raise DataError(f"{f}: neither a JPEG nor a PNG file")
            yield ext, data, label

    return gen


# --------------------------------------------------------------------------- fingerprint & manifest


def fingerprint(source: Source) -> str:
    """sha256 over the source files' content, or over (name, size, mtime) for big directories."""
    h = hashlib.sha256()
    hash_content = source.hash_content and sum(f.stat().st_size for f in source.files) <= _HASH_CONTENT_LIMIT
    h.update(b"content" if hash_content else b"stat")
    for f in sorted(source.files):
        rel = f.relative_to(source.path).as_posix() if f != source.path else f.name
        st = f.stat()
        h.update(f"\0{rel}\0{st.st_size}\0".encode())
        if hash_content:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        else:
            h.update(str(st.st_mtime_ns).encode())
    return h.hexdigest()


def manifest_path(out_dir: str | os.PathLike, dataset: str) -> Path:
    return Path(out_dir) / f"{dataset}-manifest.json"


def _up_to_date(out: Path, dataset: str, wanted: dict[str, Any], verify: bool) -> dict[str, Any] | None:
    """The existing manifest if it matches `wanted` (source fingerprint, settings) and its shards are intact."""
    try:
        manifest = json.loads(manifest_path(out, dataset).read_text())
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("dataset") != dataset:
            return None
        if manifest["source"]["fingerprint"] != wanted["source"]["fingerprint"]:
            return None
        if manifest.get("settings") != wanted["settings"]:
            return None
        for info in manifest["splits"].values():
            for shard in info["shards"]:
                f = out / shard["name"]
                if not f.is_file() or f.stat().st_size != shard["size"]:
                    return None
                if verify and file_sha256(f) != shard["sha256"]:
                    return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or unreadable manifest: rebuild
    return manifest


def plan_shards(n: int, shard_size: int, min_shards: int) -> list[int]:
    """Samples per shard: ceil(n / shard_size) shards but at least min(min_shards, n), sizes as equal as possible.

    Equal sizes matter: under DDP a rank or worker that gets fewer samples than the others hangs the job.
    """
    if n <= 0:
        return []
    k = max(math.ceil(n / shard_size), min(min_shards, n))
    base, extra = divmod(n, k)
    return [base + 1 if i < extra else base for i in range(k)]


# --------------------------------------------------------------------------- writing


def _write_shard(path: Path, samples: Iterator[Sample], split: str, start: int, count: int) -> None:
    """Write `count` samples (keys {split}_{index:07d} from `start`) into one tar file, fsynced."""
    with open(path, "wb") as fh:
        with wds.TarWriter(fh, encoder=False, mtime=_TAR_MTIME) as sink:
            for i in range(start, start + count):
                try:
                    ext, data, label = next(samples)
                except StopIteration:
                    raise DataError(f"{path.name}: source ran out of samples at {split} index {i}") from None
                # no dots in keys: webdataset splits the sample key from the field at the first dot
                sink.write({"__key__": f"{split}_{i:07d}", ext: data, "cls": str(label).encode("ascii")})
        fh.flush()
        os.fsync(fh.fileno())


@contextlib.contextmanager
def _locked(out: Path, dataset: str) -> Iterator[None]:
    """Serialise concurrent preparations of the same dataset (e.g. several ranks finding shards missing)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f".{dataset}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prepare_images(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    dataset: str | None = None,
    shard_size: int = 1000,
    min_shards: int = 4,
    splits: Sequence[str] | None = None,
    verify: bool = False,
) -> dict[str, Any]:
    """Write the image source as WebDataset shards plus manifest; return the manifest.

    Does nothing when the manifest in `out_dir` already matches the source fingerprint and the settings and
    all its shards are present with the recorded sizes (and sha256, when `verify`). The returned dict is the
    manifest plus `"skipped": bool` (that key is not written to the file).
    """
    if shard_size < 1 or min_shards < 1:
        raise ConfigError(f"shard_size and min_shards must be >= 1 (got {shard_size}, {min_shards})")
    src = detect_source(source)
    dataset = dataset or src.default_dataset
    if not _DATASET_NAME.match(dataset):
        raise ConfigError(f"dataset name {dataset!r} may only contain letters, digits, '_' and '-'")
    wanted_splits = _split_order(splits) if splits else list(src.split_names)  # order-insensitive settings
    unknown = [s for s in wanted_splits if s not in src.split_names]
    if unknown:
        raise DataError(f"{src.path}: no split(s) {unknown}; the source has {src.split_names}")
    bad = [s for s in wanted_splits if not re.match(r"^[A-Za-z0-9]+$", s)]
    if bad:
        raise ConfigError(f"split names {bad} may only contain letters and digits (they go into keys and file names)")

    out = Path(out_dir).expanduser().resolve()
    header = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "source": {"path": str(src.path), "kind": src.kind, "fingerprint": fingerprint(src)},
        "settings": {"shard_size": shard_size, "min_shards": min_shards, "splits": wanted_splits},
    }
    with _locked(out, dataset):
        existing = _up_to_date(out, dataset, header, verify)
        if existing is not None:
            log.info("%s: shards of %s are up to date, nothing to do", out, dataset)
            return {**existing, "skipped": True}
        manifest = _write_all(src, out, dataset, header, wanted_splits)
    return {**manifest, "skipped": False}


def _write_all(src: Source, out: Path, dataset: str, header: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    loaded = src.load(dataset, wanted)
    manifest: dict[str, Any] = {
        **header,
        "num_classes": len(loaded.class_names),
        "class_names": loaded.class_names,
        "image_shape": loaded.image_shape,
        "splits": {},
    }
    # The temporary directory sits next to `out` (same filesystem, so the final moves are renames)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{dataset}.", suffix=".tmp", dir=out.parent))
    try:
        for split in wanted:
            data = loaded.splits[split]
            if data.count == 0:
                raise DataError(f"{src.path}: split '{split}' has no images")
            samples, start, shards = data.samples(), 0, []
            for i, count in enumerate(plan_shards(data.count, header["settings"]["shard_size"],
                                                  header["settings"]["min_shards"])):
                name = f"{dataset}-{split}-{i:06d}.tar"
                _write_shard(tmp / name, samples, split, start, count)
                shards.append({"name": name, "count": count, "size": (tmp / name).stat().st_size,
                               "sha256": file_sha256(tmp / name)})
                start += count
            manifest["splits"][split] = {"count": data.count, "shards": shards}
            log.info("%s: %s split, %d images in %d shards", dataset, split, data.count, len(shards))
        _install(tmp, out, dataset, manifest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _install(tmp: Path, out: Path, dataset: str, manifest: dict[str, Any]) -> None:
    """Move finished shards from `tmp` into `out`, drop shards only the old manifest listed, write the manifest."""
    mpath = manifest_path(out, dataset)
    old_names: set[str] = set()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        old = json.loads(mpath.read_text())
        old_names = {s["name"] for info in old["splits"].values() for s in info["shards"]}
    # Manifest first: while shards are being swapped, readers must not trust a manifest at all.
    mpath.unlink(missing_ok=True)
    new_names = {s["name"] for info in manifest["splits"].values() for s in info["shards"]}
    for name in sorted(new_names):
        os.replace(tmp / name, out / name)
    prefix = f"{dataset}-"
    for name in sorted(old_names - new_names):
        # only delete plain file names of our own dataset (a hand-edited manifest must not delete elsewhere)
        if Path(name).name == name and name.startswith(prefix) and name.endswith(".tar"):
            (out / name).unlink(missing_ok=True)
    atomic_write_json(mpath, manifest)


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="npz file or dataset directory")
    parser.add_argument("--out", required=True, help="output directory for shards and manifest")
    parser.add_argument("--dataset", default=None, help="dataset name (default: from the source)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (at most)")
    parser.add_argument("--min-shards", type=int, default=4, help="at least this many shards per split")
    parser.add_argument("--splits", default=None, help="comma-separated splits (default: all in the source)")
    parser.add_argument("--verify", action="store_true", help="also check shard sha256 before skipping")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    t0 = time.perf_counter()
    try:
        m = prepare_images(args.source, args.out, args.dataset, args.shard_size, args.min_shards, splits, args.verify)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_shards = sum(len(s["shards"]) for s in m["splits"].values())
    what = "up to date, skipped" if m["skipped"] else "wrote"
    counts = ", ".join(f"{k}={v['count']}" for k, v in m["splits"].items())
    print(f"{m['dataset']}: {what} {n_shards} shards ({counts}) in {args.out} [{time.perf_counter() - t0:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
