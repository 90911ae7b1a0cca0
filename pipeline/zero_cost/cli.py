"""Score a table's architectures with zero-cost proxies; write them as table columns, with rank correlations.

    python -m pipeline.zero_cost --config configs/nb201_cpu.yaml --proxies synflow,nwot,snip \\
        [--sample N] [--seed S] [--label COLUMN ...] [--out TABLE.parquet] [--crosscheck [--reference CSV]] [key=value ...]

Every architecture of the config's table (`data.table`), or a seeded sample of N of them, is scored on
the space's benchmark network with `--batch-size` un-augmented images (x `--batches`; ZiCo needs >= 2)
of the prepared shards (`data.aux_shards`, split `data.aux_split`); network init and batches come from
`--seed`. Writes --out (default runs/zero_cost/<table>-zc-s<seed>[-n<N>].parquet): the scored rows of the
table with one float column `zc_<proxy>` per proxy (replacing any of that name), and beside it <out>.md
and <out>.json: Spearman and Kendall of each proxy against each `--label` column (default data.eval_label
and data.train_label), seconds per architecture per proxy and, with --crosscheck, the Spearman against
NAS-Bench-Suite-Zero's values (pipeline/zero_cost/crosscheck.py). Bad input (an unknown proxy, a label
the table lacks, N larger than the table) is an error before any work: `error: ...`, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline.errors import ConfigError, DataError, UserError
from pipeline.utils.io import atomic_path, atomic_write_json, atomic_write_text
from pipeline.utils.paths import repo_relative
from pipeline.zero_cost import crosscheck as xc
from pipeline.zero_cost.registry import PROXIES, Proxy
from pipeline.zero_cost.report import correlations, markdown
from pipeline.zero_cost.scoring import ScoreResult, resolve_proxies, score_archs

SCORE_PREFIX = xc.SCORE_PREFIX


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline.zero_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/nb201_cpu.yaml", help="run config (data.table, data.aux_shards, labels)")
    p.add_argument("--proxies", required=True,
                   help=f"comma-separated proxy names; registered: {', '.join(PROXIES.names())}")
    p.add_argument("--sample", type=int, default=None, metavar="N", help="score a seeded sample of N architectures")
    p.add_argument("--seed", type=int, default=0, help="seed of the network init and the batches")
    p.add_argument("--sample-seed", type=int, default=None, help="seed of the sample (default: --seed)")
    p.add_argument("--label", nargs="+", action="extend", default=None, metavar="COLUMN",
                   help="label columns to correlate with (default: data.eval_label, data.train_label)")
    p.add_argument("--out", default=None, help="output table (.parquet); the report goes beside it (.md, .json)")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (NAS-Bench-Suite-Zero: 64)")
    p.add_argument("--batches", type=int, default=2, help="batches drawn (the first is the main one; zico uses all)")
    p.add_argument("--split", default=None, help="shard split the batches come from (default: data.aux_split)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--crosscheck", action="store_true",
                   help="also correlate each proxy with NAS-Bench-Suite-Zero's values of the same cells (--reference)")
    p.add_argument("--reference", default=str(xc.DEFAULT_REFERENCE), metavar="CSV",
                   help="the cross-check's reference values (net_str + one column per proxy)")
    p.add_argument("--only-shared", action="store_true",
                   help="with --crosscheck: score (or sample) only the cells the reference has")
    p.add_argument("--unique", action="store_true",
                   help="score one architecture per isomorphism class and give its scores to the others (the "
                        "same network up to the order of its nodes; NB201: 6,466 classes for 15,625 cells)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


@dataclass
class Plan:
    """Everything validated before any scoring starts."""

    cfg: Any
    space: Any
    proxies: list[Proxy]
    rows: np.ndarray               # table rows to score, table order
    arch_strs: list[str]
    archs: list[Any]
    labels: dict[str, np.ndarray]  # label -> values of the scored rows
    out: Path
    reference: dict[str, dict[str, float]] | None
    sampled: bool
    sample_seed: int


def make_plan(args: argparse.Namespace) -> Plan:
    names = [n.strip() for n in args.proxies.split(",") if n.strip()]
    if not names:
        raise ConfigError("--proxies names no proxy; registered: " + ", ".join(PROXIES.names()))
    proxies = resolve_proxies(names)  # ConfigError naming the unknown one and listing the registered ones
    needs_net = any(p.needs_net for p in proxies)
    if args.batch_size < 2:
        raise ConfigError(f"--batch-size must be >= 2 (nwot and jacov compare images), got {args.batch_size}")
    if args.batches < 1 or ("zico" in names and args.batches < 2):
        raise ConfigError(f"--batches must be >= 1, and >= 2 for zico (gradients over batches), got {args.batches}")
    if args.sample is not None and args.sample < 2:
        raise ConfigError(f"--sample must be >= 2 (rank correlations need two architectures), got {args.sample}")
    for label in args.label or []:
        if "=" in label:  # nargs="+" swallowed an override: say so instead of "no such column"
            raise ConfigError(f"--label {label!r} looks like a key=value override; put overrides before --label")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    try:
        torch.device(args.device)
    except RuntimeError as e:
        raise ConfigError(f"--device {args.device!r}: {e}") from None
    from pipeline.config import load_config
    from pipeline.data.loading import ensure_prepared
    from pipeline.data.tables import load_table
    from pipeline.spaces import space_from_config

    cfg = load_config(args.config, args.overrides)
    space = space_from_config(cfg.space)
    ensure_prepared(cfg, space, need_images=needs_net)
    table = load_table(cfg.data.table)
    label_names = list(dict.fromkeys(args.label or [cfg.data.eval_label, cfg.data.train_label]))
    all_labels = {name: table.label(name) for name in label_names}  # DataError naming a missing column
    reference = xc.load_reference(args.reference, space) if args.crosscheck else None
    if args.only_shared and reference is None:
        raise ConfigError("--only-shared needs --crosscheck (the reference whose cells it keeps)")
    pool = np.arange(len(table))
    if args.only_shared:
        pool = np.asarray([i for i, a in enumerate(table.archs) if space.to_str(space.parse(a)) in reference])
    n = len(pool)
    sample_seed = args.seed if args.sample_seed is None else args.sample_seed
    if args.sample is not None and args.sample > n:
        shared = " shared with the cross-check reference" if args.only_shared else ""
        raise DataError(f"--sample {args.sample} but table {cfg.data.table} holds {n} architectures{shared}")
    if args.sample is not None:
        rows = np.sort(pool[np.random.default_rng(sample_seed).choice(n, size=args.sample, replace=False)])
    else:
        rows = pool
    arch_strs = [table.archs[i] for i in rows]
    archs = space.parse_many(arch_strs)
    if args.out is None:
        tag = f"-n{args.sample}" if args.sample is not None else ""
        out = Path("runs/zero_cost") / f"{Path(cfg.data.table).stem}-zc-s{args.seed}{tag}.parquet"
    else:
        out = Path(args.out)
    if out.suffix != ".parquet":
        raise ConfigError(f"--out {str(out)!r} must end in .parquet (the report goes beside it as .md / .json)")
    if out.resolve() == Path(cfg.data.table).resolve():
        raise ConfigError(f"--out {str(out)!r} is the input table; write the scores to a new file")
    return Plan(cfg, space, proxies, rows, arch_strs, archs, {k: v[rows] for k, v in all_labels.items()}, out,
                reference, args.sample is not None, sample_seed)


def write_scored_table(src: str | Path, rows: np.ndarray, scores: dict[str, np.ndarray], out: Path) -> None:
    """The input table's `rows` plus a float64 `zc_<proxy>` column per proxy, metadata kept, written atomically."""
    table = pq.read_table(src).take(pa.array(rows))
    for name, values in scores.items():
        col = SCORE_PREFIX + name
        if col in table.column_names:
            table = table.drop_columns([col])
        table = table.append_column(col, pa.array(values, type=pa.float64()))
    with atomic_path(out, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)


def load_data(plan: Plan, args: argparse.Namespace):
    """The run's batches (None when no proxy needs the network); sets threads and flush-to-zero first."""
    from pipeline.zero_cost.context import load_proxy_data

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer: denormals slow CPU kernels, flushing them costs no rank
    if not any(p.needs_net for p in plan.proxies):
        return None
    cfg = plan.cfg
    return load_proxy_data(cfg.data.aux_shards, args.split or cfg.data.aux_split, cfg.data.aux_dataset,
                           args.batch_size, args.batches, args.seed, args.device)


def run(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    """Score the plan's architectures, then write the table and the report (see `finish`)."""
    data = load_data(plan, args)
    t0 = time.perf_counter()
    if not args.unique:
        result = score_archs(plan.space, plan.archs, [p.name for p in plan.proxies], data, args.seed,
                             progress=not args.no_progress)
        return finish(plan, args, result, data, time.perf_counter() - t0)
    iso = np.asarray([plan.space.isomorphism_class(a) for a in plan.archs], dtype=object)
    _, first, inverse = np.unique(iso, return_index=True, return_inverse=True)
    reps = score_archs(plan.space, [plan.archs[i] for i in first], [p.name for p in plan.proxies], data, args.seed,
                       progress=not args.no_progress)
    # seconds stay per *scored* architecture (what one costs); scores go to every member of its class
    result = ScoreResult({k: np.asarray(v)[inverse] for k, v in reps.scores.items()}, reps.seconds,
                         reps.standalone_seconds,
                         {k: [int(j) for j in np.flatnonzero(np.isin(inverse, pos))] for k, pos in reps.nonfinite.items()})
    return finish(plan, args, result, data, time.perf_counter() - t0)


def finish(plan: Plan, args: argparse.Namespace, result: ScoreResult, data: Any, wall: float) -> dict[str, Any]:
    """Write the scored table (--out) and the report beside it (.json, .md); return the report."""
    cfg = plan.cfg
    write_scored_table(cfg.data.table, plan.rows, result.scores, plan.out)
    corr = correlations(result.scores, plan.labels)
    first_label = next(iter(plan.labels))
    cross = (xc.crosscheck(plan.arch_strs, result.scores, plan.reference, plan.labels[first_label])
             if plan.reference is not None else None)
    shared = {k: v for k, v in result.seconds.items() if k not in result.scores}
    report: dict[str, Any] = {
        "table": repo_relative(cfg.data.table), "out": repo_relative(plan.out), "n": len(plan.archs),
        "sampled": plan.sampled, "sample_seed": plan.sample_seed, "seed": args.seed, "labels": list(plan.labels),
        "batch_size": args.batch_size, "num_batches": args.batches, "shards": repo_relative(cfg.data.aux_shards),
        "split": args.split or cfg.data.aux_split,
        "image_size": int(data.images.shape[-1]) if data is not None else None,
        "device": args.device, "threads": torch.get_num_threads(), "wall_s": wall,
        "seconds_per_arch_total": float(sum(result.seconds.values())), "shared_seconds_per_arch": shared,
        "proxies": {p.name: {"summary": p.summary, "column": SCORE_PREFIX + p.name,
                             "correlations": corr[p.name], "seconds_per_arch": result.seconds[p.name],
                             "standalone_seconds_per_arch": result.standalone_seconds[p.name]}
                    for p in plan.proxies},
        "nonfinite": {k: [plan.arch_strs[i] for i in v] for k, v in result.nonfinite.items()},
    }
    if cross is not None:
        report["crosscheck"] = cross
        report["crosscheck_reference"] = xc.display_path(args.reference)
        report["crosscheck_label"] = first_label  # ours_vs_label / reference_vs_label of each entry
    atomic_write_json(plan.out.with_suffix(".json"), report)
    atomic_write_text(plan.out.with_suffix(".md"), markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    try:
        plan = make_plan(args)
        report = run(plan, args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report), end="")
    print(f"wrote {plan.out} (+ .md, .json)")
    return 0
