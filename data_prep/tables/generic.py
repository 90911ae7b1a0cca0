"""Any CSV / Parquet files with an arch column and numeric label columns -> one table (format `generic`).

Joined by canonical architecture. Numeric columns named flops/params are kept as cost columns (from the
first input that has them); index-like columns (index, idx, id, ...) give `index`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from data_prep.tables.build import assemble, reference_order, validate_labels
from data_prep.tables.formats import FORMATS, TableFormat
from data_prep.tables.parts import (ArchCache, Part, canonical_archs, check_index_unique, check_unique,
                                    examples, float_array, index_column, is_numeric, read_source)
from data_prep.tables.schema import COST_COLUMNS, INDEX_LIKE, LABEL_RANGE
from pipeline.errors import ArchError, DataError
from pipeline.spaces import SearchSpace, get_space
from pipeline.utils.io import file_sha256


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
    index = index_column(path, table, index_name) if index_name else None
    types = {c: table[c].type for c in table.column_names
             if c != arch_column and c != index_name and c.lower() not in INDEX_LIKE}
    columns = {c: float_array(table[c]) for c, t in types.items() if is_numeric(t)}
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
                          f"{examples(sorted(union - set(p.archs)))})" for p in parts if len(p.archs) < len(union))
        raise DataError(f"inputs hold different architectures ({len(union)} in all): {lacks}; "
                        f"pass how='inner' / --how inner to keep only the common ones")
    index_part = next((p for p in parts if p.index is not None), parts[0])
    order = [a for a in reference_order(parts, index_part) if a in common]
    if not order:
        raise DataError(f"inputs {', '.join(str(p.path) for p in parts)} have no architecture in common")
    if expected_rows is not None and len(order) != expected_rows:
        raise DataError(f"joined table has {len(order)} architectures, expected {expected_rows} "
                        f"(inputs: {', '.join(f'{p.path} ({len(p.archs)} rows)' for p in parts)})")
    table = assemble(cache, order, parts, index_part, builder="generic", label_order=labels)
    validate_labels(table, labels, label_range if label_range is not None else (-np.inf, np.inf))  # always: no NaN
    return table


def parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    return lo, hi


@FORMATS.register("generic")
class GenericFormat(TableFormat):
    help = "any CSV / Parquet files with an arch column -> one table"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--space", required=True)
        parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                            help="a space setting the architectures are parsed with (repeatable), e.g. supernet=base")
        parser.add_argument("--input", action="append", required=True, help="CSV or Parquet file (repeatable)")
        parser.add_argument("--arch-column", default=None)
        parser.add_argument("--labels", default=None, help="comma-separated label columns (default: all numeric)")
        parser.add_argument("--how", choices=["inner"], default=None, help="keep only archs common to all inputs")
        parser.add_argument("--expected-rows", type=int, default=None)
        parser.add_argument("--label-range", type=parse_range, default=LABEL_RANGE, help="LO,HI (default 0,100)")
        parser.add_argument("--no-label-range", action="store_true",
                            help="labels are not percentages: skip the range check")
        super().add_arguments(parser)

    def build_from_args(self, args: argparse.Namespace) -> pa.Table:
        labels = [s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None
        return build_generic_table(args.input, space_with_settings(args.space, args.settings), args.arch_column,
                                   labels, args.expected_rows, args.how,
                                   None if args.no_label_range else args.label_range)


def space_with_settings(name: str, assignments: Sequence[str]) -> SearchSpace:
    """The space `name` with `KEY=VALUE` settings, checked like the run config's `space.settings`."""
    import yaml

    from pipeline.settings import build
    from pipeline.spaces import SPACES

    cls = SPACES.get(name)
    values = {}
    for a in assignments:
        key, sep, raw = a.partition("=")
        if not sep:
            raise DataError(f"--set {a!r} is not of the form KEY=VALUE")
        values[key.strip()] = yaml.safe_load(raw)
    return cls(build(cls.Settings, values, "space.settings."))
