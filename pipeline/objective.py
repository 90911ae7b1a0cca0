"""The training objective as one module: model + task weighting -> the loss of a micro-batch.

One `nn.Module` whose forward returns the loss, so DDP and DeepSpeed can wrap it unchanged (their
gradient hooks need the forward to go through the wrapper).

Each architecture in the micro-batch is one of the paper's steps: its own (arch, accuracy) pair and
its own batch of aux images, its own task losses and its own weighted total. The mean of the totals is
what accumulating those single-arch steps gives, so batching changes speed, not the gradient.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch
from torch import nn

from pipeline.data.graphs import GraphBatch
from pipeline.loss import Weighting
from pipeline.models.predictor import HyperNASModel


@dataclass
class MicroBatch:
    graphs: GraphBatch
    archs: Sequence[Hashable]
    targets: torch.Tensor | None   # (B,) standardised accuracies (pred task)
    images: torch.Tensor | None    # (B, n, C, H, W) aux images (hyper task)
    labels: torch.Tensor | None    # (B, n)


class Objective(nn.Module):
    def __init__(self, model: HyperNASModel, weighting: Weighting):
        super().__init__()
        self.model = model
        self.weighting = weighting

    def forward(self, mb: MicroBatch) -> tuple[torch.Tensor, dict[str, float]]:
        variant = self.model.variant
        h, nodes = self.model.encode(mb.graphs)
        losses: dict[str, torch.Tensor] = {}
        stats: dict[str, float] = {}
        if variant.predict:
            pred = self.model.regressor(h)
            losses["pred"] = (pred - mb.targets) ** 2          # (B,) one MSE term per architecture
        if variant.hyper:
            ce, acc = self.model.hyper_losses(mb.archs, nodes, mb.images, mb.labels)
            losses["hyper"] = ce
            stats["aux_acc"] = float(acc.mean())
        total, info = self.weighting(losses)
        stats.update(info)
        return total.mean(), stats
