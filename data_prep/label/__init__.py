"""The label stage, for spaces without a tabular benchmark: sample N architectures, train each one's benchmark
network for a short schedule on image shards, write an arch-accuracy Parquet table in the core schema.

    python -m data_prep.label --space mobilenetv3 --shards prepared/shards/cifar10 --num-archs 64 --epochs 1 \
        --out prepared/tables/mobilenetv3.parquet --image-size 32 --set benchmark_width_mult=0.25 [--workers 2 | --ray]

- job.py: the job (settings, fingerprint), the sample (seeded, one architecture per isomorphism class, in
  draw order: the first N of a larger sample are the same), the per-architecture parts under `<out>.parts/`.
- train.py: training and evaluating one architecture (SGD + cosine, BN statistics recomputed, top-1 %).
- runner.py: in this process, W worker processes, or one Ray task per architecture; resumable per
  architecture, a dead worker loses only its own.
- table.py: parts -> the table (labels `<dataset>_<split>_<E>ep`, params, flops, iso_class), atomically.

Labels from elsewhere (a trained OFA supernet evaluated on your side) need no training: put them in a CSV
or Parquet with an arch column (canonical strings or OFA JSON) and use
`python -m data_prep.tables generic --space mobilenetv3 --input labels.csv --out table.parquet`.
"""
from data_prep.label.cli import main
from data_prep.label.job import LabelJob, make_job, sample_archs

__all__ = ["main", "LabelJob", "make_job", "sample_archs"]
