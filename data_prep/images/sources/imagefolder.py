"""ImageFolder trees, as users keep ImageNet-1k: class folders of JPEGs (PNGs too); the bytes are kept as they are.

  root/<split>/<class>/<image>   splits with class folders (imagenet/train/n01440764/*.JPEG, imagenet/val/...)
  root/<class>/<image>           root is one split, named after root when it is train/val/valid/test, else train
  root/<split>/<image>           a flat split (val/ILSVRC2012_val_00000001.JPEG ...) labelled by a label file
                                 (`--labels`, or one of val_labels.KNOWN_NAMES in the split folder or root)

Classes are the sorted union of class-folder names over all splits (a class missing from val does not
shift the other labels). A folder where a class folder is expected but that holds no images directly
(an empty folder, a folder of folders, notes) is an error naming it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from data_prep.images.base import Catalog, FilePayload, Source, SourceOptions, SplitItems, is_image_name, split_order
from data_prep.images.sources import val_labels
from data_prep.images.sources.registry import SOURCES
from pipeline.errors import DataError

SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}


def _scan(d: Path) -> tuple[list[os.DirEntry], list[Path]]:
    """(image files, sub-folders) directly inside `d`, sorted by name, hidden entries left out."""
    images, dirs = [], []
    with os.scandir(d) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                dirs.append(Path(e.path))
            elif e.is_file() and is_image_name(e.name):
                images.append(e)
    return sorted(images, key=lambda e: e.name), sorted(dirs)


@SOURCES.register("imagefolder")
def detect_imagefolder(p: Path, options: SourceOptions) -> Source | None:
    if not p.is_dir():
        return None
    top = {d: _scan(d) for d in _scan(p)[1]}
    split_like = [d for d, (_, sub) in top.items() if sub]
    flat = [d for d, (imgs, sub) in top.items() if imgs and not sub and d.name.lower() in SPLIT_NAMES]
    class_like = [d for d, (imgs, sub) in top.items() if imgs and not sub and d not in flat]
    if class_like and (split_like or flat):
        other = (split_like or flat)[0]
        raise DataError(f"{p}: mixes class folders ({class_like[0].name}/ holds images) and split folders "
                        f"({other.name}/ holds {'class folders' if other in split_like else 'images of a split'})")
    if class_like:
        split = p.name.lower() if p.name.lower() in SPLIT_NAMES else "train"
        layout = {split: {"classes": _classes(p, top)}}
    elif split_like or flat:
        if not any(_scan(c)[0] for d in split_like for c in top[d][1]) and not flat:
            return None  # folders of folders without images: not an image folder at all
        layout = {}
        for d in sorted(top):
            imgs, sub = top[d]
            if d in flat:
                layout[d.name] = {"flat": imgs}
            elif sub and imgs:
                raise DataError(f"{d}: holds both images and folders; expected class folders only "
                                f"(e.g. {sub[0].name}/) or only images (a flat split with a label file)")
            elif sub:
                layout[d.name] = {"classes": _classes(d, {c: _scan(c) for c in sub})}
            else:
                raise DataError(f"{d}: not a split folder: no class folders or images inside")
    else:
        return None

    class_names = sorted({c for s in layout.values() for c in s.get("classes", {})})
    labels = None
    if any("flat" in s for s in layout.values()):
        flat_dirs = [p / name for name, s in layout.items() if "flat" in s]
        labels = val_labels.find_val_labels(flat_dirs + [p], options.labels)
        if labels is None:
            raise DataError(f"{flat_dirs[0]}: flat images need labels: pass --labels FILE (the devkit, "
                            f"{val_labels.LOC_CSV} or a 'filename label' text file)")
    entries_all = [e for s in layout.values() for es in list(s.get("classes", {}).values()) + [s.get("flat", [])]
                   for e in es]
    sizes = {e.path: e.stat().st_size for e in entries_all}
    files = [Path(e.path) for e in entries_all]
    if labels is not None and labels.path.is_file():
        files.append(labels.path)

    def catalog(dataset: str, wanted: list[str]) -> Catalog:
        classes = class_names or None
        splits = {}
        for s in wanted:
            if "classes" in layout[s]:
                index = {c: i for i, c in enumerate(class_names)}
                entries = [(e, index[c]) for c, es in layout[s]["classes"].items() for e in es]
            else:
                imgs = layout[s]["flat"]
                lab, classes = labels.resolve([Path(e.name).stem for e in imgs], classes, str(p / s))
                entries = list(zip(imgs, lab))
            paths = [e.path for e, _ in entries]
            splits[s] = SplitItems(
                labels=np.array([lab for _, lab in entries], dtype=np.int64),
                name=lambda i, _paths=paths: _paths[i],
                payload=lambda idx, _paths=paths: FilePayload([_paths[i] for i in idx]),
                sizes=np.array([sizes[path] for path in paths], dtype=np.int64),
            )
        return Catalog(classes or [], None, splits)

    notes = {"val_labels": f"{labels.format}: {labels.path}"} if labels is not None else {}
    return Source(p, "imagefolder", p.name.lower(), split_order(layout), files, catalog, hash_content=False,
                  notes=notes)


def _classes(split_dir: Path, scanned: dict[Path, tuple[list[os.DirEntry], list[Path]]]) -> dict[str, list]:
    classes = {}
    for d, (imgs, sub) in sorted(scanned.items()):
        if sub:
            raise DataError(f"{sub[0]}: folder inside the class folder {d.name}/; expected {split_dir} to hold "
                            "class folders of images (is --source one level too high?)")
        if not imgs:
            raise DataError(f"{d}: not a class folder: no .jpg/.jpeg/.png images directly inside")
        classes[d.name] = imgs
    return classes
