"""The finished parts -> one arch-accuracy table in the core schema (data_prep/tables/schema.py), written
atomically: `index` (draw order), `arch`, one label column per evaluated split (percent), `params` and
`flops` (the space's cost()), `iso_class`; the metadata records the label job."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_prep.label.job import LabelJob
from data_prep.tables.build import finish_table, validate_labels, write_table
from data_prep.tables.parts import ArchCache
from data_prep.tables.schema import LABEL_RANGE
from pipeline.spaces import SearchSpace

BUILDER = "label"


def build_label_table(job: LabelJob, space: SearchSpace, archs: list[str], parts: dict[str, dict[str, Any]]) -> pa.Table:
    cache = ArchCache(space)
    order = [cache.canon(a) for a in archs]
    columns: dict[str, pa.Array] = {}
    for name in job.label_columns:
        columns[name] = pa.array([float(parts[a]["labels"][name]) for a in archs], pa.float64())
    costs = [space.cost(cache.parsed[a]) for a in order]
    for key in ("params", "flops"):
        columns[key] = pa.array([float(c[key]) for c in costs], pa.float64())
    manifest = Path(job.shards) / f"{job.dataset}-manifest.json"
    sources = [{"path": str(manifest), "sha256": job.manifest_sha256, "columns": job.label_columns}]
    meta = {k: v for k, v in job.fingerprint().items() if k not in ("label_names",)}
    table = finish_table(cache, order, np.arange(len(order)), columns, BUILDER, job.label_columns, sources,
                         label_job=meta)
    validate_labels(table, job.label_columns, LABEL_RANGE)
    return table


def write_label_table(job: LabelJob, space: SearchSpace, archs: list[str], parts: dict[str, dict[str, Any]],
                      out: str | Path) -> Path:
    return write_table(build_label_table(job, space, archs, parts), out)
