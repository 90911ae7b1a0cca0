"""Small image sets written in the official layouts (ImageFolder, ILSVRC2012 tars, devkit, pickled batches)."""
from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image


def jpeg_bytes(rng: np.random.Generator, w: int = 40, h: int = 30, quality: int = 90) -> bytes:
    """A smooth random image plus noise, JPEG-encoded (real-looking content, a few kB)."""
    low = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(rng: np.random.Generator, w: int = 20, h: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, files: dict[str, dict[str, list[bytes]]]) -> dict[tuple[str, str, int], bytes]:
    """root/<split>/<class>/<class>_<i>.JPEG from {split: {class: [bytes, ...]}}."""
    written = {}
    for split, classes in files.items():
        for cls, images in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i, data in enumerate(images):
                (root / split / cls / f"{cls}_{i}.JPEG").write_bytes(data)
                written[(split, cls, i)] = data
    return written


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def train_tar(path: Path, classes: dict[str, list[bytes]]) -> None:
    """ILSVRC2012_img_train.tar layout: a tar of <wnid>.tar, each holding <wnid>_<i>.JPEG."""
    inner = {f"{wnid}.tar": _tar_bytes({f"{wnid}_{i}.JPEG": d for i, d in enumerate(images)})
             for wnid, images in classes.items()}
    path.write_bytes(_tar_bytes(inner))


def val_tar(path: Path, images: list[bytes]) -> list[str]:
    """ILSVRC2012_img_val.tar layout: flat ILSVRC2012_val_<i:08d>.JPEG (1-based)."""
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, len(images) + 1)]
    path.write_bytes(_tar_bytes(dict(zip(names, images))))
    return names


def devkit(folder: Path, synsets: list[tuple[int, str, int]], ground_truth: list[int], as_tar: bool = True) -> Path:
    """The devkit's data/meta.mat (synsets: ILSVRC2012_ID, WNID, num_children) + data/ground_truth.txt."""
    from scipy.io import savemat

    data = folder / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    table = np.zeros((len(synsets), 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"),
                                              ("num_children", "O")])
    for row, (ident, wnid, children) in enumerate(synsets):
        table[row, 0] = (np.array([[ident]]), np.array([wnid]), np.array([f"words {wnid}"]), np.array([[children]]))
    savemat(data / "meta.mat", {"synsets": table})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ground_truth))
    if not as_tar:
        return folder / "ILSVRC2012_devkit_t12"
    out = folder / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        tar.add(folder / "ILSVRC2012_devkit_t12", arcname="ILSVRC2012_devkit_t12")
    return out


def pickle_dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def formats() -> SimpleNamespace:
    return SimpleNamespace(jpeg=jpeg_bytes, png=png_bytes, image_folder=image_folder, train_tar=train_tar,
                           val_tar=val_tar, devkit=devkit, pickle=pickle_dump, tar_bytes=_tar_bytes)
