"""NAS benchmark tables -> one Parquet table per benchmark, keyed by canonical architecture string.

Schema of every prepared table (also in data_prep/README.md):

  column                     type     meaning
  index                      int64    benchmark index when a source has one (NB201: row i of
                                      nb201_200ep_test_acc.csv = NATS-Bench-TSS index i), else row order
  arch                       string   the space's canonical string, `space.to_str(space.parse(x))`
  <label> ...                float64  one column per label, accuracies in percent, never null
  flops, params              float64  optional; MFLOPs / M params as the source reports them, null where
                                      the source has no value (NB201: only its 9,445 non-isomorphic cells)
  flops_computed,            float64  optional (NB201 builder); `space.cost(arch)` of the benchmark network
  params_computed                     (CIFAR-10 head), for every row
  iso_class                  string   `space.isomorphism_class(arch)`: equal strings = equivalent cells

Rows are sorted by `index`; `arch` is unique. The schema metadata key b"hypernas" holds JSON:

  {"space": "nb201", "builder": "nb201" | "generic", "label_columns": [...], "format_version": 1,
   "sources": [{"path": ..., "sha256": ..., "columns": [output columns taken from that file]}, ...]}

Sources are joined by canonical architecture, never by row position (the files order their rows
differently: NB201 index order vs NASLib tuples).

NB201 builder (`build_nb201_table`, reads whichever of these exist in the benchmark directory):
  nb201_200ep_test_acc.csv              <X>TestAccuracy200Epochs -> <x>_test_200ep (CIFAR10 -> cifar10,
                                        CIFAR100 -> cifar100, ImageNet16-120 -> imagenet16_120, others
                                        snake_case); ArchitectureString; row i = benchmark index i
  nb201_<ds>_val_acc_robustness.csv     net (NASLib tuple), val_accs -> cifar10_valid_val_200ep
                                        (<ds>_val_200ep for other datasets); robustness columns dropped
  nb201_12ep_acc.csv                    index, arch_str, <ds>valid_val_12ep -> <ds>_valid_val_12ep,
                                        other numeric columns snake_case (cifar10_test_12ep)
  nb201_cifar10_unique_zc_flops_params.csv   net, flops, params (9,445 rows) -> nullable flops/params
Each full file must hold all 15,625 architectures exactly once.

Generic builder (`build_generic_table`): any CSV / Parquet files with an arch column and numeric label
columns, joined by canonical architecture. Numeric columns named flops/params are kept as cost columns
(from the first input that has them), index-like columns (index, idx, id, ...) give `index`.

CLI (exit status 2 and `error: <message>` on bad input; nothing is written then):
  python -m data_prep.tables nb201 --benchmark-dir ../shared/data/nasbench201 --out prepared/tables/nb201.parquet
  python -m data_prep.tables generic --space nb201 --input a.csv [--input b.parquet] [--arch-column C]
      [--labels x,y] [--how inner] --out out.parquet
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipeline.errors import ArchError, DataError, UserError
from pipeline.spaces import SearchSpace, get_space
from pipeline.utils.io import atomic_path, file_sha256

FORMAT_VERSION = 1
META_KEY = b"hypernas"
LABEL_RANGE = (0.0, 100.0)  # labels are percent accuracies
NB201_SIZE = 15_625
COST_COLUMNS = ("flops", "params")
# Column names that number rows rather than measure anything (pandas writes the last two).
INDEX_LIKE = ("index", "idx", "id", "arch_index", "arch_idx", "unnamed: 0", "__index_level_0__", "")
_EXAMPLES = 3  # how many offending archs / rows an error message shows

# NB201 source files
NB201_TEST_200EP = "nb201_200ep_test_acc.csv"
NB201_VAL_200EP_GLOB = "nb201_*_val_acc_robustness.csv"
NB201_12EP = "nb201_12ep_acc.csv"
NB201_COST = "nb201_cifar10_unique_zc_flops_params.csv"
_NB201_DATASETS = {"CIFAR10": "cifar10", "CIFAR100": "cifar100", "ImageNet16-120": "imagenet16_120"}


# --------------------------------------------------------------------------- small helpers


def snake_case(name: str) -> str:
    """`ImageNet16-120` -> `image_net16_120`, `cifar10valid` stays: camelCase and punctuation become `_`."""
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return re.sub(r"[^0-9A-Za-z]+", "_", s).strip("_").lower()


def _examples(items: Sequence[Any]) -> str:
    shown = ", ".join(str(x) for x in list(items)[:_EXAMPLES])
    return shown + (", ..." if len(items) > _EXAMPLES else "")


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _float_array(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 numpy array, nulls as NaN."""
    return np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _row_where(path: Path, row: int) -> str:
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


def _require_columns(path: Path, table: pa.Table, columns: Sequence[str]) -> None:
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
            raise DataError(f"{path}: column {column!r}, {_row_where(path, row)}: empty architecture")
        try:
            out.append(cache.canon(text))
        except ArchError as e:
            raise DataError(f"{path}: column {column!r}, {_row_where(path, row)}: bad architecture "
                            f"{text!r}: {e}") from e
    return out


def check_unique(path: Path, archs: Sequence[str]) -> None:
    """Duplicate architectures in one file -> DataError naming them and their rows."""
    counts = Counter(archs)
    dups = [a for a, c in counts.items() if c > 1]
    if dups:
        rows: dict[str, list[int]] = {a: [] for a in dups[:_EXAMPLES]}
        for i, a in enumerate(archs):
            if a in rows:
                rows[a].append(i)
        shown = "; ".join(f"{a} (rows {', '.join(map(str, r))})" for a, r in rows.items())
        raise DataError(f"{path}: {len(dups)} architecture(s) occur more than once: {shown}"
                        + ("; ..." if len(dups) > _EXAMPLES else ""))


def check_full(path: Path, archs: Sequence[str], space: SearchSpace, expected: int) -> None:
    """A full benchmark file holds every architecture of the space exactly once."""
    unique = set(archs)
    if len(archs) == expected and len(unique) == expected:
        return
    dups = sorted(a for a, c in Counter(archs).items() if c > 1)
    missing = sorted(set(space.to_str(a) for a in space.enumerate()) - unique)
    raise DataError(
        f"{path}: expected {expected} unique {space.name} architectures, found {len(unique)} in {len(archs)} rows"
        + (f"; {len(dups)} duplicated: {_examples(dups)}" if dups else "")
        + (f"; {len(missing)} missing: {_examples(missing)}" if missing else "")
    )


# --------------------------------------------------------------------------- one source file


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


def _index_column(path: Path, table: pa.Table, name: str) -> np.ndarray:
    col = table[name]
    if not pa.types.is_integer(col.type) or col.null_count:
        raise DataError(f"{path}: index column {name!r} must hold integers without gaps, got {col.type}")
    return col.to_numpy().astype(np.int64)


def check_index_unique(part: Part) -> None:
    # checked after the archs: a duplicated row is better reported by its arch than by its index
    if part.index is not None and len(np.unique(part.index)) != len(part.index):
        values, counts = np.unique(part.index, return_counts=True)
        raise DataError(f"{part.path}: index column has repeated values: {_examples(values[counts > 1].tolist())}")


# --------------------------------------------------------------------------- NB201


def _nb201_test_200ep(path: Path, cache: ArchCache) -> Part:
    table = read_source(path, string_columns=["ArchitectureString"])
    _require_columns(path, table, ["ArchitectureString"])
    columns = {}
    for name in table.column_names:
        m = re.fullmatch(r"(.+)TestAccuracy200Epochs", name)
        if m:
            ds = _NB201_DATASETS.get(m.group(1), snake_case(m.group(1)))
            columns[f"{ds}_test_200ep"] = _float_array(table[name])
    if not columns:
        raise DataError(f"{path}: no <dataset>TestAccuracy200Epochs column; columns: {', '.join(table.column_names)}")
    archs = canonical_archs(path, "ArchitectureString", table["ArchitectureString"].to_pylist(), cache)
    # row i is benchmark index i (SOURCES.md)
    return Part(path, archs, columns, index=np.arange(len(archs), dtype=np.int64), full=True)


def _nb201_val_200ep(path: Path, cache: ArchCache) -> Part:
    ds = path.name[len("nb201_"):-len("_val_acc_robustness.csv")]
    # NB201 calls CIFAR-10's train/valid split "cifar10-valid"; other datasets have a plain valid split
    label = "cifar10_valid_val_200ep" if ds == "cifar10" else f"{snake_case(ds)}_val_200ep"
    table = read_source(path, string_columns=["net"])
    _require_columns(path, table, ["net", "val_accs"])
    archs = canonical_archs(path, "net", table["net"].to_pylist(), cache)
    return Part(path, archs, {label: _float_array(table["val_accs"])}, full=True)


def _nb201_12ep(path: Path, cache: ArchCache) -> Part:
    table = read_source(path, string_columns=["arch_str"])
    _require_columns(path, table, ["arch_str"])
    columns = {}
    for name in table.column_names:
        if name.lower() in INDEX_LIKE or name == "arch_str" or not _is_numeric(table[name].type):
            continue
        m = re.fullmatch(r"(.+?)_?valid_val_12ep", name)
        out = f"{snake_case(m.group(1))}_valid_val_12ep" if m else snake_case(name)
        columns[out] = _float_array(table[name])
    archs = canonical_archs(path, "arch_str", table["arch_str"].to_pylist(), cache)
    index = _index_column(path, table, "index") if "index" in table.column_names else None
    return Part(path, archs, columns, index=index, full=True)


def _nb201_cost(path: Path, cache: ArchCache) -> Part:
    table = read_source(path, string_columns=["net"], include=["net", "flops", "params"])
    archs = canonical_archs(path, "net", table["net"].to_pylist(), cache)
    check_unique(path, archs)
    return Part(path, archs, {c: _float_array(table[c]) for c in COST_COLUMNS})


def nb201_source_files(benchmark_dir: str | os.PathLike) -> list[Path]:
    """The NB201 source files present in `benchmark_dir`, in the order they are read."""
    d = Path(benchmark_dir)
    files = [d / NB201_TEST_200EP, *sorted(d.glob(NB201_VAL_200EP_GLOB)), d / NB201_12EP, d / NB201_COST]
    return [f for f in files if f.is_file()]


def _nb201_reader(path: Path) -> Callable[[Path, ArchCache], Part]:
    if path.name == NB201_TEST_200EP:
        return _nb201_test_200ep
    if path.name == NB201_12EP:
        return _nb201_12ep
    if path.name == NB201_COST:
        return _nb201_cost
    return _nb201_val_200ep


def build_nb201_table(benchmark_dir: str | os.PathLike) -> pa.Table:
    """Join the NB201 benchmark files found in `benchmark_dir` by architecture (schema: module docstring)."""
    d = Path(benchmark_dir)
    if not d.is_dir():
        raise DataError(f"{d}: benchmark directory does not exist")
    space = get_space("nb201")
    files = nb201_source_files(d)
    label_files = [f for f in files if f.name != NB201_COST]
    if not label_files:
        expected = [NB201_TEST_200EP, NB201_VAL_200EP_GLOB.replace("*", "<dataset>"), NB201_12EP]
        raise DataError(f"{d}: no NB201 label file found; expected at least one of: {', '.join(expected)}")
    cache = ArchCache(space)
    parts = []
    for f in files:
        part = _nb201_reader(f)(f, cache)
        if part.full:
            check_full(f, part.archs, space, NB201_SIZE)
        check_index_unique(part)
        part.sha256 = file_sha256(f)
        parts.append(part)
    index_part = next((p for p in parts if p.index is not None), parts[0])
    order = _reference_order(parts, index_part)
    table = _assemble(cache, order, parts, index_part, builder="nb201")
    table = _add_computed_cost(table, cache)
    if table.num_rows != NB201_SIZE:  # cannot happen after check_full, but the contract is 15,625 rows
        raise DataError(f"{d}: joined NB201 table has {table.num_rows} rows, expected {NB201_SIZE}")
    validate_labels(table, _meta(table)["label_columns"])
    return table


def _add_computed_cost(table: pa.Table, cache: ArchCache) -> pa.Table:
    costs = [cache.space.cost(cache.parsed[a]) for a in table["arch"].to_pylist()]
    pos = table.column_names.index("iso_class")  # keep iso_class last
    for name in ("flops", "params"):
        values = pa.array([c[name] for c in costs], pa.float64())
        table = table.add_column(pos, f"{name}_computed", values)
        pos += 1
    return table


# --------------------------------------------------------------------------- joining


def _reference_order(parts: list[Part], index_part: Part) -> list[str]:
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


def _assemble(cache: ArchCache, order: list[str], parts: list[Part], index_part: Part,
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
    arrays: dict[str, pa.Array] = {"index": pa.array(index, pa.int64()), "arch": pa.array(order, pa.string())}
    arrays.update((n, labels[n]) for n in label_names)
    arrays.update(costs)
    space = cache.space
    arrays["iso_class"] = pa.array([space.isomorphism_class(cache.parsed[a]) for a in order], pa.string())
    meta = {"space": space.name, "builder": builder, "label_columns": label_names,
            "sources": sources, "format_version": FORMAT_VERSION}
    return pa.table(arrays).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})


def _meta(table: pa.Table) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


# --------------------------------------------------------------------------- generic


def _detect_arch_column(path: Path, table: pa.Table, space: SearchSpace) -> str:
    """The first string column whose values (a sample) mostly parse as architectures."""
    tried = []
    for name in table.column_names:
        col = table[name]
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        sample = [v for v in col.slice(0, 50).to_pylist() if v is not None]
        errors = []
        for v in sample:
            try:
                space.parse(v)
            except ArchError as e:
                errors.append(str(e))
        # a majority, not all: a column with one bad row is still the arch column, and its bad row
        # then gets a precise error (file, row, arch) instead of "no arch column"
        if sample and len(errors) * 2 < len(sample):
            return name
        tried.append(f"{name!r} ({errors[0] if errors else 'empty'})")
    raise DataError(f"{path}: no column holds {space.name} architectures; string columns tried: "
                    f"{'; '.join(tried) or 'none'}; name it with --arch-column / arch_column")


def _read_generic(path: Path, arch_column: str | None, cache: ArchCache) -> tuple[Part, dict[str, pa.DataType]]:
    """A generic input -> Part with all its numeric non-index columns, plus their types."""
    table = read_source(path, string_columns=[arch_column] if arch_column else ())
    if arch_column is None:
        arch_column = _detect_arch_column(path, table, cache.space)
    elif arch_column not in table.column_names:
        raise DataError(f"{path}: arch column {arch_column!r} not found; columns: {', '.join(table.column_names)}")
    archs = canonical_archs(path, arch_column, table[arch_column].to_pylist(), cache)
    check_unique(path, archs)
    index_name = next((c for c in table.column_names if c.lower() in INDEX_LIKE
                       and pa.types.is_integer(table[c].type)), None)
    index = _index_column(path, table, index_name) if index_name else None
    types = {c: table[c].type for c in table.column_names
             if c != arch_column and c != index_name and c.lower() not in INDEX_LIKE}
    columns = {c: _float_array(table[c]) for c, t in types.items() if _is_numeric(t)}
    part = Part(path, archs, columns, index=index, sha256=file_sha256(path))
    check_index_unique(part)
    return part, types


def _select_labels(parts: list[Part], types: list[dict[str, pa.DataType]],
                   label_columns: Sequence[str] | None) -> list[str]:
    """Label names (auto: every numeric non-cost column); checks existence, type and collisions."""
    numeric = {}  # name -> files that have it as a numeric column
    for p, t in zip(parts, types):
        for name in p.columns:
            numeric.setdefault(name, []).append(p.path)
    if label_columns is None:
        wanted = [n for n in numeric if n not in COST_COLUMNS]
        if not wanted:
            raise DataError(f"no numeric label column in {', '.join(str(p.path) for p in parts)}")
    else:
        wanted = list(dict.fromkeys(label_columns))  # keep the order, drop repeats
    available = ", ".join(n for n in numeric) or "none"
    for name in wanted:
        if name not in numeric:
            where = [(p.path, t[name]) for p, t in zip(parts, types) if name in t]
            if where:
                raise DataError(f"{where[0][0]}: label column {name!r} is not numeric ({where[0][1]}); "
                                f"numeric columns: {available}")
            raise DataError(f"label column {name!r} not found in {', '.join(str(p.path) for p in parts)}; "
                            f"available numeric columns: {available}")
        if len(numeric[name]) > 1:
            raise DataError(f"column {name!r} occurs in several inputs ({', '.join(map(str, numeric[name]))}); "
                            f"rename it in all but one or pass the label columns explicitly")
    # keep only the chosen labels and the cost columns
    for p in parts:
        p.columns = {n: v for n, v in p.columns.items() if n in wanted or n in COST_COLUMNS}
    return wanted


def build_generic_table(inputs: Sequence[str | os.PathLike], space: SearchSpace | str,
                        arch_column: str | None = None, label_columns: Sequence[str] | None = None,
                        expected_rows: int | None = None, how: str | None = None,
                        label_range: tuple[float, float] | None = LABEL_RANGE) -> pa.Table:
    """Join CSV / Parquet inputs by canonical architecture into a prepared table.

    `how=None` requires every input to hold the same architectures (a DataError names what each lacks);
    `how="inner"` keeps the architectures common to all. `label_range=None` skips the range check."""
    if not inputs:
        raise DataError("no input files given")
    if how not in (None, "inner"):
        raise DataError(f"unknown join {how!r}; the only join is 'inner'")
    space = get_space(space) if isinstance(space, str) else space
    cache = ArchCache(space)
    read = [_read_generic(Path(f), arch_column, cache) for f in inputs]
    parts, types = [p for p, _ in read], [t for _, t in read]
    labels = _select_labels(parts, types, label_columns)
    common = set.intersection(*(set(p.archs) for p in parts))
    if how is None and any(len(p.archs) != len(common) for p in parts):
        union = set.union(*(set(p.archs) for p in parts))
        lacks = "; ".join(f"{p.path} lacks {len(union) - len(p.archs)} of them (e.g. "
                          f"{_examples(sorted(union - set(p.archs)))})" for p in parts if len(p.archs) < len(union))
        raise DataError(f"inputs hold different architectures ({len(union)} in all): {lacks}; "
                        f"pass how='inner' / --how inner to keep only the common ones")
    index_part = next((p for p in parts if p.index is not None), parts[0])
    order = [a for a in _reference_order(parts, index_part) if a in common]
    if not order:
        raise DataError(f"inputs {', '.join(str(p.path) for p in parts)} have no architecture in common")
    if expected_rows is not None and len(order) != expected_rows:
        raise DataError(f"joined table has {len(order)} architectures, expected {expected_rows} "
                        f"(inputs: {', '.join(f'{p.path} ({len(p.archs)} rows)' for p in parts)})")
    table = _assemble(cache, order, parts, index_part, builder="generic", label_order=labels)
    if label_range is not None:
        validate_labels(table, labels, label_range)
    else:
        validate_labels(table, labels, (-np.inf, np.inf))  # still no NaN
    return table


# --------------------------------------------------------------------------- validation & writing


def validate_labels(table: pa.Table, columns: Sequence[str],
                    label_range: tuple[float, float] = LABEL_RANGE) -> None:
    """NaN / null or out-of-range label values -> DataError naming the column, count and first arch."""
    lo, hi = label_range
    archs = table["arch"]
    for name in columns:
        if name not in table.column_names:
            raise DataError(f"label column {name!r} not in table; columns: {', '.join(table.column_names)}")
        values = _float_array(table[name])
        for bad, what in ((np.isnan(values), "missing (NaN/empty) values"),
                          (~np.isnan(values) & ((values < lo) | (values > hi)), f"values outside [{lo:g}, {hi:g}]")):
            if bad.any():
                first = int(np.argmax(bad))
                raise DataError(f"label column {name!r}: {int(bad.sum())} {what}; first at arch "
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
    raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


@dataclass(frozen=True)
class Benchmark:
    build: Callable[[Path], pa.Table]
    source_files: Callable[[Path], list[Path]]


BENCHMARKS: dict[str, Benchmark] = {"nb201": Benchmark(build_nb201_table, nb201_source_files)}


def _up_to_date(out: Path, space_name: str, files: list[Path]) -> bool:
    """Same space, format and source contents (by file name + sha256) as when `out` was written."""
    try:
        meta = read_meta(out)
        recorded = sorted((Path(s["path"]).name, s["sha256"]) for s in meta["sources"])
        ok = meta.get("format_version") == FORMAT_VERSION and meta.get("space") == space_name
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return False  # unreadable or foreign file: rebuild it
    return ok and recorded == sorted((f.name, file_sha256(f)) for f in files)


def prepare(space_name: str, benchmark_dir: str | os.PathLike, out_path: str | os.PathLike,
            force: bool = False) -> tuple[Path, bool]:
    """`prepare_table`, also saying whether the existing table was kept (True) or (re)written."""
    if space_name not in BENCHMARKS:
        raise DataError(f"no benchmark builder for space {space_name!r} (known: {', '.join(BENCHMARKS)}); "
                        f"use `python -m data_prep.tables generic --space {space_name} --input ...`")
    bench, out = BENCHMARKS[space_name], Path(out_path)
    if not force and out.is_file() and _up_to_date(out, space_name, bench.source_files(Path(benchmark_dir))):
        return out, True
    write_table(bench.build(Path(benchmark_dir)), out)
    return out, False


def prepare_table(space_name: str, benchmark_dir: str | os.PathLike, out_path: str | os.PathLike,
                  force: bool = False) -> Path:
    """Build and write the benchmark table unless `out_path` already matches the current sources."""
    return prepare(space_name, benchmark_dir, out_path, force)[0]


# --------------------------------------------------------------------------- CLI


def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    return lo, hi


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.tables", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in BENCHMARKS:
        p = sub.add_parser(name, help=f"the {name} benchmark files -> one table")
        p.add_argument("--benchmark-dir", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--force", action="store_true", help="rebuild even if the sources are unchanged")
    g = sub.add_parser("generic", help="any CSV / Parquet files with an arch column -> one table")
    g.add_argument("--space", required=True)
    g.add_argument("--input", action="append", required=True, help="CSV or Parquet file (repeatable)")
    g.add_argument("--arch-column", default=None)
    g.add_argument("--labels", default=None, help="comma-separated label columns (default: all numeric)")
    g.add_argument("--how", choices=["inner"], default=None, help="keep only archs common to all inputs")
    g.add_argument("--expected-rows", type=int, default=None)
    g.add_argument("--label-range", type=_parse_range, default=LABEL_RANGE, help="LO,HI (default 0,100)")
    g.add_argument("--no-label-range", action="store_true", help="labels are not percentages: skip the range check")
    g.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "generic":
            labels = [s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None
            table = build_generic_table(args.input, args.space, args.arch_column, labels, args.expected_rows,
                                        args.how, None if args.no_label_range else args.label_range)
            out, skipped = write_table(table, args.out), False
        else:
            out, skipped = prepare(args.command, args.benchmark_dir, args.out, args.force)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_meta(out)
    rows = pq.read_metadata(out).num_rows
    what = "up to date, skipped" if skipped else "wrote"
    print(f"{what} {out}: {rows} rows, labels {', '.join(meta['label_columns'])} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
