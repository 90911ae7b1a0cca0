"""`python -m data_prep.label`: label sampled architectures of a space by training them (see __init__.py).

Exit status 0: the table is written; 1: some architectures failed (each named; the others are recorded and
a re-run of the same command retries only the missing ones; no table is written); 2: bad input (`error:`
naming it), nothing written.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from data_prep.label.job import make_job, parts_dir, read_part, sample_archs
from data_prep.label.table import write_label_table
from pipeline.errors import ConfigError, UserError
from pipeline.spaces import SearchSpace
from pipeline.spaces.__main__ import parse_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.label",
                                description="Sample architectures of a space, train each one's benchmark network "
                                            "briefly on image shards, write an arch-accuracy Parquet table.")
    p.add_argument("--space", required=True, help="search space (pipeline.spaces registry)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a space setting (repeatable)")
    p.add_argument("--shards", required=True, help="directory of WebDataset shards + manifest (data_prep.images)")
    p.add_argument("--dataset", default=None, help="dataset name of the shards (default: the only manifest's)")
    p.add_argument("--num-archs", type=int, required=True, help="architectures to sample (one per isomorphism class)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample, the image subsets and the training")
    p.add_argument("--epochs", type=int, required=True, help="training epochs per architecture")
    p.add_argument("--out", required=True, help="the Parquet table to write (parts go to OUT.parts/)")
    p.add_argument("--image-size", type=int, default=None, help="side of the training / evaluation images "
                                                                "(default: the shards' own; 224 when they vary)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--eval-split", action="append", default=None, dest="eval_splits",
                   help="split to evaluate on (repeatable; default: val, else test, else another split)")
    p.add_argument("--holdout", type=int, default=0, help="train-split images held out as a 'val' split")
    p.add_argument("--train-images", type=int, default=0, help="train on this many images (0: all)")
    p.add_argument("--eval-images", type=int, default=0, help="evaluate on this many images per split (0: all)")
    p.add_argument("--bn-images", type=int, default=500, help="train images that recompute BN statistics")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="peak SGD learning rate (cosine to 0)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=4e-5)
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--loader", default="auto", help="auto | memory | stream (auto: memory when it fits --memory-mb)")
    p.add_argument("--memory-mb", type=float, default=2048.0)
    run = p.add_mutually_exclusive_group()
    run.add_argument("--workers", type=int, default=1, help="worker processes (1: label in this process)")
    run.add_argument("--ray", action="store_true", help="one Ray task per architecture")
    p.add_argument("--address", default=None, help="with --ray: a Ray cluster (host:port | auto); default a "
                                                   "local loopback-only Ray")
    p.add_argument("--ray-cpus", type=int, default=None, help="with --ray and no --address: CPUs of the local Ray")
    return p


def _check_benchmark_net(space: SearchSpace) -> None:
    if type(space).build_benchmark_net is SearchSpace.build_benchmark_net:
        raise ConfigError(f"space {space.name!r} has no benchmark network to train (build_benchmark_net)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.address and not args.ray:
        raise ConfigError("--address needs --ray")
    options = dict(seed=args.seed, train_split=args.train_split, holdout=args.holdout, image_size=args.image_size,
                   batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                   train_images=args.train_images, eval_images=args.eval_images, bn_images=args.bn_images,
                   threads=args.threads, loader=args.loader, memory_mb=args.memory_mb)
    job = make_job(args.space, parse_settings(args.set), args.shards, args.dataset, args.epochs,
                   args.eval_splits, **options)
    space = job.make_space()
    _check_benchmark_net(space)
    archs = sample_archs(space, args.num_archs, args.seed)
    parts = parts_dir(args.out)
    recorded = {a: p for a in archs if (p := read_part(parts, job, a)) is not None}
    pending = [a for a in archs if a not in recorded]
    parts.mkdir(parents=True, exist_ok=True)
    print(f"{len(archs)} architectures of {space.name}: {len(recorded)} already labelled, {len(pending)} to label "
          f"({'ray' if args.ray else f'{args.workers} worker(s)'}; labels {', '.join(job.label_columns)})",
          file=sys.stderr, flush=True)
    failed: dict[str, str] = {}
    count = [len(recorded)]

    def report(arch: str, result: dict | None, error: str | None) -> None:
        count[0] += 1
        if error is not None:
            failed[arch] = error
            print(f"[{count[0]}/{len(archs)}] {arch}: FAILED: {error}", file=sys.stderr, flush=True)
            return
        labels = " ".join(f"{k}={v:.2f}" for k, v in (result or {}).get("labels", {}).items())
        print(f"[{count[0]}/{len(archs)}] {arch}: {labels or 'recorded'} ({(result or {}).get('seconds', 0):.1f} s)",
              file=sys.stderr, flush=True)

    if pending:
        from data_prep.label import runner
        try:
            if args.ray:
                runner.run_ray(job, parts, pending, args.address, args.ray_cpus, report)
            elif args.workers > 1:
                runner.run_processes(job, parts, pending, args.workers, report)
            else:
                runner.run_inline(job, parts, pending, report)
        except UserError:
            if not any(parts.iterdir()):
                parts.rmdir()  # nothing recorded: leave nothing behind
            raise
    results = {a: p for a in archs if (p := read_part(parts, job, a)) is not None}
    missing = [a for a in archs if a not in results]
    if missing:
        for arch in missing:
            print(f"not labelled: {arch}: {failed.get(arch, 'no part recorded')}", file=sys.stderr)
        print(f"error: {len(missing)} of {len(archs)} architectures are not labelled; the other {len(results)} are "
              f"recorded in {parts}; re-run the same command to retry the missing ones", file=sys.stderr)
        return 1
    out = write_label_table(job, space, archs, results, args.out)
    print(f"wrote {out}: {len(archs)} rows, labels {', '.join(job.label_columns)} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
