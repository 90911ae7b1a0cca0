"""The training objective as one module: model + task weighting -> the loss of a micro-batch.

One `nn.Module` whose forward returns the loss, so DDP and DeepSpeed can wrap it unchanged (their
gradient hooks need the forward to go through the wrapper).

Each architecture in the micro-batch is one of the paper's steps: its own (arch, accuracy) pair and its
own batch of aux images, hence its own task losses. The weighting combines each task's loss over the
*update* (pipeline/loss.py), which is linear in the per-architecture losses; together with
per-architecture dropout streams and aux batches this makes the gradient of an update independent of how
it is cut into micro-batches and ranks.

The ranking term of L_pred compares an architecture with the other architectures of its update, so when
it is on, a micro-batch carries the graphs of the whole update (`graphs`, `targets`, `features`, `drop_seeds`
have one row per architecture of the update) and `own` marks the rows whose losses this micro-batch
contributes. The GCN is cheap beside the target networks, so encoding the update on every rank costs little.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data.graphs import GraphBatch
from pipeline.loss import Weighting
from pipeline.models.predictor import HyperNASModel


@dataclass
class MicroBatch:
    graphs: GraphBatch                 # (R, S, ...) graphs of the R encoded architectures
    archs: Sequence[Hashable]          # the architectures of the hyper task, one per `hyper_rows` entry
    targets: torch.Tensor | None       # (R,) standardised accuracies (pred task; unused for unlabelled rows)
    images: torch.Tensor | None        # (H, n, C, H, W) aux images, one batch per hyper row
    labels: torch.Tensor | None        # (H, n)
    own: torch.Tensor | None = None    # (B,) rows of `graphs` whose losses count; None = all R rows
    features: torch.Tensor | None = None   # (R, F) raw feature vectors
    drop_seeds: torch.Tensor | None = None  # (R,) per-architecture dropout seeds
    hyper_rows: torch.Tensor | None = None  # (H,) rows of `graphs` in the hyper task; None = `own`
    hyper_step: torch.Tensor | None = None  # (H,) which own architecture-step (0..B-1) each hyper row belongs to
    labelled: int | None = None        # rows [0, labelled) are labelled; later rows only serve the hyper task


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """(B,): for each own row i, mean over the other rows j of log(1 + exp(-s_ij (p_i - p_j))),
    s_ij = sign(y_i - y_j) (pairs with equal labels count as 0). Normalised by R - 1, not by the number
    of informative pairs, so the sum over an update does not depend on how it is split."""
    R = pred.shape[0]
    if R < 2:
        return pred[own] * 0.0
    diff = pred[own, None] - pred[None, :]                  # (B, R)
    sign = torch.sign(target[own, None] - target[None, :])
    return (F.softplus(-sign * diff) * (sign != 0)).sum(1) / (R - 1)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by `scale`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ARG004
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """`x` whose gradient is multiplied by `scale` on the way back (1: untouched; 0: detached)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGrad.apply(x, scale)


class Objective(nn.Module):
    def __init__(self, model: HyperNASModel, weighting: Weighting, mse_weight: float = 1.0,
                 rank_weight: float = 0.0, encoder_grad: float = 1.0):
        super().__init__()
        self.model = model
        self.weighting = weighting
        self.mse_weight = mse_weight
        self.rank_weight = rank_weight
        self.encoder_grad = encoder_grad  # scale of the hyper task's gradient into the shared GCN

    @property
    def uses_update_context(self) -> bool:
        """Whether a micro-batch needs the graphs of its whole update (the ranking term)."""
        return self.model.variant.predict and self.rank_weight > 0

    def chance_losses(self) -> dict[str, float]:
        """Each task's loss at chance level: the weighting's first anchors (before any update)."""
        out = {}
        if self.model.variant.predict:  # untrained predictions ~ 0 on standardised targets: MSE ~ 1
            out["pred"] = self.mse_weight * 1.0 + self.rank_weight * math.log(2.0)
        if self.model.variant.hyper:
            out["hyper"] = math.log(max(self.model.num_classes, 2))
        return out

    def forward(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        variant = self.model.variant
        h, nodes = self.model.encode(mb.graphs, mb.drop_seeds)
        own = mb.own if mb.own is not None else torch.arange(h.shape[0], device=h.device)
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, float] = {}
        if variant.predict:
            pred = self.model.regress(h, mb.features)
            loss = 0.0
            if self.mse_weight:
                loss = self.mse_weight * (pred[own] - mb.targets[own]) ** 2   # (B,) one term per architecture
            if self.rank_weight:  # compared with the labelled rows of the update only
                n = mb.labelled if mb.labelled is not None else pred.shape[0]
                loss = loss + self.rank_weight * pairwise_rank_loss(pred[:n], mb.targets[:n], own)
            losses["pred"] = loss
        if variant.hyper:
            rows = mb.hyper_rows if mb.hyper_rows is not None else own
            ce, acc = self.model.hyper_losses(mb.archs, scale_grad(nodes[rows], self.encoder_grad), mb.images,
                                              mb.labels)
            if mb.hyper_step is not None:  # an architecture-step's hyper loss: mean over its own + unlabelled rows
                step = mb.hyper_step.to(ce.device)
                count = torch.zeros(len(own), dtype=ce.dtype, device=ce.device).index_add_(0, step, torch.ones_like(ce))
                ce = torch.zeros_like(count).index_add_(0, step, ce) / count
            losses["hyper"] = ce
            stats["aux_acc"] = float(acc.mean())
        total, info = self.weighting(losses)
        stats.update(info)
        return total.mean(), stats
