"""Image sets -> WebDataset shards plus a manifest (`python -m data_prep.images --help`).

Sources (sources/, one module per format, detected from the path): npz, CIFAR-10/100 python batches,
ImageNet16-120 pickled batches, the official ImageNet-1k train/val tars, ImageFolder trees.

Output, in `out_dir`:
  {dataset}-{split}-{000000}.tar   samples `{split}_{index:07d}` (index: position in the source) with
                                   `.jpg`/`.png` and `.cls` fields, shuffled across shards by `seed`
  {dataset}-manifest.json          written last: classes, settings, per split the counts, bytes, skipped
                                   files, and every shard with its sample count, size and sha256

Modules: plan.py (shuffle, shard sizes), encode.py (decode check / resize), shardio.py (one shard, in
a worker), writer.py (resume, parallel writing, install), cli.py. data_prep/README.md documents the
manifest fields.
"""
from data_prep.images.cli import main
from data_prep.images.plan import parse_shard_size, plan_shards
from data_prep.images.sources import SOURCES, detect_source
from data_prep.images.writer import FORMAT_VERSION, fingerprint, manifest_path, prepare_images

__all__ = ["prepare_images", "detect_source", "plan_shards", "parse_shard_size", "fingerprint", "manifest_path",
           "FORMAT_VERSION", "SOURCES", "main"]
