"""`python -m data_prep.tables <format> ...`: one subcommand per registered format, plus `prepare`
(a space's default table, as the trainer builds it). Exit status 2 and `error: <message>` on bad input;
nothing is written then."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import pyarrow.parquet as pq

from data_prep.tables.build import read_meta
from data_prep.tables.formats import FORMATS
from data_prep.tables.prepare import DEFAULT_TABLES, prepare
from pipeline.errors import UserError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m data_prep.tables",
                                     description="NAS benchmark files -> one Parquet table in the core schema")
    sub = parser.add_subparsers(dest="command", required=True, metavar="FORMAT")
    for name in FORMATS.names():
        fmt = FORMATS.get(name)
        fmt().add_arguments(sub.add_parser(name, help=fmt.help, description=fmt.help))
    p = sub.add_parser("prepare", help="a space's default table from its benchmark directory (skips if up to date)")
    p.add_argument("--space", required=True, choices=sorted(DEFAULT_TABLES))
    p.add_argument("--benchmark-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true", help="rebuild even if the sources are unchanged")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if args.command == "prepare":
            out, kept = prepare(args.space, args.benchmark_dir, args.out, args.force)
        else:
            out, kept = FORMATS.get(args.command)().run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = read_meta(out)
    rows = pq.read_metadata(out).num_rows
    what = "up to date, skipped" if kept else "wrote"
    print(f"{what} {out}: {rows} rows, labels {', '.join(meta['label_columns'])} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0
