"""Reader for the prepared benchmark tables (Parquet; schema in data_prep/tables/schema.py, shared with
the writers, and data_prep/README.md).

The trainer only needs: the canonical arch strings, label arrays by name, and a reproducible train split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.tables.schema import ARCH, FORMAT_VERSION, INDEX, META_KEY, decode_meta
from pipeline.errors import DataError

__all__ = ["ArchTable", "load_table", "split_train", "META_KEY", "FORMAT_VERSION"]
_BUILD_HINT = ("build it with `python -m data_prep.tables nb201 --benchmark-dir ../shared/data/nasbench201 "
               "--out {path}` (or `python -m data_prep.tables prepare --space <space> --benchmark-dir <dir> "
               "--out {path}`, or the naslib / generic formats for other benchmark files)")


@dataclass
class ArchTable:
    """A prepared table in memory: row i is architecture `archs[i]`, `columns[name][i]` its values."""

    archs: list[str]
    columns: dict[str, np.ndarray]  # every column but `arch`; numeric ones float64/int64 (null -> NaN)
    meta: dict[str, Any]
    path: Path
    _row_of: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.archs)

    @property
    def numeric_columns(self) -> list[str]:
        return [n for n, v in self.columns.items() if np.issubdtype(v.dtype, np.number)]

    @property
    def label_columns(self) -> list[str]:
        """The labels the builder declared (all numeric columns but `index` for a table without metadata)."""
        declared = self.meta.get("label_columns")
        return list(declared) if declared else [n for n in self.numeric_columns if n != INDEX]

    def label(self, name: str) -> np.ndarray:
        """A numeric column as float64; DataError listing the numeric columns if there is none of that name."""
        values = self.columns.get(name)
        if values is None or not np.issubdtype(values.dtype, np.number):
            raise DataError(f"column {name!r} not in table {self.path}; available label columns: "
                            f"{', '.join(self.numeric_columns)}")
        return values.astype(np.float64, copy=False)

    def rows(self, archs: Iterable[str]) -> np.ndarray:
        """Row positions of canonical arch strings; DataError naming the first one not in the table."""
        if self._row_of is None:
            self._row_of = {a: i for i, a in enumerate(self.archs)}
        out = []
        for a in archs:
            if a not in self._row_of:
                raise DataError(f"architecture {a!r} is not in table {self.path}")
            out.append(self._row_of[a])
        return np.asarray(out, dtype=np.int64)


def _column_array(col: pa.ChunkedArray) -> np.ndarray:
    t = col.type
    if pa.types.is_integer(t) and col.null_count == 0:
        return col.to_numpy().astype(np.int64, copy=False)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        # nullable columns (flops/params) come back with NaN where the source has no value
        return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.asarray(col.to_pylist(), dtype=object)


def _read_meta(path: Path, schema: pa.Schema) -> dict[str, Any]:
    # a plain Parquet file has none: usable, labels are then all numeric columns
    try:
        meta = decode_meta(schema.metadata)
    except ValueError as e:
        raise DataError(f"{path}: corrupt table metadata ({e}); rebuild it") from e
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{path}: table format_version {version!r} is newer than this reader "
                        f"(up to {FORMAT_VERSION}); update the code or rebuild the table")
    return meta


def load_table(path: str | os.PathLike) -> ArchTable:
    """Read a prepared table; DataError naming the path (and the command that builds it) on failure."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"table {path} does not exist; " + _BUILD_HINT.format(path=path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable Parquet table ({e}); " + _BUILD_HINT.format(path=path)) from e
    if ARCH not in table.column_names:
        raise DataError(f"{path}: no {ARCH!r} column (columns: {', '.join(table.column_names)}); "
                        + _BUILD_HINT.format(path=path))
    archs = table[ARCH].to_pylist()
    if any(a is None for a in archs):
        raise DataError(f"{path}: column {ARCH!r} has {archs.count(None)} empty value(s)")
    columns = {n: _column_array(table[n]) for n in table.column_names if n != ARCH}
    return ArchTable(archs, columns, _read_meta(path, table.schema), path)


def split_train(n_total: int, num_train: int, seed: int,
                exclude: Iterable[int] | np.ndarray | None = None) -> np.ndarray:
    """`num_train` row indices drawn without replacement from range(n_total) minus `exclude`.

    A numpy Generator (PCG64) permutation of the pool: the same seed gives the same indices on any
    machine and numpy version that keeps PCG64's stream (numpy guarantees that)."""
    pool = np.arange(n_total, dtype=np.int64)
    if exclude is not None:
        ex = np.unique(np.asarray(list(exclude) if not isinstance(exclude, np.ndarray) else exclude, dtype=np.int64))
        if len(ex) and (ex.min() < 0 or ex.max() >= n_total):
            raise DataError(f"excluded row indices must lie in [0, {n_total}), got {ex.min()}..{ex.max()}")
        pool = np.setdiff1d(pool, ex, assume_unique=True)
    if num_train < 0:
        raise DataError(f"data.num_train={num_train} must not be negative")
    if num_train > len(pool):
        excluded = f" ({n_total - len(pool)} of them excluded)" if len(pool) != n_total else ""
        raise DataError(f"data.num_train={num_train} but the table holds {n_total} architectures{excluded}")
    return np.random.default_rng(seed).permutation(pool)[:num_train]
