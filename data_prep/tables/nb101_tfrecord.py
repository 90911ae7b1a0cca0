"""NAS-Bench-101's official files (nasbench_only108.tfrecord, nasbench_full.tfrecord) -> one table,
read without TensorFlow (format `nb101_tfrecord`; the framing and protobuf decoding are in tfrecord.py).

Each record (as nasbench/api.py reads it) is UTF-8 JSON `[module_hash, epochs, raw_adjacency,
raw_operations, raw_metrics]`: the adjacency as n*n '0'/'1' characters (row-major), the ops comma-separated
(`input,conv3x3-bn-relu,...,output`), and the metrics a base64 `nasbench.ModelMetrics` protobuf:
  ModelMetrics   1 evaluation_data (repeated EvaluationData), 2 trainable_parameters (int32), 3 total_time
  EvaluationData 1 current_epoch, 2 training_time, 3 train_accuracy, 4 validation_accuracy,
                 5 test_accuracy (doubles), 6 checkpoint_path
There is one record per (cell, epoch budget, repeat); evaluation_data[2] is the end of training (what the
API's `query` returns; [0] is step 0, [1] half way). Rows: one per module hash, in file order. Columns, for
every epoch budget E in the file (4/12/36/108): `cifar10_valid_val_<E>ep` and `cifar10_test_<E>ep` (mean over
the repeats, in percent; labels), then `params` (trainable parameters / 1e6), `training_time_s` (mean
training time at the largest E), `nb101_hash`, `iso_class`.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from data_prep.tables.build import finish_table, validate_labels
from data_prep.tables.formats import FORMATS, TableFormat
from data_prep.tables.nb101_vis import cell_json, nb101_label
from data_prep.tables.parts import ArchCache, check_unique, examples
from data_prep.tables.tfrecord import as_double, as_int32, decode_fields, read_records
from pipeline.errors import ArchError, DataError
from pipeline.spaces import SearchSpace, get_space
from pipeline.utils.io import file_sha256

FINAL = 2  # evaluation_data index of the end of training (nasbench/api.py)


@dataclass
class Evaluation:
    training_time: float = 0.0
    train_accuracy: float = 0.0
    validation_accuracy: float = 0.0
    test_accuracy: float = 0.0


@dataclass
class ModelMetrics:
    evaluations: list[Evaluation] = field(default_factory=list)
    trainable_parameters: int = 0
    total_time: float = 0.0


_EVAL_FIELDS = {2: "training_time", 3: "train_accuracy", 4: "validation_accuracy", 5: "test_accuracy"}


def decode_model_metrics(buf: bytes) -> ModelMetrics:
    """A serialized nasbench.ModelMetrics (ValueError if malformed); unknown fields are skipped."""
    metrics = ModelMetrics()
    for number, wire, value in decode_fields(buf):
        if number == 1:
            if wire != 2:
                raise ValueError(f"evaluation_data has wire type {wire}, expected 2")
            ev = Evaluation()
            for n2, w2, v2 in decode_fields(value):
                if n2 in _EVAL_FIELDS:
                    setattr(ev, _EVAL_FIELDS[n2], as_double(w2, v2))
            metrics.evaluations.append(ev)
        elif number == 2:
            metrics.trainable_parameters = as_int32(wire, value)
        elif number == 3:
            metrics.total_time = as_double(wire, value)
    return metrics


def decode_record(data: bytes) -> tuple[str, int, str, str, ModelMetrics]:
    """One record -> (module hash, epochs, raw adjacency, raw operations, metrics); ValueError if malformed."""
    try:
        row = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"not UTF-8 JSON ({e})") from None
    if not (isinstance(row, list) and len(row) == 5):
        raise ValueError("expected a JSON list [module_hash, epochs, adjacency, operations, metrics]")
    module_hash, epochs, adjacency, operations, raw = row
    if not (isinstance(module_hash, str) and isinstance(epochs, int) and isinstance(adjacency, str)
            and isinstance(operations, str) and isinstance(raw, str)):
        raise ValueError("expected [str, int, str, str, str] as in nasbench's files")
    try:
        metrics = decode_model_metrics(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"malformed metrics ({e})") from None
    if len(metrics.evaluations) <= FINAL:
        raise ValueError(f"metrics hold {len(metrics.evaluations)} evaluations, need {FINAL + 1} "
                         "(start, half way, end of training)")
    return module_hash, epochs, adjacency, operations, metrics


def cell_text(adjacency: str, operations: str) -> str:
    """nasbench's raw strings -> the JSON form of the nb101 space; ValueError if they do not fit."""
    n = math.isqrt(len(adjacency))
    if n * n != len(adjacency) or set(adjacency) - {"0", "1"}:
        raise ValueError(f"adjacency {adjacency!r} is not n*n '0'/'1' characters")
    ops = operations.split(",")
    if len(ops) != n:
        raise ValueError(f"{len(ops)} operations for a {n}x{n} adjacency")
    return cell_json([[int(adjacency[i * n + j]) for j in range(n)] for i in range(n)], ops)


class _Sums:
    """Running sums per cell (by first-appearance number) for one epoch budget: repeats are averaged
    without keeping 1.3 M records in memory."""

    def __init__(self) -> None:
        self.count, self.val, self.test, self.time = array("l"), array("d"), array("d"), array("d")

    def add(self, cell: int, ev: Evaluation) -> None:
        while len(self.count) <= cell:
            for a in (self.count, self.val, self.test, self.time):
                a.append(0)
        self.count[cell] += 1
        self.val[cell] += ev.validation_accuracy
        self.test[cell] += ev.test_accuracy
        self.time[cell] += ev.training_time

    def mean(self, values: array, n_cells: int) -> np.ndarray:
        count = np.zeros(n_cells)
        total = np.zeros(n_cells)
        count[:len(self.count)] = self.count
        total[:len(values)] = values
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count  # NaN where a cell has no run (reported before)


def build_nb101_tfrecord_table(path: str | Path, space: SearchSpace | str = "nb101") -> pa.Table:
    """An official NAS-Bench-101 tfrecord file as a table (module doc)."""
    path = Path(path)
    space = get_space(space) if isinstance(space, str) else space
    cell_of: dict[str, int] = {}
    hashes: list[str] = []
    texts: list[str] = []
    params = array("d")
    sums: dict[int, _Sums] = {}
    size = path.stat().st_size if path.is_file() else None
    with tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=None) as bar:
        for n, data in enumerate(read_records(path)):
            bar.update(len(data) + 16)
            try:
                module_hash, epochs, adjacency, operations, metrics = decode_record(data)
                cell = cell_of.get(module_hash)
                if cell is None:
                    cell = cell_of[module_hash] = len(hashes)
                    hashes.append(module_hash)
                    texts.append(cell_text(adjacency, operations))
                    params.append(metrics.trainable_parameters / 1e6)
            except ValueError as e:
                raise DataError(f"{path}: record {n}: not a NAS-Bench-101 record: {e}") from e
            sums.setdefault(epochs, _Sums()).add(cell, metrics.evaluations[FINAL])
    if not hashes:
        raise DataError(f"{path}: no records")
    for epochs, s in sums.items():
        lacking = [hashes[i] for i in range(len(hashes)) if i >= len(s.count) or s.count[i] == 0]
        if lacking:
            raise DataError(f"{path}: {len(lacking)} cell(s) have no {epochs}-epoch record, e.g. hash "
                            f"{examples(lacking)}")
    cache = ArchCache(space)
    archs = []
    for module_hash, text in zip(hashes, texts):
        try:
            archs.append(cache.canon(text))
        except ArchError as e:
            raise DataError(f"{path}: hash {module_hash}: not a {space.name} cell: {e}") from e
    check_unique(path, archs, keys=hashes)
    n_cells = len(hashes)
    columns: dict[str, pa.Array] = {}
    labels = []
    for epochs in sorted(sums):
        s = sums[epochs]
        for metric, values in (("valid_val", s.val), ("test", s.test)):
            labels.append(nb101_label(epochs, metric))
            columns[labels[-1]] = pa.array(s.mean(values, n_cells) * 100.0)
    columns["params"] = pa.array(np.frombuffer(params, dtype=np.float64))
    columns["training_time_s"] = pa.array(sums[max(sums)].mean(sums[max(sums)].time, n_cells))
    columns["nb101_hash"] = pa.array(hashes, pa.string())
    repeats = {}
    for epochs in sorted(sums):
        counts = np.asarray(sums[epochs].count, dtype=np.int64)
        lo, hi = int(counts.min()), int(counts.max())
        repeats[str(epochs)] = lo if lo == hi else f"{lo}-{hi}"
    sources = [{"path": str(path), "sha256": file_sha256(path), "columns": list(columns)}]
    table = finish_table(cache, archs, np.arange(n_cells), columns, "nb101_tfrecord", labels, sources,
                         aggregate="mean over repeats", repeats=repeats,
                         label_scale={name: 100.0 for name in labels})
    validate_labels(table, labels, where=str(path))
    return table


@FORMATS.register("nb101_tfrecord")
class NB101TFRecordFormat(TableFormat):
    help = "NAS-Bench-101's nasbench_only108.tfrecord / nasbench_full.tfrecord (no TensorFlow needed) -> one table"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", required=True, help="the .tfrecord file")
        super().add_arguments(parser)

    def build_from_args(self, args: argparse.Namespace) -> pa.Table:
        return build_nb101_tfrecord_table(args.input)

    def build_default(self, space: str, benchmark_dir: Path, file: str | None) -> pa.Table:
        return build_nb101_tfrecord_table(self.sources(benchmark_dir, file)[0], space)
