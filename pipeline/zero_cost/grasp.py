"""GraSP (Wang et al. 2020) as a network score (Abdelfattah et al. 2021 / NASLib).

score = sum over conv/linear weights of -w * (H g),  g = dL/dw, H the Hessian of L, computed as a
Hessian-vector product: d/dw (g_detached . g). L = cross-entropy of the main batch (temperature 1), BN in
training mode. NASLib's first pass (g) and second pass (the differentiable g) see the same batch and
weights, so one forward serves both. The minus sign is NASLib's ("accuracy seems to be negatively
correlated with this metric, so we add -ve sign").
"""
from __future__ import annotations

import torch

from pipeline.zero_cost.context import ArchContext, cross_entropy, weight_layers
from pipeline.zero_cost.registry import register


@register("grasp")
def grasp(ctx: ArchContext) -> float:
    """sum of -w * Hg over conv/linear weights (Hessian-vector product; NASLib's sign)."""
    net = ctx.net()
    weights = [m.weight for m in weight_layers(net)]
    loss = cross_entropy(net, ctx.data.images, ctx.data.labels)
    grads = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    used = [(w, g) for w, g in zip(weights, grads) if g is not None]
    if not used:
        return 0.0
    z = sum((g.detach() * g).sum() for _, g in used)
    if not z.requires_grad:  # the gradient does not depend on the weights: H g = 0
        return 0.0
    hg = torch.autograd.grad(z, [w for w, _ in used], allow_unused=True)
    return float(sum((-w.detach() * h).sum() for (w, _), h in zip(used, hg) if h is not None))
