"""The core table schema: what every prepared benchmark table holds (shared by the writers in
data_prep.tables and the reader pipeline.data.tables; data_prep/README.md has the same table).

  column                     type     meaning
  index                      int64    benchmark index when a source has one (NB201: row i of
                                      nb201_200ep_test_acc.csv = NATS-Bench-TSS index i; NASLib: `idx`),
                                      else row order
  arch                       string   the space's canonical string, `space.to_str(space.parse(x))`; unique
  <label> ...                float64  one column per label, accuracies in percent, never null
  flops, params              float64  optional; MFLOPs / M params as the source reports them, null where
                                      the source has no value (NB201: only its 9,445 non-isomorphic cells)
  <other numeric> ...        float64  optional, nullable: zero-cost proxies, times, computed costs
  <other string> ...         string   optional: e.g. nb101_hash (the source's own key)
  iso_class                  string   `space.isomorphism_class(arch)`: equal strings = equivalent cells

Rows are sorted by `index`. The schema metadata key b"hypernas" holds JSON:

  {"space": "nb201", "builder": <format name>, "label_columns": [...], "format_version": 1,
   "sources": [{"path": ..., "sha256": ..., "columns": [output columns taken from that file]}, ...],
   ... builder-specific keys (dataset, label_scale, ...)}

This module imports nothing heavy: the reader uses it without the writers' dependencies' cost.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

FORMAT_VERSION = 1  # newest table format; a reader refuses newer ones
META_KEY = b"hypernas"  # schema-metadata key of the JSON above

ARCH = "arch"
INDEX = "index"
ISO_CLASS = "iso_class"
COST_COLUMNS = ("flops", "params")
LABEL_RANGE = (0.0, 100.0)  # labels are percent accuracies
# Column names that number rows rather than measure anything (pandas writes the last two).
INDEX_LIKE = ("index", "idx", "id", "arch_index", "arch_idx", "unnamed: 0", "__index_level_0__", "")


def encode_meta(meta: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Schema metadata for `pa.Table.replace_schema_metadata`."""
    return {META_KEY: json.dumps(dict(meta)).encode()}


def decode_meta(metadata: Mapping[bytes, bytes] | None) -> dict[str, Any]:
    """The metadata JSON of a schema ({} without it); ValueError if it is not JSON."""
    raw = (metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}
