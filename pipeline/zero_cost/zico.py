"""ZiCo (Li et al. 2023, SLDGroup/ZiCo `compute_zico.py`).

Per conv/linear layer, the weight gradients g_b of the cross-entropy on B >= 2 batches (BN in training
mode) give, per weight, mean_b |g_b| and std_b g_b (population std); then
    score = sum over layers of log( sum over weights with std > 0 of mean|g| / std )
skipping layers where that sum is 0 (the reference's rule; so a network with no gradient signal scores 0).
Needs two or more batches: the std across batches is the point of the proxy. Batch 0's gradients are
the shared pass (ArchContext.loss_gradients).
"""
from __future__ import annotations

import math

import torch

from pipeline.zero_cost.context import ArchContext, cross_entropy, weight_layers
from pipeline.zero_cost.registry import register


def zico_from_gradients(per_layer: list[torch.Tensor]) -> float:
    """per_layer[l]: (B, P_l) gradients of layer l's weights on B batches."""
    score = 0.0
    for g in per_layer:
        std = g.std(0, unbiased=False)
        mean_abs = g.abs().mean(0)
        nonzero = std != 0
        ratio_sum = float((mean_abs[nonzero] / std[nonzero]).sum())
        if ratio_sum > 0:
            score += math.log(ratio_sum)
    return score


@register("zico")
def zico(ctx: ArchContext) -> float:
    """sum over layers of log sum(mean|g| / std g) of weight gradients over >= 2 batches (ZiCo)."""
    batches = ctx.data.batches
    if len(batches) < 2:
        raise ValueError(f"zico needs gradients over >= 2 batches, got {len(batches)}")
    net = ctx.net()
    weights = [m.weight for m in weight_layers(net)]
    grads: list[list[torch.Tensor]] = [[] for _ in weights]
    for b, (x, y) in enumerate(batches):
        # batch 0 is the main batch: its gradients are the shared pass (same weights, same BN mode)
        gs = ctx.loss_gradients().weight_grads if b == 0 else \
            torch.autograd.grad(cross_entropy(net, x, y), weights, allow_unused=True)
        for k, (w, g) in enumerate(zip(weights, gs)):
            grads[k].append((torch.zeros_like(w) if g is None else g).detach().flatten().double())
    return zico_from_gradients([torch.stack(g) for g in grads])
