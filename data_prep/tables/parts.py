"""Reading one source file: tables from CSV / Parquet, canonical architectures, per-file checks.

A `Part` is one source file, parsed: its canonical archs (one per row) and the output columns it
supplies; build.py joins parts by canonical architecture.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import ArchError, DataError
from pipeline.spaces import SearchSpace

EXAMPLES = 3  # how many offending archs / rows an error message shows


def snake_case(name: str) -> str:
    """`ImageNet16-120` -> `image_net16_120`, `cifar10valid` stays: camelCase and punctuation become `_`."""
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()


def examples(items: Sequence[Any]) -> str:
    shown = ", ".join(str(x) for x in list(items)[:EXAMPLES])
    return shown + (", ..." if len(items) > EXAMPLES else "")


def is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def float_array(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 numpy array, nulls as NaN."""
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def row_where(path: Path, row: int) -> str:
    # CSV rows are also given as file lines (header = line 1) so an editor jumps right to them
    return f"row {row} (line {row + 2})" if path.suffix.lower() == ".csv" else f"row {row}"


def read_source(path: str | os.PathLike, string_columns: Sequence[str] = (),
                include: Sequence[str] | None = None) -> pa.Table:
    """Read a CSV (pyarrow.csv) or Parquet file; DataError naming the file if that fails."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: input file does not exist")
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path, columns=list(include) if include else None)
        if path.suffix.lower() in (".csv", ".tsv"):
            convert = pacsv.ConvertOptions(
                # arch columns stay strings even if a value happens to look numeric
                column_types={c: pa.string() for c in string_columns},
                include_columns=list(include) if include else None,
            )
            parse = pacsv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            return pacsv.read_csv(path, parse_options=parse, convert_options=convert)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read table ({e})") from e
    raise DataError(f"{path}: unsupported file type {path.suffix!r} (expected .csv, .tsv or .parquet)")


def require_columns(path: Path, table: pa.Table, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; columns: {', '.join(table.column_names)}")


class ArchCache:
    """Canonical strings and parsed archs; each distinct text is parsed once (the same arch shows up
    in several files, as an arch string in one and a NASLib tuple in another)."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.canonical: dict[Any, str] = {}  # source text -> canonical string
        self.parsed: dict[str, Any] = {}  # canonical string -> the space's arch object

    def canon(self, text: Any) -> str:
        c = self.canonical.get(text)
        if c is None:
            arch = self.space.parse(text)
            c = self.canonical[text] = self.space.to_str(arch)
            self.parsed[c] = arch
        return c


def canonical_archs(path: Path, column: str, values: Sequence[Any], cache: ArchCache) -> list[str]:
    """Canonical arch strings of a column; a bad entry -> DataError naming file, column, row and arch."""
    out = []
    for row, text in enumerate(values):
        if text is None:
            raise DataError(f"{path}: column {column!r}, {row_where(path, row)}: empty architecture")
        try:
            out.append(cache.canon(text))
        except ArchError as e:
            raise DataError(f"{path}: column {column!r}, {row_where(path, row)}: bad architecture "
                            f"{text!r}: {e}") from e
    return out


def check_unique(path: Path, archs: Sequence[str], keys: Sequence[Any] | None = None) -> None:
    """Duplicate architectures in one file -> DataError naming them and their rows (or source keys)."""
    counts = Counter(archs)
    dups = [a for a, c in counts.items() if c > 1]
    if dups:
        rows: dict[str, list[str]] = {a: [] for a in dups[:EXAMPLES]}
        for i, a in enumerate(archs):
            if a in rows:
                rows[a].append(str(i) if keys is None else repr(keys[i]))
        what = "rows" if keys is None else "keys"
        shown = "; ".join(f"{a} ({what} {', '.join(r)})" for a, r in rows.items())
        raise DataError(f"{path}: {len(dups)} architecture(s) occur more than once: {shown}"
                        + ("; ..." if len(dups) > EXAMPLES else ""))


def check_full(path: Path, archs: Sequence[str], space: SearchSpace, expected: int) -> None:
    """A full benchmark file holds every architecture of the space exactly once."""
    unique = set(archs)
    if len(archs) == expected and len(unique) == expected:
        return
    dups = sorted(a for a, c in Counter(archs).items() if c > 1)
    missing = sorted(set(space.to_str(a) for a in space.enumerate()) - unique)
    raise DataError(
        f"{path}: expected {expected} unique {space.name} architectures, found {len(unique)} in {len(archs)} rows"
        + (f"; {len(dups)} duplicated: {examples(dups)}" if dups else "")
        + (f"; {len(missing)} missing: {examples(missing)}" if missing else "")
    )


@dataclass
class Part:
    """One source file, parsed: canonical archs (one per row) and the output columns it supplies."""

    path: Path
    archs: list[str]
    columns: dict[str, np.ndarray]
    index: np.ndarray | None = None  # benchmark index per row, when the file knows it
    full: bool = False  # must cover the whole space
    sha256: str = ""
    row_of: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.row_of = {a: i for i, a in enumerate(self.archs)}


def index_column(path: Path, table: pa.Table, name: str) -> np.ndarray:
    col = table[name]
    if not pa.types.is_integer(col.type) or col.null_count:
        raise DataError(f"{path}: index column {name!r} must hold integers without gaps, got {col.type}")
    return col.to_numpy().astype(np.int64)


def check_index_unique(part: Part) -> None:
    # checked after the archs: a duplicated row is better reported by its arch than by its index
    if part.index is not None and len(np.unique(part.index)) != len(part.index):
        values, counts = np.unique(part.index, return_counts=True)
        raise DataError(f"{part.path}: index column has repeated values: {examples(values[counts > 1].tolist())}")
