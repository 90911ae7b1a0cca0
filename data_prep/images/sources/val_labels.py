"""Labels of the flat ImageNet-1k validation images (ILSVRC2012_img_val.tar, or a flat val/ folder).

Supported label files (`--labels PATH`, or found next to the images under the names below):

  devkit       ILSVRC2012_devkit_t12.tar.gz, its unpacked folder, or data/ILSVRC2012_validation_ground_truth.txt
               with data/meta.mat beside it: line i holds the 1-based ILSVRC2012_ID of ILSVRC2012_val_<i:08d>;
               meta.mat's `synsets` maps ILSVRC2012_ID -> WNID (read with scipy.io.loadmat).
  LOC csv      LOC_val_solution.csv (the Kaggle ImageNet localisation files): `ImageId,PredictionString`,
               the label is the first WNID of PredictionString.
  text         one `filename label` pair per line (whitespace or comma separated; `#` comments); filename is
               the image's name or stem; label is a WNID / class name, or a 0-based class index.

Class indices follow the sorted WNIDs (torchvision's ImageFolder and timm order), not the ILSVRC2012_IDs.
"""
from __future__ import annotations

import csv
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.errors import DataError

GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
DEVKIT_TAR = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_DIR = "ILSVRC2012_devkit_t12"
LOC_CSV = "LOC_val_solution.csv"
# Looked for next to the val tar / in the source folder, in this order
KNOWN_NAMES = (LOC_CSV, DEVKIT_TAR, DEVKIT_DIR, GROUND_TRUTH, "val_labels.txt")
_WNID = re.compile(r"^n\d{8}$")


@dataclass
class ValLabels:
    path: Path
    format: str                        # "devkit" | "loc_csv" | "text"
    by_stem: dict[str, str | int]      # image stem -> class name (WNID) or 0-based class index
    classes: list[str] | None          # the full class list the file defines (devkit: all leaf synsets), sorted

    def resolve(self, stems: list[str], classes: list[str] | None, where: str) -> tuple[list[int], list[str]]:
        """0-based labels of the images `stems` and the class list (given, else the file's)."""
        if classes is None:
            named = sorted({v for v in self.by_stem.values() if isinstance(v, str)})
            if named:
                classes = self.classes or named
            else:
                classes = [str(i) for i in range(max((int(v) for v in self.by_stem.values()), default=-1) + 1)]
        index = {c: i for i, c in enumerate(classes)}
        labels = []
        for stem in stems:
            if stem not in self.by_stem:
                raise DataError(f"{where}: image {stem!r} has no label in {self.path} ({self.format} format)")
            value = self.by_stem[stem]
            if isinstance(value, int):
                if not 0 <= value < len(classes):
                    raise DataError(f"{self.path}: label {value} of {stem!r} is outside [0, {len(classes)})")
                labels.append(value)
            elif value in index:
                labels.append(index[value])
            else:
                raise DataError(f"{self.path}: label {value!r} of {stem!r} is not one of the {len(classes)} "
                                f"classes ({', '.join(classes[:3])}, ...)")
        return labels, classes


def find_val_labels(folders: list[Path], given: Path | None) -> ValLabels | None:
    if given is not None:
        return read_val_labels(given)
    for folder in folders:
        for name in KNOWN_NAMES:
            if (folder / name).exists():
                return read_val_labels(folder / name)
    return None


def read_val_labels(path: Path) -> ValLabels:
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{path}: label file does not exist")
    if path.is_dir():
        data = path / "data" if (path / "data" / GROUND_TRUTH).is_file() else path
        if not (data / GROUND_TRUTH).is_file():
            raise DataError(f"{path}: not an ImageNet devkit folder (no data/{GROUND_TRUTH})")
        return _devkit(path, (data / GROUND_TRUTH).read_text(), _open_bytes(data / "meta.mat", path))
    if path.name.endswith((".tar.gz", ".tgz")):
        return _devkit_tar(path)
    raw = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv" and raw.lstrip().startswith("ImageId"):
        return _loc_csv(path, raw)
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    if lines and all(ln.isdigit() for ln in lines[:100]):
        return _devkit(path, raw, _open_bytes(path.parent / "meta.mat", path))
    return _text(path, lines)


def _open_bytes(meta: Path, owner: Path) -> bytes:
    if not meta.is_file():
        raise DataError(f"{owner}: the devkit ground truth needs {meta} (ILSVRC2012_ID -> WNID)")
    return meta.read_bytes()


def _devkit_tar(path: Path) -> ValLabels:
    try:
        with tarfile.open(path) as tar:
            found = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            if GROUND_TRUTH not in found or "meta.mat" not in found:
                raise DataError(f"{path}: devkit archive lacks data/{GROUND_TRUTH} or data/meta.mat")
            gt = tar.extractfile(found[GROUND_TRUTH]).read().decode()
            meta = tar.extractfile(found["meta.mat"]).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the devkit archive ({type(e).__name__}: {e})") from e
    return _devkit(path, gt, meta)


def _devkit(path: Path, ground_truth: str, meta_mat: bytes) -> ValLabels:
    wnid_of = _synsets(path, io.BytesIO(meta_mat))
    by_stem: dict[str, str | int] = {}
    for line_no, line in enumerate((ln for ln in ground_truth.splitlines() if ln.strip()), start=1):
        try:
            ilsvrc_id = int(line)
        except ValueError:
            raise DataError(f"{path}: ground-truth line {line_no} is {line!r}, expected an ILSVRC2012_ID") from None
        if ilsvrc_id not in wnid_of:
            raise DataError(f"{path}: ground-truth line {line_no} has ILSVRC2012_ID {ilsvrc_id}, not a leaf "
                            f"synset of meta.mat (ids 1..{len(wnid_of)})")
        by_stem[f"ILSVRC2012_val_{line_no:08d}"] = wnid_of[ilsvrc_id]
    return ValLabels(path, "devkit", by_stem, sorted(wnid_of.values()))


def _synsets(path: Path, fh: IO[bytes]) -> dict[int, str]:
    """meta.mat's leaf synsets (num_children == 0): ILSVRC2012_ID -> WNID."""
    from scipy.io import loadmat  # scipy is a dependency; imported here to keep worker start-up light

    try:
        synsets = loadmat(fh, squeeze_me=True)["synsets"]
        names = synsets.dtype.names or ()
        if not {"ILSVRC2012_ID", "WNID", "num_children"} <= set(names):
            raise KeyError(f"synsets fields {names}")
        return {int(_scalar(s["ILSVRC2012_ID"])): str(_scalar(s["WNID"]))
                for s in synsets.ravel() if int(_scalar(s["num_children"])) == 0}
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: meta.mat lacks the devkit's synsets table ({e})") from e


def _scalar(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _loc_csv(path: Path, raw: str) -> ValLabels:
    reader = csv.reader(io.StringIO(raw))
    header = next(reader)
    if header[:2] != ["ImageId", "PredictionString"]:
        raise DataError(f"{path}: header {header}, expected ImageId,PredictionString (LOC_val_solution.csv)")
    by_stem: dict[str, str | int] = {}
    for row_no, row in enumerate(reader, start=2):
        if not row:
            continue
        tokens = row[1].split() if len(row) > 1 else []
        if not tokens or not _WNID.match(tokens[0]):
            raise DataError(f"{path}: row {row_no} ({row[0] if row else ''}) has no WNID in PredictionString")
        by_stem[Path(row[0]).stem if "." in row[0] else row[0]] = tokens[0]
    return ValLabels(path, "loc_csv", by_stem, None)


def _text(path: Path, lines: list[str]) -> ValLabels:
    by_stem: dict[str, str | int] = {}
    kinds = set()
    for line_no, line in enumerate(lines, start=1):
        if line.startswith("#"):
            continue
        parts = line.replace(",", " ").split()
        if len(parts) != 2:
            raise DataError(f"{path}: line {line_no} is {line!r}, expected 'filename label'")
        name, label = parts
        value: str | int = int(label) if label.lstrip("-").isdigit() else label
        kinds.add(type(value))
        if len(kinds) > 1:
            raise DataError(f"{path}: line {line_no} mixes class indices and class names")
        by_stem[Path(name).stem] = value
    if not by_stem:
        raise DataError(f"{path}: no 'filename label' lines")
    return ValLabels(path, "text", by_stem, None)
