"""`python -m data_prep.images --source SRC --out DIR [...]`: shard an image source (prints `error: ...`, exit 2, on bad input)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Sequence

from data_prep.images.sources.registry import DETECT_ORDER
from data_prep.images.writer import prepare_images
from pipeline.errors import UserError

_EPILOG = """\
sources (detected from --source, or --kind):
  npz           x_<split> (N,H,W,3) uint8 + y_<split> arrays
  cifar10       cifar-10-batches-py/ (or the folder holding it)     cifar100   cifar-100-python/
  imagenet16    train_data_batch_1..10 + val_data (ImageNet16-120: --dataset ImageNet16-120)
  imagenet-tar  ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, or a folder holding both (+ val labels)
  imagefolder   root/<split>/<class>/*.JPEG, root/<class>/*.JPEG, or a flat root/val/ with --labels
examples:
  python -m data_prep.images --source ~/data/cifar-100-python --out prepared/shards/cifar100
  python -m data_prep.images --source /data/imagenet --out prepared/shards/imagenet1k --dataset imagenet1k \\
      --workers 32 --shard-size 256MB --resize 256 --skip-corrupt
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.images", description="Image sets -> WebDataset shards "
                                "plus a manifest (idempotent, resumable, atomic).", epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="npz file, dataset folder or ImageNet tar")
    p.add_argument("--out", required=True, help="output directory for shards and manifest")
    p.add_argument("--dataset", default=None, help="dataset name in file names (default: from the source)")
    p.add_argument("--shard-size", default="1000",
                   help="samples per shard (1000) or bytes per shard (256MB, 1GiB); default 1000 samples")
    p.add_argument("--min-shards", type=int, default=4,
                   help="at least this many shards per split (>= ranks x loader workers for streaming)")
    p.add_argument("--splits", default=None, help="comma-separated splits (default: all in the source)")
    p.add_argument("--workers", type=int, default=1, help="parallel shard-writing processes")
    p.add_argument("--resize", type=int, default=None, metavar="SHORT_SIDE",
                   help="shrink images whose shorter side is longer and re-encode them as JPEG (default: keep bytes)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality of --resize (default 90)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle across each split (default 0)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the source order (class by class for folders)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="leave out images that do not decode (listed in the manifest under 'skipped') instead of failing")
    p.add_argument("--labels", default=None, help="label file of flat ImageNet val images (devkit, "
                   "LOC_val_solution.csv or 'filename label' lines; default: looked for next to the images)")
    p.add_argument("--kind", default=None, choices=DETECT_ORDER, help="source format (default: detected)")
    p.add_argument("--verify", action="store_true", help="also check shard sha256 before skipping an up-to-date set")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: on a terminal only)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    splits = [s for s in args.splits.split(",") if s] if args.splits else None
    t0 = time.perf_counter()
    try:
        m = prepare_images(args.source, args.out, args.dataset, args.shard_size, args.min_shards, splits,
                           args.verify, workers=args.workers, resize=args.resize, jpeg_quality=args.jpeg_quality,
                           seed=args.seed, shuffle=not args.no_shuffle, skip_corrupt=args.skip_corrupt,
                           labels=args.labels, kind=args.kind, progress=False if args.no_progress else None)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_shards = sum(len(s["shards"]) for s in m["splits"].values())
    what = "up to date, skipped" if m["skipped"] else "wrote"
    counts = ", ".join(f"{k}={v['count']}" for k, v in m["splits"].items())
    print(f"{m['dataset']}: {what} {n_shards} shards ({counts}) in {args.out} [{time.perf_counter() - t0:.1f} s]")
    n_skipped = sum(len(v.get("skipped", [])) for v in m["splits"].values())
    if n_skipped:
        print(f"warning: {n_skipped} corrupt images were left out; the manifest lists them under 'skipped'",
              file=sys.stderr)
    return 0
