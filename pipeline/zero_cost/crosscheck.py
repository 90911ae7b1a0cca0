"""Cross-check our proxy scores against NAS-Bench-Suite-Zero's precomputed values on the shared NB201 cells.

    python -m pipeline.zero_cost.crosscheck --scores TABLE.parquet [--reference CSV] [--out REPORT.json]
    python -m pipeline.zero_cost.crosscheck --scores TABLE.parquet --against OTHER.parquet   # e.g. seed vs seed
    python -m pipeline.zero_cost.crosscheck --scores TABLE.parquet --label cifar10_test_200ep  # + both vs the label

TABLE is what `python -m pipeline.zero_cost` writes (`arch` + `zc_<proxy>` columns). The reference
(default ../shared/data/nasbench201/nb201_cifar10_unique_zc_flops_params.csv, see SOURCES.md) holds
NASLib's values of epe_nas, fisher, grad_norm, grasp, jacov, l2_norm, nwot, plain, snip, synflow, zen,
flops and params for the 9,445 non-isomorphic NB201 cells, keyed by `net_str` (the arch string). Per
proxy both files have, this reports the Spearman correlation over the cells in both (rows where either
value is not finite are left out and counted). NASLib stores -1e8 for a failed score (NaN/inf: the
all-'none' cell), which is also our NO_SIGNAL, so those cells agree by construction.

Each proxy is seeded on both sides differently (init and batch), so even a perfect reimplementation
correlates below 1: how far below is the proxy's own seed-to-seed spread (a correlation below 0.9 is a bug
until that spread, or a recipe difference, explains it). `--against` measures that spread: the same
correlation between two of our scored tables (the same cells scored with two seeds).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pipeline.errors import DataError, UserError
from pipeline.metrics import kendall_tau, spearman
from pipeline.utils.io import atomic_write_json
from pipeline.utils.paths import REPO_ROOT, repo_relative

DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "data" / "nasbench201" / "nb201_cifar10_unique_zc_flops_params.csv"
KEY_COLUMN = "net_str"
SCORE_PREFIX = "zc_"


def display_path(path: str | Path) -> str:
    """A path as results record it: repo-relative, or ../-relative beside the repo (the shared data), so
    committed reports name no machine; elsewhere unchanged."""
    shown = repo_relative(path)
    resolved = Path(path).resolve()
    if Path(shown).is_absolute() and resolved.is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(resolved, REPO_ROOT)
    return shown


def load_reference(path: str | Path = DEFAULT_REFERENCE, space: Any = None) -> dict[str, dict[str, float]]:
    """{canonical arch string: {proxy: value}} of the reference CSV (numeric columns only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cross-check reference {str(path)!r} does not exist (NAS-Bench-Suite-Zero's NB201 values; "
                        f"see ../shared/data/SOURCES.md)")
    if space is None:
        from pipeline.spaces import get_space
        space = get_space("nb201")
    out: dict[str, dict[str, float]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if KEY_COLUMN not in (reader.fieldnames or []):
            raise DataError(f"{path}: no {KEY_COLUMN!r} column (columns: {', '.join(reader.fieldnames or [])})")
        for line, row in enumerate(reader, start=2):
            key = space.to_str(space.parse(row[KEY_COLUMN]))
            values = {}
            for name, text in row.items():
                if name in (KEY_COLUMN, "net"):
                    continue
                try:
                    values[name] = float(text)
                except (TypeError, ValueError):
                    raise DataError(f"{path}, line {line}: column {name!r} is not a number ({text!r})") from None
            out[key] = values
    return out


def crosscheck(archs: Sequence[str], scores: Mapping[str, np.ndarray],
               reference: Mapping[str, Mapping[str, float]], label: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """Per proxy in both: Spearman (and Kendall) of our scores vs the reference's over the shared cells.

    `archs`: canonical strings, aligned with each `scores[proxy]` array (and `label`, when given: then each
    entry also has the Spearman of ours and of the reference's values with that label, same cells)."""
    proxies_in_ref = set().union(*(v.keys() for v in reference.values())) if reference else set()
    rows = [i for i, a in enumerate(archs) if a in reference]
    out: dict[str, dict[str, Any]] = {}
    for name, values in scores.items():
        if name not in proxies_in_ref:
            continue
        ours = np.asarray([values[i] for i in rows], dtype=np.float64)
        theirs = np.asarray([reference[archs[i]].get(name, math.nan) for i in rows], dtype=np.float64)
        ok = np.isfinite(ours) & np.isfinite(theirs)
        entry: dict[str, Any] = {"n_shared": len(rows), "n": int(ok.sum()), "n_dropped": int((~ok).sum())}
        if label is not None:
            ok &= np.isfinite(y := np.asarray([label[i] for i in rows], dtype=np.float64))
            entry["n"], entry["n_dropped"] = int(ok.sum()), int((~ok).sum())
        if ok.sum() >= 2:
            entry["spearman"] = spearman(ours[ok], theirs[ok])
            entry["kendall"] = kendall_tau(ours[ok], theirs[ok])
            if label is not None:
                entry["ours_vs_label"] = spearman(ours[ok], y[ok])
                entry["reference_vs_label"] = spearman(theirs[ok], y[ok])
        else:
            entry["spearman"] = entry["kendall"] = math.nan
        out[name] = entry
    return out


def scores_of_table(path: str | Path, label: str | None = None) -> tuple[list[str], dict[str, np.ndarray], np.ndarray | None]:
    """(arch strings, {proxy: scores}, the `label` column or None) of a scored table's `zc_<proxy>` columns."""
    from pipeline.data.tables import load_table
    table = load_table(path)
    scores = {n[len(SCORE_PREFIX):]: table.label(n) for n in table.numeric_columns if n.startswith(SCORE_PREFIX)}
    if not scores:
        raise DataError(f"table {path} has no {SCORE_PREFIX}<proxy> columns (score it with `python -m pipeline.zero_cost`)")
    return table.archs, scores, (table.label(label) if label else None)


def reference_of_table(path: str | Path) -> dict[str, dict[str, float]]:
    """A scored table as a reference: {arch: {proxy: score}} (to compare two seeds, two recipes...)."""
    archs, scores, _ = scores_of_table(path)
    return {a: {name: float(v[i]) for name, v in scores.items()} for i, a in enumerate(archs)}


def markdown(result: Mapping[str, Mapping[str, Any]], against: str = "NAS-Bench-Suite-Zero",
             label: str | None = None) -> str:
    extra = f" | ours vs {label} | theirs vs {label}" if label else ""
    lines = [f"| proxy | Spearman vs {against} | Kendall | cells{extra} |", "|---|---|---|---|" + "---|---|" * bool(label)]
    for name, e in sorted(result.items()):
        flag = "" if not (e["spearman"] < 0.9) else " (< 0.9)"
        row = f"| {name} | {e['spearman']:.3f}{flag} | {e['kendall']:.3f} | {e['n']} |"
        if label:
            row += f" {e.get('ours_vs_label', math.nan):.3f} | {e.get('reference_vs_label', math.nan):.3f} |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.zero_cost.crosscheck", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scores", required=True, help="table written by `python -m pipeline.zero_cost`")
    p.add_argument("--reference", default=str(DEFAULT_REFERENCE), help="NAS-Bench-Suite-Zero CSV (net_str + proxies)")
    p.add_argument("--against", default=None, metavar="TABLE",
                   help="compare with another scored table instead of the reference (e.g. another seed)")
    p.add_argument("--label", default=None, metavar="COLUMN",
                   help="also give the Spearman of ours and of the reference's values with this column of the table")
    p.add_argument("--out", default=None, help="also write the result as JSON here")
    args = p.parse_args(argv)
    other = args.against or args.reference
    try:
        archs, scores, label = scores_of_table(args.scores, args.label)
        reference = reference_of_table(args.against) if args.against else load_reference(args.reference)
        result = crosscheck(archs, scores, reference, label)
        if not result:
            raise UserError(f"no proxy of {args.scores} ({', '.join(scores)}) is in {other}")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(result, against=f"`{Path(args.against).name}`" if args.against else "NAS-Bench-Suite-Zero",
                   label=args.label))
    if args.out:
        atomic_write_json(args.out, {"scores": display_path(args.scores), "reference": display_path(other),
                                     "proxies": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
