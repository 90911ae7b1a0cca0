"""NAS-Bench-201 from the four shared CSV files -> one table (format `nb201`).

Reads whichever of these exist in the benchmark directory, joined by canonical architecture, never by
row position (the files order their rows differently: NB201 index order vs NASLib tuples):
  nb201_200ep_test_acc.csv              <X>TestAccuracy200Epochs -> <x>_test_200ep (CIFAR10 -> cifar10,
                                        CIFAR100 -> cifar100, ImageNet16-120 -> imagenet16_120, others
                                        snake_case); ArchitectureString; row i = benchmark index i
  nb201_<ds>_val_acc_robustness.csv     net (NASLib tuple), val_accs -> cifar10_valid_val_200ep
                                        (<ds>_val_200ep for other datasets); robustness columns dropped
  nb201_12ep_acc.csv                    index, arch_str, <ds>valid_val_12ep -> <ds>_valid_val_12ep,
                                        other numeric columns snake_case (cifar10_test_12ep)
  nb201_cifar10_unique_zc_flops_params.csv   net, flops, params (9,445 rows) -> nullable flops/params
Each full file must hold all 15,625 architectures exactly once. `flops_computed` / `params_computed`
are `space.cost(arch)` for every row.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from data_prep.tables.build import (assemble, reference_order, table_meta, validate_labels,
                                    write_unless_current)
from data_prep.tables.formats import FORMATS, TableFormat
from data_prep.tables.parts import (ArchCache, Part, canonical_archs, check_full, check_index_unique,
                                    check_unique, float_array, index_column, is_numeric, read_source,
                                    require_columns, snake_case)
from data_prep.tables.schema import COST_COLUMNS, INDEX_LIKE, ISO_CLASS
from pipeline.errors import DataError
from pipeline.spaces import get_space
from pipeline.utils.io import file_sha256

NB201_SIZE = 15_625
NB201_TEST_200EP = "nb201_200ep_test_acc.csv"
NB201_VAL_200EP_GLOB = "nb201_*_val_acc_robustness.csv"
NB201_12EP = "nb201_12ep_acc.csv"
NB201_COST = "nb201_cifar10_unique_zc_flops_params.csv"
_NB201_DATASETS = {"CIFAR10": "cifar10", "CIFAR100": "cifar100", "ImageNet16-120": "imagenet16_120"}


def _nb201_test_200ep(path: Path, cache: ArchCache) -> Part:
    table = read_source(path, string_columns=["ArchitectureString"])
    require_columns(path, table, ["ArchitectureString"])
    columns = {}
    for name in table.column_names:
        m = re.fullmatch(r"(.+)TestAccuracy200Epochs", name)
        if m:
            ds = _NB201_DATASETS.get(m.group(1), snake_case(m.group(1)))
            columns[f"{ds}_test_200ep"] = float_array(table[name])
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
    require_columns(path, table, ["net", "val_accs"])
    archs = canonical_archs(path, "net", table["net"].to_pylist(), cache)
    return Part(path, archs, {label: float_array(table["val_accs"])}, full=True)


def _nb201_12ep(path: Path, cache: ArchCache) -> Part:
    table = read_source(path, string_columns=["arch_str"])
    require_columns(path, table, ["arch_str"])
    columns = {}
    for name in table.column_names:
        if name.lower() in INDEX_LIKE or name == "arch_str" or not is_numeric(table[name].type):
            continue
        m = re.fullmatch(r"(.+?)_?valid_val_12ep", name)
        out = f"{snake_case(m.group(1))}_valid_val_12ep" if m else snake_case(name)
        columns[out] = float_array(table[name])
    archs = canonical_archs(path, "arch_str", table["arch_str"].to_pylist(), cache)
    index = index_column(path, table, "index") if "index" in table.column_names else None
    return Part(path, archs, columns, index=index, full=True)


def _nb201_cost(path: Path, cache: ArchCache) -> Part:
    table = read_source(path, string_columns=["net"], include=["net", "flops", "params"])
    archs = canonical_archs(path, "net", table["net"].to_pylist(), cache)
    check_unique(path, archs)
    return Part(path, archs, {c: float_array(table[c]) for c in COST_COLUMNS})


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
    """Join the NB201 benchmark files found in `benchmark_dir` by architecture (module doc, schema.py)."""
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
    order = reference_order(parts, index_part)
    table = assemble(cache, order, parts, index_part, builder="nb201")
    table = _add_computed_cost(table, cache)
    if table.num_rows != NB201_SIZE:  # cannot happen after check_full, but the contract is 15,625 rows
        raise DataError(f"{d}: joined NB201 table has {table.num_rows} rows, expected {NB201_SIZE}")
    validate_labels(table, table_meta(table)["label_columns"])
    return table


def _add_computed_cost(table: pa.Table, cache: ArchCache) -> pa.Table:
    costs = [cache.space.cost(cache.parsed[a]) for a in table["arch"].to_pylist()]
    pos = table.column_names.index(ISO_CLASS)  # keep iso_class last
    for name in ("flops", "params"):
        values = pa.array([c[name] for c in costs], pa.float64())
        table = table.add_column(pos, f"{name}_computed", values)
        pos += 1
    return table


@FORMATS.register("nb201")
class NB201Format(TableFormat):
    help = "the shared NAS-Bench-201 CSV files of a directory -> one table (skips if up to date)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--benchmark-dir", required=True, help="directory with the nb201_*.csv files")
        super().add_arguments(parser)
        parser.add_argument("--force", action="store_true", help="rebuild even if the sources are unchanged")

    def run(self, args: argparse.Namespace) -> tuple[Path, bool]:
        d = Path(args.benchmark_dir)
        return write_unless_current(args.out, "nb201", "nb201", self.sources(d, None),
                                    lambda: build_nb201_table(d), force=args.force)

    def sources(self, benchmark_dir: Path, file: str | None) -> list[Path]:
        return nb201_source_files(benchmark_dir)

    def build_default(self, space: str, benchmark_dir: Path, file: str | None) -> pa.Table:
        if space != "nb201":
            raise DataError(f"the nb201 format builds NB201 tables only, not {space!r}")
        return build_nb201_table(benchmark_dir)
