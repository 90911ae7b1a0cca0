"""The registry of benchmark formats: one class per format (one module each), registered by name;
`python -m data_prep.tables <name> ...` is that format's command and `prepare_table` builds a space's
default table through it (prepare.py)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from data_prep.tables.build import write_table
from pipeline.errors import DataError
from pipeline.registry import Registry


class TableFormat:
    """A benchmark format: its CLI arguments, a build from them, and (for the default tables of
    prepare.py) the source files it reads from a benchmark directory and a build from those."""

    help: ClassVar[str] = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, help="the Parquet table to write")

    def build_from_args(self, args: argparse.Namespace) -> pa.Table:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> tuple[Path, bool]:
        """The command: write the table; (path, True) when an up-to-date table was kept instead."""
        return write_table(self.build_from_args(args), args.out), False

    def sources(self, benchmark_dir: Path, file: str | None) -> list[Path]:
        """The files a default build reads (their sha256 decide whether a table is up to date)."""
        if file is None:
            raise DataError(f"the {type(self).__name__} format needs a source file name")
        path = Path(benchmark_dir) / file
        if not path.is_file():
            raise DataError(f"{path}: benchmark file does not exist (benchmark directory {benchmark_dir})")
        return [path]

    def build_default(self, space: str, benchmark_dir: Path, file: str | None) -> pa.Table:
        """The table of `space` from `file` in `benchmark_dir` (what prepare_table writes)."""
        raise NotImplementedError(f"{type(self).__name__} has no default build")


FORMATS: Registry[type[TableFormat]] = Registry("table format")
