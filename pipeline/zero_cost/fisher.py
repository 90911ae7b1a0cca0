"""Fisher (Theis et al. 2018; Turner et al. 2020), as a network score in Abdelfattah et al. 2021 / NASLib.

For every conv/linear layer with output activations a (N, C, ...) and their loss gradients g:
    fisher_c = 0.5 * mean_n ( sum_spatial a * g )^2          (one value per output channel)
NASLib then broadcasts each channel's value over that channel's weights (C_in * k * k of them) before
summing the whole array, so
    score = sum over layers of fan_in * sum_c fisher_c,       fan_in = prod(W.shape[1:])
which is reproduced here (the fan_in weight is the reference's, kept so the numbers compare).
L = cross-entropy of the main batch, BN in training mode; a = the layer's output (before BN). The
gradient pass is the shared one (ArchContext.loss_gradients: it keeps sum_spatial a * g per layer).
"""
from __future__ import annotations

import math

from pipeline.zero_cost.context import ArchContext
from pipeline.zero_cost.registry import register


@register("fisher")
def fisher(ctx: ArchContext) -> float:
    """sum over layers of fan_in * sum_c 0.5 mean_n (sum_hw a*g)^2 of conv/linear outputs (NASLib)."""
    lg = ctx.loss_gradients()
    total = 0.0
    for layer, per_sample in zip(lg.layers, lg.channel_act_grad):
        if per_sample is None:
            continue
        channel_fisher = 0.5 * per_sample.pow(2).mean(0)
        total += float(channel_fisher.abs().sum()) * math.prod(layer.weight.shape[1:])
    return total
