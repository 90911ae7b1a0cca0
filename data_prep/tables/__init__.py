"""NAS benchmark files -> one Parquet table per benchmark in the core schema (schema.py), keyed by the
space's canonical architecture string (`python -m data_prep.tables --help`).

Formats (one module each, registered in formats.FORMATS; each is a subcommand):
  nb201           the shared NAS-Bench-201 CSV files of a directory (nb201.py)
  generic         any CSV / Parquet files with an arch column (generic.py)
  naslib          NASLib zero-cost JSON files, both layouts (naslib.py)
  nb101_vis       the 1,000-cell nasbench-vis JSON of NAS-Bench-101 (nb101_vis.py)
  nb101_tfrecord  NAS-Bench-101's official tfrecord files, without TensorFlow (nb101_tfrecord.py, tfrecord.py)
  nats_bench      NATS-Bench-TSS / NAS-Bench-201 official files via the `nats_bench` package (extra
                  `[benchmarks]`; nats_bench.py)
Shared: parts.py (reading one source file), build.py (join, metadata, validation, atomic write),
prepare.py (each space's default table: `prepare_table`, what the trainer calls), cli.py.
"""
from data_prep.tables.build import read_meta, validate_labels, write_table
from data_prep.tables.cli import main
from data_prep.tables.formats import FORMATS, TableFormat
# importing a format's module registers it in FORMATS
from data_prep.tables.generic import build_generic_table
from data_prep.tables.naslib import build_naslib_table
from data_prep.tables.nats_bench import build_nats_bench_table
from data_prep.tables.nb101_tfrecord import build_nb101_tfrecord_table
from data_prep.tables.nb101_vis import build_nb101_vis_table
from data_prep.tables.nb201 import (NB201_12EP, NB201_COST, NB201_SIZE, NB201_TEST_200EP, NB201_VAL_200EP_GLOB,
                                    build_nb201_table, nb201_source_files)
from data_prep.tables.parts import ArchCache
from data_prep.tables.prepare import DEFAULT_TABLES, prepare, prepare_table
from data_prep.tables.schema import COST_COLUMNS, FORMAT_VERSION, LABEL_RANGE, META_KEY
from pipeline.utils.io import file_sha256

__all__ = ["FORMATS", "TableFormat", "DEFAULT_TABLES", "prepare", "prepare_table", "build_nb201_table",
           "build_generic_table", "build_naslib_table", "build_nb101_vis_table", "build_nb101_tfrecord_table",
           "build_nats_bench_table", "nb201_source_files", "write_table", "read_meta",
           "validate_labels", "ArchCache", "main", "file_sha256", "META_KEY", "FORMAT_VERSION", "LABEL_RANGE",
           "COST_COLUMNS", "NB201_SIZE", "NB201_TEST_200EP", "NB201_VAL_200EP_GLOB", "NB201_12EP", "NB201_COST"]
