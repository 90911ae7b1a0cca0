"""The table a space trains on by default, built from its benchmark directory when missing
(`prepare_table`, called by the trainer through pipeline/data/loading.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from data_prep.tables.build import write_unless_current
from data_prep.tables.formats import FORMATS
from pipeline.errors import DataError


@dataclass(frozen=True)
class DefaultTable:
    format: str            # a FORMATS name
    file: str | None       # its source file in the benchmark directory (None: the format finds its files)


# space -> how its default table is built from `data.benchmark_dir`
DEFAULT_TABLES: dict[str, DefaultTable] = {
    "nb201": DefaultTable("nb201", None),
    "nb101": DefaultTable("nb101_vis", "nasbench_vis_nb101_1000.json"),
    "darts": DefaultTable("naslib", "naslib_zc_nasbench301_725.json"),
}


def prepare(space_name: str, benchmark_dir: str | os.PathLike, out_path: str | os.PathLike,
            force: bool = False) -> tuple[Path, bool]:
    """`prepare_table`, also saying whether the existing table was kept (True) or (re)written."""
    if space_name not in DEFAULT_TABLES:
        raise DataError(f"no default benchmark table for space {space_name!r} (known: {', '.join(DEFAULT_TABLES)}); "
                        f"use `python -m data_prep.tables generic --space {space_name} --input ...` or "
                        f"`python -m data_prep.tables naslib --space {space_name} --input ...`")
    default = DEFAULT_TABLES[space_name]
    fmt, d = FORMATS.get(default.format)(), Path(benchmark_dir)
    return write_unless_current(out_path, space_name, default.format, fmt.sources(d, default.file),
                                lambda: fmt.build_default(space_name, d, default.file), force=force)


def prepare_table(space_name: str, benchmark_dir: str | os.PathLike, out_path: str | os.PathLike,
                  force: bool = False) -> Path:
    """Build and write the space's default table unless `out_path` already matches the current sources."""
    return prepare(space_name, benchmark_dir, out_path, force)[0]
