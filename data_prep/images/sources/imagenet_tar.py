"""The official ImageNet-1k (ILSVRC2012) tars, read in place (no extraction).

  ILSVRC2012_img_train.tar   a tar of 1000 per-class tars n01440764.tar ... each holding that class's JPEGs
  ILSVRC2012_img_val.tar     50,000 flat JPEGs ILSVRC2012_val_00000001.JPEG ...; labels from a label file
                             (val_labels.py: the devkit, LOC_val_solution.csv or a `filename label` text file)

`--source` is either tar (one split: train or val) or a folder holding both tars (and the val label file):
then train and val share one manifest and one class list. Classes are the sorted WNIDs, the same order
(and the same sample keys) as an ImageFolder tree extracted from these tars.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.images.base import Catalog, Source, SourceOptions, SplitItems, TarRangePayload, is_image_name
from data_prep.images.sources import val_labels
from data_prep.images.sources.registry import SOURCES
from data_prep.images.sources.tarindex import Member, list_members
from pipeline.errors import DataError

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"


@SOURCES.register("imagenet-tar")
def detect_imagenet_tar(p: Path, options: SourceOptions) -> Source | None:
    tars: dict[str, Path] = {}
    if p.is_file() and p.suffix == ".tar":
        tars[_layout(p)] = p
    elif p.is_dir():
        tars = {s: p / n for s, n in (("train", TRAIN_TAR), ("val", VAL_TAR)) if (p / n).is_file()}
        for split, tar in tars.items():
            if _layout(tar) != split:
                raise DataError(f"{tar}: expected the {split} layout (" + (
                    "a tar of per-class tars)" if split == "train" else "flat JPEGs)"))
    if not tars:
        return None
    labels = None
    if "val" in tars:
        labels = val_labels.find_val_labels([tars["val"].parent], options.labels)
        if labels is None:
            raise DataError(f"{tars['val']}: the flat val images need labels: pass --labels FILE "
                            f"(the devkit {val_labels.DEVKIT_TAR}, {val_labels.LOC_CSV}, or a 'filename label' "
                            f"text file) or put one of {list(val_labels.KNOWN_NAMES)} next to the tar")
    files = list(tars.values()) + ([labels.path] if labels is not None and labels.path.is_file() else [])

    def catalog(dataset: str, wanted: list[str]) -> Catalog:
        # the train tar defines the classes whenever it is part of the source, even if only val is wanted
        train = _index_train(tars["train"]) if "train" in wanted else None
        classes = sorted(train) if train is not None else _train_classes(tars["train"]) if "train" in tars else None
        splits: dict[str, SplitItems] = {}
        if "train" in wanted:
            items = [(m, c) for c, wnid in enumerate(classes) for m in train[wnid]]
            splits["train"] = _items(tars["train"], [m for m, _ in items], np.array([c for _, c in items]),
                                     lambda m, t=tars["train"]: f"{t}:{m.name}")
        if "val" in wanted:
            with open(tars["val"], "rb") as fh:
                members = sorted((m for m in list_members(fh, str(tars["val"])) if is_image_name(m.name)),
                                 key=lambda m: m.name)
            nested = [m.name for m in members if Path(m.name).parent != Path(".")]
            if nested:
                raise DataError(f"{tars['val']}: expected flat JPEGs (the val layout), found {nested[0]!r}")
            labels_, classes = labels.resolve([Path(m.name).stem for m in members], classes, str(tars["val"]))
            splits["val"] = _items(tars["val"], members, np.array(labels_, dtype=np.int64),
                                   lambda m, t=tars["val"]: f"{t}:{m.name}")
        return Catalog(classes, None, splits)

    default = "imagenet1k"
    notes = {"val_labels": f"{labels.format}: {labels.path}"} if labels is not None else {}
    return Source(p, "imagenet-tar", default, [s for s in ("train", "val") if s in tars], files, catalog,
                  hash_content=True, notes=notes)


def _layout(tar: Path) -> str:
    """'train' when the first file member is a tar, 'val' when it is an image."""
    import tarfile

    try:
        with tarfile.open(tar, mode="r:") as t:
            first = next((m for m in t if m.isfile()), None)
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{tar}: cannot read tar ({type(e).__name__}: {e})") from e
    if first is None:
        raise DataError(f"{tar}: tar holds no files")
    if first.name.endswith(".tar"):
        return "train"
    if is_image_name(first.name):
        return "val"
    raise DataError(f"{tar}: first member {first.name!r} is neither a per-class tar (train layout) "
                    "nor a JPEG (val layout)")


def _train_classes(tar: Path) -> list[str]:
    """The WNIDs of the per-class tars (outer listing only: 1000 headers, not 1.28 M)."""
    with open(tar, "rb") as fh:
        return sorted(Path(m.name).stem for m in list_members(fh, str(tar)) if m.name.endswith(".tar"))


def _index_train(tar: Path) -> dict[str, list[Member]]:
    """WNID -> its images (sorted by name), from the per-class tars inside the train tar."""
    classes: dict[str, list[Member]] = {}
    with open(tar, "rb") as fh:
        for outer in list_members(fh, str(tar)):
            if not outer.name.endswith(".tar"):
                raise DataError(f"{tar}: member {outer.name!r} is not a per-class tar (expected n01440764.tar ...)")
            wnid = Path(outer.name).stem
            inner = list_members(fh, f"{tar}:{outer.name}", outer.offset, outer.size)
            images = sorted((m for m in inner if is_image_name(m.name)), key=lambda m: m.name)
            if not images:
                raise DataError(f"{tar}:{outer.name}: per-class tar holds no .JPEG images")
            # member names shown in errors and in the manifest's `skipped`: class tar + image
            classes[wnid] = [Member(f"{outer.name}:{m.name}", m.offset, m.size) for m in images]
    return classes


def _items(tar: Path, members: list[Member], labels: np.ndarray, name) -> SplitItems:
    offsets = np.array([m.offset for m in members], dtype=np.int64)
    sizes = np.array([m.size for m in members], dtype=np.int64)
    return SplitItems(
        labels=labels.astype(np.int64),
        name=lambda i: name(members[i]),
        payload=lambda idx: TarRangePayload(str(tar), list(zip(offsets[idx].tolist(), sizes[idx].tolist()))),
        sizes=sizes,
    )
