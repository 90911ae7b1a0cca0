"""Parts -> one table in the core schema (schema.py): the join by canonical architecture, the
metadata, label validation and the atomic write."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.tables.parts import ArchCache, Part, float_array
from data_prep.tables.schema import (ARCH, COST_COLUMNS, FORMAT_VERSION, INDEX, ISO_CLASS, LABEL_RANGE,
                                     decode_meta, encode_meta)
from pipeline.errors import DataError
from pipeline.utils.io import atomic_path, file_sha256


def reference_order(parts: list[Part], index_part: Part) -> list[str]:
    """Archs of the joined table, sorted by benchmark index (or the reference file's row order).

    Also checks that files which both carry an index agree on it for every arch."""
    for p in parts:
        if p.index is None or p is index_part:
            continue
        shared = [a for a in index_part.archs if a in p.row_of]
        mine = np.array([p.index[p.row_of[a]] for a in shared], dtype=np.int64)
        theirs = np.array([index_part.index[index_part.row_of[a]] for a in shared], dtype=np.int64)
        bad = np.flatnonzero(mine != theirs)
        if len(bad):
            raise DataError(f"{p.path} and {index_part.path} give different benchmark indices to {len(bad)} "
                            f"architecture(s), e.g. {shared[bad[0]]} ({mine[bad[0]]} vs {theirs[bad[0]]})")
    keys = index_part.index if index_part.index is not None else np.arange(len(index_part.archs))
    return [index_part.archs[i] for i in np.argsort(keys, kind="stable")]


def finish_table(cache: ArchCache, order: Sequence[str], index: np.ndarray, columns: Mapping[str, pa.Array],
                 builder: str, label_columns: Sequence[str], sources: list[dict[str, Any]],
                 **extra_meta: Any) -> pa.Table:
    """`index`, `arch`, `columns` (in their order), `iso_class` last, and the metadata."""
    arrays: dict[str, pa.Array] = {INDEX: pa.array(np.asarray(index, dtype=np.int64), pa.int64()),
                                   ARCH: pa.array(list(order), pa.string())}
    for name, values in columns.items():
        if name in (INDEX, ARCH, ISO_CLASS):
            raise DataError(f"source column {name!r} collides with the schema's own {name!r} column; rename it")
        arrays[name] = values
    space = cache.space
    arrays[ISO_CLASS] = pa.array([space.isomorphism_class(cache.parsed[a]) for a in order], pa.string())
    meta = {"space": space.name, "builder": builder, "label_columns": list(label_columns),
            "sources": sources, "format_version": FORMAT_VERSION, **extra_meta}
    return pa.table(arrays).replace_schema_metadata(encode_meta(meta))


def assemble(cache: ArchCache, order: list[str], parts: list[Part], index_part: Part,
             builder: str, label_order: Sequence[str] | None = None) -> pa.Table:
    """Build the output table over `order` (canonical archs) from the parts' columns, joined by arch.

    A part lacking an arch leaves a null there (only allowed for cost columns; labels are checked later)."""
    if index_part.index is not None:
        index = index_part.index[[index_part.row_of[a] for a in order]]
    else:
        index = np.arange(len(order), dtype=np.int64)
    label_set = set(label_order) if label_order is not None else None
    labels: dict[str, pa.Array] = {}
    costs: dict[str, pa.Array] = {}
    sources = []
    for p in parts:
        rows = np.array([p.row_of.get(a, -1) for a in order], dtype=np.int64)
        present = rows >= 0
        taken = []
        for name, values in p.columns.items():
            is_label = name in label_set if label_set is not None else name not in COST_COLUMNS
            target = labels if is_label else costs
            if name in labels or name in costs:
                if not is_label:
                    continue  # cost columns come from the first input that has them
                owner = next(s["path"] for s in sources if name in s["columns"])
                raise DataError(f"column {name!r} comes from both {owner} and {p.path}; "
                                f"rename one or choose label columns explicitly")
            col = np.where(present, values[np.where(present, rows, 0)], np.nan)
            target[name] = pa.array(col, pa.float64(), mask=~present if not present.all() else None)
            taken.append(name)
        sources.append({"path": str(p.path), "sha256": p.sha256, "columns": taken})
    label_names = list(label_order) if label_order is not None else list(labels)
    columns = {n: labels[n] for n in label_names}
    columns.update(costs)
    return finish_table(cache, order, index, columns, builder, label_names, sources)


def table_meta(table: pa.Table) -> dict[str, Any]:
    return decode_meta(table.schema.metadata)


def validate_labels(table: pa.Table, columns: Sequence[str],
                    label_range: tuple[float, float] = LABEL_RANGE, where: str = "") -> None:
    """NaN / null or out-of-range label values -> DataError naming the column, count and first arch.

    `where` (e.g. the source file) prefixes the message."""
    lo, hi = label_range
    archs = table[ARCH]
    prefix = f"{where}: " if where else ""
    for name in columns:
        if name not in table.column_names:
            raise DataError(f"{prefix}label column {name!r} not in table; columns: {', '.join(table.column_names)}")
        values = float_array(table[name])
        for bad, what in ((np.isnan(values), "missing (NaN/empty) values"),
                          (~np.isnan(values) & ((values < lo) | (values > hi)), f"values outside [{lo:g}, {hi:g}]")):
            if bad.any():
                first = int(np.argmax(bad))
                raise DataError(f"{prefix}label column {name!r}: {int(bad.sum())} {what}; first at arch "
                                f"{archs[first].as_py()} (value {values[first]})")


def write_table(table: pa.Table, path: str | os.PathLike) -> Path:
    """Atomic Parquet write: a temp file next to `path`, fsynced, then renamed onto it."""
    path = Path(path)
    with atomic_path(path, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The b"hypernas" metadata of a prepared table ({} if absent)."""
    return decode_meta(pq.read_schema(path).metadata)


def up_to_date(out: Path, space: str, builder: str, files: Sequence[Path]) -> bool:
    """`out` was built by the same builder, for the same space and format version, from files with
    the same names and contents (sha256) as `files`."""
    try:
        meta = read_meta(out)
        recorded = sorted((Path(s["path"]).name, s["sha256"]) for s in meta["sources"])
        ok = (meta.get("format_version") == FORMAT_VERSION and meta.get("space") == space
              and meta.get("builder", builder) == builder)
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return False  # unreadable or foreign file: rebuild it
    return ok and recorded == sorted((f.name, file_sha256(f)) for f in files)


def write_unless_current(out: str | os.PathLike, space: str, builder: str, files: Sequence[Path],
                         build: Callable[[], pa.Table], force: bool = False) -> tuple[Path, bool]:
    """Write `build()` to `out` unless it is up to date; (out, True) when the existing table was kept."""
    out = Path(out)
    if not force and out.is_file() and up_to_date(out, space, builder, files):
        return out, True
    return write_table(build(), out), False
