"""NATS-Bench topology (NAS-Bench-201) official files -> one table, through the `nats_bench` API package
(format `nats_bench`; optional extra `[benchmarks]`).

Reads `NATS-tss-v1_0-3ffb9-simple/` (a directory: the API's fast mode), the single-file
`NATS-tss-v1_0-3ffb9.pickle.pbz2`, or a NAS-Bench-201 `NAS-Bench-201-v1_*.pth` (a torch-saved dict whose
per-architecture results are keyed 'less' / 'full' = the 12- / 200-epoch schedules; renamed to the API's
hp '12' / '200'). Rows: NATS index order; `arch` is the index's arch string in canonical form. Columns per
hp H (default 200 and 12) and dataset present in the file, the mean over seeds (`is_random=False`):
  cifar10-valid  valid-accuracy -> cifar10_valid_val_<H>ep     cifar10   test-accuracy -> cifar10_test_<H>ep
  cifar100       valid/test     -> cifar100_val_<H>ep, cifar100_test_<H>ep
  ImageNet16-120 valid/test     -> imagenet16_120_val_<H>ep, imagenet16_120_test_<H>ep
(the names of the nb201 format's columns), then `flops` / `params` (M) from `get_cost_info(i, "cifar10")`.
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from data_prep.tables.build import finish_table, validate_labels
from data_prep.tables.formats import FORMATS, TableFormat
from data_prep.tables.parts import ArchCache, check_unique
from pipeline.errors import ArchError, DataError, UserError
from pipeline.spaces import get_space
from pipeline.utils.io import file_sha256

EXTRA_HINT = ("the nats_bench format needs the optional package nats_bench: "
              "pip install -e '.[benchmarks]'")
# (API dataset, info key, column prefix)
COLUMNS = (("cifar10-valid", "valid-accuracy", "cifar10_valid_val"), ("cifar10", "test-accuracy", "cifar10_test"),
           ("cifar100", "valid-accuracy", "cifar100_val"), ("cifar100", "test-accuracy", "cifar100_test"),
           ("ImageNet16-120", "valid-accuracy", "imagenet16_120_val"),
           ("ImageNet16-120", "test-accuracy", "imagenet16_120_test"))
DEFAULT_HPS = ("200", "12")
_API_ERRORS = (ValueError, KeyError, AssertionError, AttributeError, TypeError, IndexError)


def _nb201_as_nats(data: Any) -> Any:
    """A NAS-Bench-201 .pth dict with NATS-Bench's hp keys ('less' -> '12', 'full' -> '200')."""
    if not (isinstance(data, dict) and isinstance(data.get("arch2infos"), dict)):
        return data  # the API names what is missing
    renamed = {"less": "12", "full": "200"}
    infos = {i: {renamed.get(hp, hp): res for hp, res in by_hp.items()} for i, by_hp in data["arch2infos"].items()}
    return {**data, "arch2infos": infos}


def open_api(path: str | Path) -> Any:
    """The nats_bench topology API over a file or directory; UserError naming the extra if it is missing."""
    try:
        import nats_bench
    except ImportError:
        raise UserError(EXTRA_HINT) from None
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: input file does not exist")
    try:
        source: Any = str(path)
        if path.suffix == ".pth":
            import torch

            # a plain dict of results (the benchmark's own pickle, as nas_201_api loads it)
            source = _nb201_as_nats(torch.load(path, map_location="cpu", weights_only=False))
        return nats_bench.create(source, "tss", fast_mode=path.is_dir(), verbose=False)
    except (*_API_ERRORS, OSError, EOFError, ImportError, RuntimeError, pickle.UnpicklingError) as e:
        raise DataError(f"{path}: not a NATS-Bench topology (tss) file or directory: {type(e).__name__}: {e}") from e


def _datasets(api: Any, hp: str) -> list[str]:
    """The API datasets that architecture 0 has results for (a file holds the same ones for all)."""
    present = []
    for ds in dict.fromkeys(d for d, _, _ in COLUMNS):
        try:
            api.get_more_info(0, ds, hp=hp, is_random=False)
        except _API_ERRORS:
            continue
        present.append(ds)
    return present


def table_from_api(api: Any, source: str, hps: Sequence[str] = DEFAULT_HPS, sha256: str = "") -> pa.Table:
    """Every architecture of a NATS-Bench topology API object as a table (module doc); `source` (the
    file it was opened from) names it in errors and the metadata."""
    space = get_space("nb201")
    cache = ArchCache(space)
    n = len(api)
    if n == 0:
        raise DataError(f"{source}: no architectures")
    archs = []
    for i in range(n):
        try:
            archs.append(cache.canon(api[i]))
        except ArchError as e:
            raise DataError(f"{source}: architecture {i}: {e}") from e
    check_unique(Path(source), archs)
    wanted = [(hp, ds, key, f"{prefix}_{hp}ep") for hp in hps for ds in _datasets(api, hp)
              for d, key, prefix in COLUMNS if d == ds]
    if not wanted:
        raise DataError(f"{source}: architecture 0 has no results for hp {', '.join(hps)} on any of "
                        f"{', '.join(dict.fromkeys(d for d, _, _ in COLUMNS))}")
    values = {name: np.full(n, np.nan) for *_, name in wanted}
    flops, params = np.full(n, np.nan), np.full(n, np.nan)
    for i in tqdm(range(n), desc=Path(source).name, unit="arch", disable=None):
        infos: dict[tuple[str, str], dict] = {}  # one API call per (hp, dataset), not per column
        for hp, ds, key, name in wanted:
            try:
                if (hp, ds) not in infos:
                    infos[hp, ds] = api.get_more_info(i, ds, hp=hp, is_random=False)
                values[name][i] = infos[hp, ds][key]
            except _API_ERRORS as e:
                raise DataError(f"{source}: architecture {i} ({api[i]}): no {key} on {ds} at hp {hp} "
                                f"({type(e).__name__}: {e})") from e
        try:
            cost = api.get_cost_info(i, "cifar10", hp=hps[0])
            flops[i], params[i] = cost["flops"], cost["params"]
        except _API_ERRORS:
            pass  # costs are optional columns: null where the file has none
    columns = {name: pa.array(v) for name, v in values.items()}
    for name, v in (("flops", flops), ("params", params)):
        columns[name] = pa.array(v, mask=np.isnan(v))
    labels = [name for *_, name in wanted]
    sources = [{"path": source, "sha256": sha256, "columns": list(columns)}]
    table = finish_table(cache, archs, np.arange(n), columns, "nats_bench", labels, sources,
                         hps=list(hps), aggregate="mean over seeds")
    validate_labels(table, labels, where=source)
    return table


def _fingerprint(path: Path) -> str:
    """sha256 of a file; of a fast-mode directory, of its meta file (the per-arch files are 15,625)."""
    meta = next(iter(sorted(path.glob("meta.*"))), None) if path.is_dir() else path
    return file_sha256(meta) if meta is not None else ""


def build_nats_bench_table(path: str | Path, hps: Sequence[str] = DEFAULT_HPS) -> pa.Table:
    path = Path(path)
    """A NATS-Bench topology / NAS-Bench-201 file or fast-mode directory as a table (module doc)."""
    api = open_api(path)
    return table_from_api(api, str(path), hps, _fingerprint(path))


@FORMATS.register("nats_bench")
class NATSBenchFormat(TableFormat):
    help = "NATS-Bench-TSS / NAS-Bench-201 official files via the nats_bench package (extra [benchmarks]) -> one table"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--input", required=True,
                            help="NATS-tss-v1_0-3ffb9-simple/ (dir), NATS-tss-*.pickle.pbz2 or NAS-Bench-201-v1_*.pth")
        parser.add_argument("--hp", default=",".join(DEFAULT_HPS),
                            help="training schedules, comma-separated (default 200,12)")
        super().add_arguments(parser)

    def build_from_args(self, args: argparse.Namespace) -> pa.Table:
        return build_nats_bench_table(args.input, [h.strip() for h in args.hp.split(",") if h.strip()])
