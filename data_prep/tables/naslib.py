"""NASLib / NAS-Bench-Suite-Zero `zc_<space>.json` files -> one table per dataset (format `naslib`).

Both layouts that exist:
  {"nasbench201"|"nasbench101"|"nasbench301": {"cifar10": {KEY: {"val_accuracy": ..., "flops": x, ...}}}}
  {"cifar10": {KEY: {"idx": "534", "arch": KEY, "val_accuracy": ..., "<proxy>": {"score": x, "time": t}}}}
KEY is whatever the space's `parse` accepts for that benchmark (NB201: the NASLib op-id tuple; NB101: 49
adjacency entries + 7 op ids; DARTS: the compact genotype). The label (`val_accuracy`) keeps its name and
percent scale (a file of fractions is scaled to percent, recorded as `label_scale` in the metadata);
every other numeric value becomes a nullable float column (`{"score", "time"}` -> `<proxy>` and
`<proxy>_time`); `idx` becomes `index` (rows sorted by it); other fields are listed in the metadata as
`ignored_fields`.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_prep.tables.build import finish_table, validate_labels
from data_prep.tables.formats import FORMATS, TableFormat
from data_prep.tables.parts import ArchCache, check_unique, examples
from pipeline.errors import ArchError, DataError
from pipeline.spaces import SearchSpace, get_space
from pipeline.utils.io import file_sha256

# space -> NASLib's name for its benchmark (the first key of the nested layout)
NASLIB_BENCHMARKS = {"nb101": "nasbench101", "nb201": "nasbench201", "darts": "nasbench301"}
LABEL = "val_accuracy"
SHAPE = "{dataset: {arch key: {...}}} or {benchmark: {dataset: {arch key: {...}}}}"


def load_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"{path}: input file does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def describe(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), "a number")
    return f"{kind} ({json.dumps(value)[:60]})" if not isinstance(value, dict) else kind


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_score(value: Any) -> bool:
    return isinstance(value, dict) and "score" in value and set(value) <= {"score", "time"}


def _is_record(value: Any) -> bool:
    """One architecture's values: no nested objects other than {"score", "time"}."""
    return isinstance(value, dict) and bool(value) and all(not isinstance(v, dict) or _is_score(v)
                                                          for v in value.values())


def _objects(path: Path, data: Any, what: str) -> dict[str, dict]:
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: {what} is {describe(data) if data != {} else 'empty'}; expected {SHAPE}")
    for k, v in data.items():
        if not isinstance(v, dict) or not v:
            raise DataError(f"{path}: {k!r} holds {describe(v) if v != {} else 'nothing'}; expected {SHAPE}")
    return data


def naslib_datasets(path: Path, data: Any, space: str) -> tuple[str, dict[str, dict]]:
    """(layout, {dataset: {key: record}}) of a loaded NASLib file; DataError on any other shape."""
    top = _objects(path, data, "the file")
    first = next(iter(next(iter(top.values())).values()))
    # NASLib's benchmark names mark the nested layout; otherwise the depth at which records start does
    if not set(top) <= set(NASLIB_BENCHMARKS.values()) and _is_record(first):
        return "dataset/key", top
    want = NASLIB_BENCHMARKS.get(space)
    if want in top:
        bench = want
    elif want is None and len(top) == 1:
        bench = next(iter(top))
    else:
        raise DataError(f"{path}: no {want or space!r} part for space {space!r}; the file holds "
                        f"{', '.join(map(repr, top))}")
    return "benchmark/dataset/key", _objects(path, top[bench], repr(bench))


def pick_dataset(path: Path, datasets: dict[str, dict], dataset: str | None) -> str:
    if dataset is not None:
        if dataset not in datasets:
            raise DataError(f"{path}: no dataset {dataset!r}; datasets: {', '.join(datasets)}")
        return dataset
    if len(datasets) == 1:
        return next(iter(datasets))
    if "cifar10" in datasets:
        return "cifar10"
    raise DataError(f"{path}: holds several datasets ({', '.join(datasets)}); choose one with --dataset")


class _Columns:
    """Numeric columns filled row by row (absent = null), each remembering the field it came from."""

    def __init__(self) -> None:
        self.values: dict[str, dict[int, float]] = {}
        self.origin: dict[str, str] = {}

    def put(self, where: str, column: str, field: str, row: int, value: Any) -> None:
        if self.origin.setdefault(column, field) != field:
            raise DataError(f"{where}: fields {self.origin[column]!r} and {field!r} both give column {column!r}")
        by_row = self.values.setdefault(column, {})
        if value is None:
            return
        if not _is_number(value):
            raise DataError(f"{where}: field {field!r} is {describe(value)}, expected a number")
        by_row[row] = float(value)


def _index_value(where: str, value: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'idx' is {describe(value)}, expected an integer") from None


@dataclass
class Rows:
    """One dataset's records, parsed and sorted by index: what `finish_table` turns into a table."""

    cache: ArchCache
    archs: list[str]
    index: np.ndarray
    columns: dict[str, pa.Array]
    meta: dict[str, Any]


def parse_records(path: Path, dataset: str, records: dict[str, Any], space: SearchSpace,
                  label: str = LABEL) -> Rows:
    """The records of one dataset -> rows (label first, then every numeric field, by first appearance)."""
    cache = ArchCache(space)
    archs, keys, labels = [], [], []
    idx: dict[int, int] = {}  # row -> the record's own index
    cols, ignored = _Columns(), set()
    for row, (key, rec) in enumerate(records.items()):
        where = f"{path}: dataset {dataset!r}, key {key!r}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object of values, got {describe(rec)}")
        try:
            arch = cache.canon(key)
        except ArchError as e:
            raise DataError(f"{where}: not a {space.name} architecture: {e}") from e
        if isinstance(rec.get("arch"), str) and rec["arch"] != key:
            try:
                same = cache.canon(rec["arch"]) == arch
            except ArchError:
                same = False
            if not same:
                raise DataError(f"{where}: its 'arch' field {rec['arch']!r} is another architecture than the key")
        if label not in rec:
            raise DataError(f"{where}: no {label!r} value (fields: {', '.join(rec) or 'none'})")
        value = rec[label]
        if not _is_number(value) or not math.isfinite(value):
            raise DataError(f"{where}: label {label!r} is {describe(value)}, expected a finite number")
        archs.append(arch)
        keys.append(key)
        labels.append(float(value))
        for name, v in rec.items():
            if name in (label, "arch"):
                continue
            if name == "idx":
                idx[row] = _index_value(where, v)
            elif _is_score(v):
                cols.put(where, name, name, row, v["score"])
                if "time" in v:
                    cols.put(where, f"{name}_time", name, row, v["time"])
            elif _is_number(v) or v is None:
                cols.put(where, name, name, row, v)
            else:
                ignored.add(name)
    if idx and len(idx) != len(keys):
        first = next(k for r, k in enumerate(keys) if r not in idx)
        raise DataError(f"{path}: dataset {dataset!r}: key {first!r} has no 'idx' but others have one")
    check_unique(path, archs, keys=keys)
    index = np.asarray([idx[r] for r in range(len(keys))] if idx else range(len(keys)), dtype=np.int64)
    values, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1].tolist()
        shown = [k for k, i in zip(keys, index) if i == dup[0]]
        raise DataError(f"{path}: dataset {dataset!r}: 'idx' repeats {examples(dup)} (e.g. keys {examples(shown)})")
    order = np.argsort(index, kind="stable")
    y = np.asarray(labels, dtype=np.float64)
    meta: dict[str, Any] = {"dataset": dataset}
    if y.max() <= 1.0:  # NASLib files store percent; a file of fractions is scaled (and says so)
        y = y * 100.0
        meta["label_scale"] = {label: 100.0}
    columns = {label: pa.array(y[order], pa.float64())}
    for name, by_row in cols.values.items():
        columns[name] = pa.array([by_row.get(int(r)) for r in order], pa.float64())
    meta["proxy_columns"] = [n for n in columns if n != label]
    meta["ignored_fields"] = sorted(ignored)
    return Rows(cache, [archs[i] for i in order], index[order], columns, meta)


def build_naslib_table(path: str | Path, space: SearchSpace | str, dataset: str | None = None,
                       label: str = LABEL) -> pa.Table:
    """One dataset of a NASLib zero-cost JSON file as a table (module doc)."""
    path = Path(path)
    space = get_space(space) if isinstance(space, str) else space
    layout, datasets = naslib_datasets(path, load_json(path), space.name)
    ds = pick_dataset(path, datasets, dataset)
    rows = parse_records(path, ds, datasets[ds], space, label)
    sources = [{"path": str(path), "sha256": file_sha256(path), "columns": list(rows.columns)}]
    table = finish_table(rows.cache, rows.archs, rows.index, rows.columns, "naslib", [label], sources,
                         layout=layout, **rows.meta)
    validate_labels(table, [label], where=str(path))
    return table


@FORMATS.register("naslib")
class NASLibFormat(TableFormat):
    help = "a NASLib zero-cost JSON (zc_<space>.json, either layout) -> one table per dataset"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--space", required=True, help="the space whose parse() reads the keys (nb101, nb201, darts)")
        parser.add_argument("--input", required=True, help="the NASLib JSON file")
        parser.add_argument("--dataset", default=None, help="which dataset (default: the only one, else cifar10)")
        parser.add_argument("--label", default=LABEL, help=f"the label field (default {LABEL})")
        super().add_arguments(parser)

    def build_from_args(self, args: argparse.Namespace) -> pa.Table:
        return build_naslib_table(args.input, args.space, args.dataset, args.label)

    def build_default(self, space: str, benchmark_dir: Path, file: str | None) -> pa.Table:
        return build_naslib_table(self.sources(benchmark_dir, file)[0], space)
