"""The nasbench-vis NAS-Bench-101 file (1,000 cells, parallel lists) -> one table (format `nb101_vis`).

Lists: `key` (NB101 module hash), `adjacency` (7x7 0/1), `operations` (7 ids: -1 input, -2 output,
0 conv3x3-bn-relu, 1 conv1x1-bn-relu, 2 maxpool3x3, -3 a padding vertex without edges, dropped here),
`<E>_final_validation_accuracy` (fractions), `final_training_time` (s), `trainable_parameters`; `embedding`
(a t-SNE plot position) is ignored. Columns: `cifar10_valid_val_<E>ep` (percent; labels), `params`
(trainable parameters / 1e6), `training_time_s`, `nb101_hash` (the file's key), and `iso_class`, which for
the nb101 space is the same module hash.
"""
from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from data_prep.tables.build import finish_table, validate_labels
from data_prep.tables.formats import FORMATS, TableFormat
from data_prep.tables.naslib import describe, load_json
from data_prep.tables.parts import ArchCache, check_unique
from pipeline.errors import ArchError, DataError
from pipeline.spaces import SearchSpace, get_space
from pipeline.utils.io import file_sha256

VIS_OPS = {-1: "input", -2: "output", 0: "conv3x3-bn-relu", 1: "conv1x1-bn-relu", 2: "maxpool3x3"}
PADDING = -3
_ACC = re.compile(r"(\d+)_final_validation_accuracy")
_REQUIRED = ("key", "adjacency", "operations", "final_training_time", "trainable_parameters")


def nb101_label(epochs: int, metric: str = "valid_val") -> str:
    """Label column of an NB101 accuracy after `epochs` (`valid_val`: NB101's held-out validation split)."""
    return f"cifar10_{metric}_{epochs}ep"


def cell_json(matrix: Sequence[Sequence[int]], ops: Sequence[str]) -> str:
    """The `{"matrix", "ops"}` JSON form the nb101 space parses."""
    return json.dumps({"matrix": [[int(x) for x in row] for row in matrix], "ops": list(ops)})


def _vis_cell(where: str, adjacency: Any, operations: Any) -> str:
    """One row's adjacency + op ids -> the JSON form, padding vertices dropped."""
    if not (isinstance(operations, list) and isinstance(adjacency, list)
            and all(isinstance(r, list) and len(r) == len(operations) for r in adjacency)
            and len(adjacency) == len(operations)):
        raise DataError(f"{where}: adjacency must be an n x n list of rows for its {describe(operations)} operations")
    unknown = [op for op in operations if op not in VIS_OPS and op != PADDING]
    if unknown:
        raise DataError(f"{where}: unknown op id {unknown[0]!r}; ids: "
                        + ", ".join(f"{k} {v}" for k, v in VIS_OPS.items()) + f", {PADDING} padding")
    keep = [v for v, op in enumerate(operations) if op != PADDING]
    for v, op in enumerate(operations):
        if op == PADDING and (any(adjacency[v]) or any(row[v] for row in adjacency)):
            raise DataError(f"{where}: padding vertex {v} has edges")
    matrix = [[adjacency[i][j] for j in keep] for i in keep]
    return cell_json(matrix, [VIS_OPS[operations[v]] for v in keep])


def _numbers(path: Path, name: str, values: list, scale: float = 1.0) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for row, v in enumerate(values):
        if v is None:
            v = math.nan  # a missing label is reported by validate_labels (with its arch)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"{path}: {name!r}, row {row}: {describe(v)}, expected a number")
        out[row] = float(v) * scale
    return out


def build_nb101_vis_table(path: str | Path, space: SearchSpace | str = "nb101") -> pa.Table:
    """The nasbench-vis JSON as a table (module doc)."""
    path = Path(path)
    space = get_space(space) if isinstance(space, str) else space
    data = load_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object of parallel lists ({', '.join(_REQUIRED)}, "
                        f"<E>_final_validation_accuracy), got {describe(data)}")
    epochs = sorted(int(m.group(1)) for k in data if (m := _ACC.fullmatch(k)))
    missing = [k for k in _REQUIRED if k not in data] + ([] if epochs else ["<E>_final_validation_accuracy"])
    if missing:
        raise DataError(f"{path}: missing list(s) {', '.join(missing)}; keys: {', '.join(data)}")
    lists = [*_REQUIRED, *(f"{e}_final_validation_accuracy" for e in epochs)]
    lengths = {k: len(data[k]) if isinstance(data[k], list) else None for k in lists}
    if len(set(lengths.values())) != 1 or None in lengths.values():
        raise DataError(f"{path}: the lists must be parallel (one entry per cell); lengths: "
                        + ", ".join(f"{k} {n if n is not None else describe(data[k])}" for k, n in lengths.items()))
    cache = ArchCache(space)
    keys = data["key"]
    archs = []
    for row, (key, adj, ops) in enumerate(zip(keys, data["adjacency"], data["operations"])):
        where = f"{path}: row {row} (hash {key!r})"
        text = _vis_cell(where, adj, ops)
        try:
            archs.append(cache.canon(text))
        except ArchError as e:
            raise DataError(f"{where}: not a {space.name} cell: {e}") from e
    check_unique(path, archs, keys=keys)
    columns: dict[str, pa.Array] = {}
    for e in epochs:  # the file stores fractions; the schema's labels are percent
        columns[nb101_label(e)] = pa.array(_numbers(path, f"{e}_final_validation_accuracy",
                                                    data[f"{e}_final_validation_accuracy"], 100.0))
    columns["params"] = pa.array(_numbers(path, "trainable_parameters", data["trainable_parameters"], 1e-6))
    columns["training_time_s"] = pa.array(_numbers(path, "final_training_time", data["final_training_time"]))
    columns["nb101_hash"] = pa.array([str(k) for k in keys], pa.string())
    labels = [nb101_label(e) for e in epochs]
    sources = [{"path": str(path), "sha256": file_sha256(path), "columns": list(columns)}]
    table = finish_table(cache, archs, np.arange(len(archs)), columns, "nb101_vis", labels, sources,
                         label_scale={name: 100.0 for name in labels})
    validate_labels(table, labels, where=str(path))
    return table


@FORMATS.register("nb101_vis")
class NB101VisFormat(TableFormat):
    help = "the nasbench-vis NAS-Bench-101 JSON (nasbench_vis_nb101_1000.json) -> one table"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", required=True, help="the nasbench-vis JSON file")
        super().add_arguments(parser)

    def build_from_args(self, args: argparse.Namespace) -> pa.Table:
        return build_nb101_vis_table(args.input)

    def build_default(self, space: str, benchmark_dir: Path, file: str | None) -> pa.Table:
        return build_nb101_vis_table(self.sources(benchmark_dir, file)[0], space)
