"""Label one architecture: train its benchmark network (`space.build_benchmark_net`) for the job's short
schedule on the train split, recompute its BN statistics, and measure top-1 accuracy (percent) on each
evaluated split.

Recipe: SGD with Nesterov momentum, cosine learning rate per step to 0, weight decay on conv / linear
weights only, cross-entropy; random crop + flip of the in-memory images (`AuxBatches`, whose batch of a step
depends only on (seed, step): a relabelled architecture gets the same label), or timm's training transform
for streamed sets (`StreamingAux`). Before evaluating, BN running statistics are recomputed on `bn_images`
training images (OFA evaluates its subnets the same way): after a few hundred steps the running averages
still remember their initial values. Every architecture sees the same images: the subsets (holdout, train /
eval limits) come from the job seed, not the architecture's.

Images are loaded once per worker process and kept (`_data`), so a worker labels many architectures
without re-reading the shards.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data_prep.label.job import LabelJob, arch_seed
from pipeline.data.images import AuxBatches, load_split, stream_split
from pipeline.data.manifest import read_manifest
from pipeline.data.streaming import IMAGENET_MEAN, IMAGENET_STD, StreamingAux

EVAL_BATCH = 256
CHANNELS_LAST = torch.channels_last


@dataclass
class LabelData:
    train: Any                      # AuxBatches | StreamingAux: .batch(step, n, seed)
    train_count: int
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (normalised images, labels)


_CACHE: dict[str, LabelData] = {}


def _normalise(images: torch.Tensor, size: int | None, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = images.float().div_(255)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="area" if size < x.shape[-1] else "bilinear")
    return (x - mean[None, :, None, None]) / std[None, :, None, None]


def _subset(n: int, seed: int, skip: int, take: int) -> np.ndarray:
    """Rows [skip, skip + take) of a seeded permutation of range(n) (take 0: all the rest)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[skip:skip + take] if take else perm[skip:])


def _memory_data(job: LabelJob, manifest: dict) -> LabelData:
    varying = manifest["image_shape"] is None
    load_size = job.image_size if varying else None  # resized once while loading when sizes vary
    x, y = load_split(job.shards, job.train_split, job.dataset, image_size=load_size)
    held = _subset(len(y), job.seed, 0, job.holdout) if job.holdout else None
    rows = _subset(len(y), job.seed, job.holdout, job.train_images)
    train = AuxBatches(x[rows], y[rows], augment=True, resize=job.image_size, num_classes=job.num_classes)
    evals = {}
    if held is not None:
        evals["val"] = (_normalise(x[held], job.image_size, train.mean, train.std), y[held])
    for split in job.eval_splits:
        ex, ey = load_split(job.shards, split, job.dataset, image_size=load_size)
        keep = _subset(len(ey), job.seed + 1, 0, job.eval_images)
        evals[split] = (_normalise(ex[keep], job.image_size, train.mean, train.std), ey[keep])
    return LabelData(train, len(rows), evals)


def _stream_data(job: LabelJob, manifest: dict) -> LabelData:
    size = job.image_size or 224
    train = StreamingAux(job.shards, job.train_split, job.dataset, image_size=size, augment=True, seed=job.seed,
                         rank=0, world=1, num_workers=0)
    count = job.train_images or manifest["splits"][job.train_split]["count"]
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)  # what timm's transform normalises with
    evals = {}
    for split in job.eval_splits:
        xs, ys, n = [], [], 0
        for bx, by in stream_split(job.shards, split, EVAL_BATCH, job.seed, 0, job.dataset, image_size=size,
                                   shuffle=False):
            xs.append(_normalise(bx, None, mean, std))
            ys.append(by)
            n += len(by)
            if job.eval_images and n >= job.eval_images:
                break
        x, y = torch.cat(xs), torch.cat(ys)
        limit = job.eval_images or len(y)
        evals[split] = (x[:limit], y[:limit])
    return LabelData(train, count, evals)


def _data(job: LabelJob) -> LabelData:
    key = repr(sorted(job.fingerprint().items())) + job.shards  # the fingerprint holds the loader
    if key not in _CACHE:
        manifest = read_manifest(job.shards, job.dataset)
        _CACHE.clear()  # one job per process at a time
        _CACHE[key] = _memory_data(job, manifest) if job.loader == "memory" else _stream_data(job, manifest)
    return _CACHE[key]


def _optimizer(net: nn.Module, job: LabelJob) -> torch.optim.Optimizer:
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]  # BN affine, biases
    return torch.optim.SGD([{"params": decay, "weight_decay": job.weight_decay}, {"params": rest, "weight_decay": 0}],
                           lr=job.lr, momentum=job.momentum, nesterov=job.momentum > 0)


@torch.no_grad()
def recompute_bn_stats(net: nn.Module, data: LabelData, job: LabelJob, seed: int) -> None:
    """Running BN statistics = the plain average over `bn_images` training images (momentum None)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or not job.bn_images:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    net.train()
    n = min(job.bn_images, data.train_count)
    for i, start in enumerate(range(0, n, job.batch_size)):
        x, _ = data.train.batch(10**9 + i, min(job.batch_size, n - start), seed)
        net(x.contiguous(memory_format=CHANNELS_LAST))
    for m, momentum in zip(bns, saved):
        m.momentum = momentum


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    net.eval()
    correct = 0
    for i in range(0, len(labels), EVAL_BATCH):
        x = images[i:i + EVAL_BATCH].contiguous(memory_format=CHANNELS_LAST)
        correct += int((net(x).argmax(1) == labels[i:i + EVAL_BATCH]).sum())
    return 100.0 * correct / len(labels)


def label_one(job: LabelJob, arch: str) -> dict[str, Any]:
    """Train and evaluate one architecture; {"labels": {column: accuracy %}, "train_loss", "seconds", ...}."""
    start = time.perf_counter()
    torch.set_num_threads(job.threads)
    data = _data(job)
    space = job.make_space()
    seed = arch_seed(job.seed, arch)
    torch.manual_seed(seed)
    # channels-last: oneDNN's depthwise convolutions are ~4x faster in it on a CPU than in NCHW
    net = space.build_benchmark_net(space.parse(arch), job.num_classes).to(memory_format=CHANNELS_LAST)
    opt = _optimizer(net, job)
    steps_per_epoch = max(1, math.ceil(data.train_count / job.batch_size))
    total = job.epochs * steps_per_epoch
    net.train()
    losses = []
    for step in range(total):
        for group in opt.param_groups:  # cosine to 0 over the whole schedule
            group["lr"] = 0.5 * job.lr * (1 + math.cos(math.pi * step / total))
        x, y = data.train.batch(step, job.batch_size, seed)
        loss = F.cross_entropy(net(x.contiguous(memory_format=CHANNELS_LAST)), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{arch}: training loss is {loss.item()} at step {step} (lower --lr)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    recompute_bn_stats(net, data, job, seed)
    labels = {job.label_names[s]: accuracy(net, *data.evals[s]) for s in job.splits}
    last = losses[-steps_per_epoch:]
    return {"labels": labels, "train_loss": float(np.mean(last)), "steps": total,
            "train_images": data.train_count, "eval_images": {s: int(len(data.evals[s][1])) for s in job.splits},
            "seconds": round(time.perf_counter() - start, 3)}
